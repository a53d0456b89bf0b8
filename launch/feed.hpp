/// @file
/// Where the Trainer's batches come from: the in-memory synthetic set, or HDF5 files
/// through the sampler and the prefetching loader. Also the task (classification or
/// regression), its loss and its metrics.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "launch/runtime.hpp"
#include "launch/train_config.hpp"

namespace hpcml::launch {

/// One rank's training batches and validation share.
class Feed {
 public:
  virtual ~Feed() = default;
  virtual int64_t steps_per_epoch() const = 0;
  /// Inputs and targets of step `step` (within `epoch`) for this rank.
  virtual std::pair<at::Tensor, at::Tensor> batch(int64_t epoch, int64_t step) = 0;
  /// Calls `fn` on this rank's share of the validation set, every sample once over
  /// all ranks, in batches. No collectives inside.
  virtual void for_each_validation(const std::function<void(const at::Tensor&, const at::Tensor&)>& fn) = 0;
  /// Validation samples over all ranks (0: none).
  virtual int64_t validation_size() const = 0;
  /// Elements of one input sample (the MLP's width) and the input's per-sample shape.
  virtual std::vector<int64_t> input_shape() const = 0;
  /// True when the target is floating-point.
  virtual bool regression() const = 0;
};

/// The feed `c.data` describes (collective: opening files checks them on every rank).
std::unique_ptr<Feed> make_feed(const TrainConfig& c, const Context& ctx);

/// The loss named by train.loss (auto: cross-entropy or MSE by task).
at::Tensor task_loss(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target);

/// Per-batch sums for the task's metric: classification: correct predictions;
/// regression: sum of ((prediction - target) / target)^2 (resolution = sqrt(mean)).
double metric_sum(bool regression, const at::Tensor& output, const at::Tensor& target);

/// "accuracy" or "resolution"; `sum / samples` turned into the metric.
const char* metric_name(bool regression);
double metric_value(bool regression, double sum, double samples);

}  // namespace hpcml::launch
