/// @file
/// Dynamic loss scaling for fp16 training (`train.precision: fp16`), with the rule of
/// torch.amp.GradScaler: the loss is multiplied by a scale before backward, so that small
/// gradients do not flush to zero in fp16; the averaged gradients are divided by it before
/// the optimizer step; a step whose gradients hold an Inf or a NaN is skipped and the scale
/// multiplied by the backoff factor; after `growth_interval` clean steps in a row it is
/// multiplied by the growth factor (unless that overflows float32). The scale, the count of
/// clean steps and of skipped ones are part of a checkpoint (checkpoint.hpp), so a resumed run continues exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace hpcml::launch {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16, torch's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {});

  double scale() const { return scale_; }
  /// Clean steps in a row since the scale last changed.
  int64_t growth_tracker() const { return tracker_; }
  /// Steps skipped for non-finite gradients in the whole run (checkpointed).
  int64_t skipped() const { return skipped_; }

  /// loss * scale.
  at::Tensor scale_loss(const at::Tensor& loss) const;
  /// Divides every defined gradient of `params` by the scale, in place. Returns whether
  /// every value of them is finite (one check over all, one host sync).
  bool unscale(const std::vector<at::Tensor>& params) const;
  /// Records the step's outcome, which must be the same on every rank (the caller agrees
  /// on `found_inf` first): returns whether the optimizer step runs (no Inf/NaN found).
  bool update(bool found_inf);
  /// The state of a checkpoint; throws std::invalid_argument for a scale that is not a
  /// positive finite number or a negative count.
  void restore(double scale, int64_t growth_tracker, int64_t skipped);

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t tracker_ = 0;
  int64_t skipped_ = 0;
};

}  // namespace hpcml::launch
