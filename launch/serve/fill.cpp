// The batch sizes that fill a model's device (see fill.hpp).
#include "launch/serve/fill.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>

#include "collectives/device.hpp"

namespace hpcml::launch::serve {

std::vector<int> filling_sizes(const std::vector<BatchPoint>& curve, double fraction) {
  double best = 0;
  for (const auto& p : curve) best = std::max(best, p.rows_per_s);
  std::vector<BatchPoint> sorted = curve;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.rows < b.rows; });
  std::vector<int> out;
  for (const auto& p : sorted) {
    if (!out.empty() || (best > 0 && p.rows_per_s >= fraction * best)) out.push_back(static_cast<int>(p.rows));
  }
  return out;
}

namespace {

// A batch of `rows` rows of the entry's inputs, as a request carries them.
NamedInputs synthetic_inputs(const ModelEntry& entry, std::int64_t rows, std::int64_t ragged_items) {
  NamedInputs out;
  for (const auto& s : entry.inputs) {
    std::vector<std::int64_t> shape{s.ragged ? rows * ragged_items : rows};
    for (std::int64_t d : s.shape) shape.push_back(d < 0 ? 1 : d);
    Input in;
    const auto type = to_scalar_type(s.dtype);
    in.values = at::isFloatingType(type) ? at::rand(shape, at::TensorOptions().dtype(type))
                                         : at::zeros(shape, at::TensorOptions().dtype(type));
    if (s.ragged) in.offsets = at::arange(0, rows * ragged_items + 1, ragged_items, at::kLong);
    out.emplace(s.name, std::move(in));
  }
  return out;
}

}  // namespace

std::vector<BatchPoint> measure_batch_curve(models::Model& model, const ModelEntry& entry, const c10::Device& device,
                                            double budget_s, std::int64_t ragged_items) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::int64_t> sizes;
  const std::int64_t max = entry.config.max_batch_size;
  for (std::int64_t b = 1; b < max; b *= 2) sizes.push_back(b);
  sizes.push_back(max);
  at::NoGradGuard no_grad;
  model.set_training(false);
  const double per_size = budget_s / static_cast<double>(sizes.size());
  std::vector<BatchPoint> curve;
  for (std::int64_t rows : sizes) {
    const NamedInputs request = synthetic_inputs(entry, rows, ragged_items);
    models::Inputs inputs = assemble_batch(entry, {&request});
    for (auto& [name, t] : inputs) t = collectives::to_device(t, device);
    (void)model.forward(inputs).cpu();  // warm-up (and the allocator's first blocks)
    int runs = 0;
    const auto start = Clock::now();
    double seconds = 0;
    while (runs < 3 || seconds < per_size) {
      (void)model.forward(inputs).cpu();
      ++runs;
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    }
    curve.push_back({rows, static_cast<double>(rows) * runs / seconds});
  }
  return curve;
}

bool measures_batch_sizes(const ModelConfig& config, const c10::Device& device) {
  if (!config.preferred_batch_sizes.empty() || !config.dynamic_batching) return false;
  return config.measure_batch_sizes == "yes" || (config.measure_batch_sizes == "auto" && device.is_cuda());
}

}  // namespace hpcml::launch::serve
