// Dynamic loss scaling for fp16 training (see grad_scaler.hpp).
#include "launch/train/grad_scaler.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace hpcml::launch {

GradScaler::GradScaler(GradScalerOptions options) : options_(options), scale_(options.init_scale) {}

at::Tensor GradScaler::scale_loss(const at::Tensor& loss) const { return loss * scale_; }

bool GradScaler::unscale(const std::vector<at::Tensor>& params) const {
  const double inverse = 1.0 / scale_;  // a power of two: the division is exact
  at::Tensor bad;
  for (const auto& p : params) {
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    g.mul_(inverse);
    const at::Tensor here = at::logical_not(at::isfinite(g)).any();
    bad = bad.defined() ? at::logical_or(bad, here) : here;
  }
  return !bad.defined() || !bad.item<bool>();
}

bool GradScaler::update(bool found_inf) {
  if (found_inf) {
    scale_ *= options_.backoff_factor;
    tracker_ = 0;
    ++skipped_;
    return false;
  }
  if (++tracker_ == options_.growth_interval) {
    // As torch: a scale that would overflow float32 stays where it is.
    const double grown = scale_ * options_.growth_factor;
    if (std::isfinite(static_cast<float>(grown))) scale_ = grown;
    tracker_ = 0;
  }
  return true;
}

void GradScaler::restore(double scale, int64_t growth_tracker, int64_t skipped) {
  if (!(std::isfinite(scale) && scale > 0) || growth_tracker < 0 || skipped < 0) {
    throw std::invalid_argument("grad scaler state: expected a positive finite scale and counts >= 0, found " +
                                std::to_string(scale) + ", " + std::to_string(growth_tracker) + ", " +
                                std::to_string(skipped));
  }
  scale_ = scale;
  tracker_ = growth_tracker;
  skipped_ = skipped;
}

}  // namespace hpcml::launch
