/// @file
/// Where the Trainer's batches come from: the in-memory synthetic set, or HDF5 files
/// through the sampler and the prefetching loader. Also the task (classification or
/// regression), its loss and its metrics.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

/// One batch: the model's named inputs and the target (batch, ...).
struct Example {
  models::Inputs inputs;
  at::Tensor target;
  /// Rows [begin, begin + size) of every tensor (a micro-batch).
  Example narrow(int64_t begin, int64_t size) const;
  /// Every tensor on `device` (to a GPU through pinned memory, asynchronously on the
  /// current stream); this example itself when it is there already.
  Example to_device(const c10::Device& device) const;
};

/// One rank's training batches and validation share.
class Feed {
 public:
  virtual ~Feed() = default;
  virtual int64_t steps_per_epoch() const = 0;
  /// Inputs and targets of step `step` (within `epoch`) for this rank.
  virtual Example batch(int64_t epoch, int64_t step) = 0;
  /// Calls `fn` on this rank's share of the validation set, every sample once over
  /// all ranks, in batches. No collectives inside.
  virtual void for_each_validation(const std::function<void(const Example&)>& fn) = 0;
  /// Validation samples over all ranks (0: none).
  virtual int64_t validation_size() const = 0;
  /// Per-sample shape of the input "x" of a one-input model (the MLP's width).
  virtual std::vector<int64_t> input_shape() const = 0;
  /// True when the target is floating-point.
  virtual bool regression() const = 0;
  /// Checks, before any batch is read, that each input of `specs` (a zoo model's)
  /// has the per-sample shape the model reads. Throws ConfigError naming the key when
  /// the config chose the dataset field, IoError naming the file and dataset when the
  /// model's default field has another shape; both with expected and found shapes.
  virtual void check_inputs(const std::string& model, const std::vector<models::InputSpec>& specs) const {
    (void)model;
    (void)specs;
  }
};

/// The training batches on a rank's device, by global step (epoch = step / steps per
/// epoch). On a GPU, taking the batch of step s reads the batch of s + 1 and starts its
/// copy on a stream of its own (collectives::AsyncCopy), so that copy overlaps step s's
/// compute; the feed is still read in step order. On the CPU: the feed's batch.
class DeviceBatches {
 public:
  DeviceBatches(Feed& feed, const c10::Device& device, int64_t total_steps);
  Example batch(int64_t step);

 private:
  Example start_copy(int64_t step);
  Feed& feed_;
  const c10::Device device_;
  const int64_t total_steps_, steps_per_epoch_;
  collectives::AsyncCopy copy_;
  Example next_;  // on the device, its copy in flight, for step next_step_
  int64_t next_step_ = -1;
};

/// Rows of one HDF5 file as a model's inputs, for inference over files the model was
/// not trained on (`hpcml infer` campaigns): the fields of c.data.inputs (resolved,
/// see with_input_fields), collated as in training, plus `extra` fields read as they are.
/// Opening checks the file; errors are IoError naming the file and dataset.
class RowReader {
 public:
  RowReader(const TrainConfig& c, const std::string& file, std::vector<std::string> extra);
  ~RowReader();
  int64_t rows() const;
  /// Rows per HDF5 chunk of the first input (of its offsets for a ragged one); 0 when contiguous.
  int64_t chunk_rows() const;
  /// Inputs of rows [first, first + count); `extra` fields into `extra_out`.
  Example read(int64_t first, int64_t count, std::map<std::string, at::Tensor>* extra_out) const;
  /// Whether the file has the (fixed) field `name`.
  bool has_field(const std::string& name) const;
  /// The dims of the (fixed) field `name`, rows first; IoError naming the file when absent.
  std::vector<int64_t> field_dims(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// `c` with data.inputs mapping each of the model's `input_names` to a dataset field:
/// data.inputs.<name> when given, else data.input for a one-input model, else the
/// zoo model's default field. Throws ConfigError for an input without a field and
/// for a data.inputs key the model does not have.
TrainConfig with_input_fields(TrainConfig c, const std::vector<std::string>& input_names);

/// True when model.name is a zoo density model (task "density", e.g. nsf-gw): its
/// output is log q(target-like inputs | context) and its loss is -mean(output).
bool density_task(const TrainConfig& c);

/// The feed `c.data` describes (collective: opening files checks them on every rank).
/// With HDF5 data, `c.data.inputs` must be resolved (with_input_fields).
std::unique_ptr<Feed> make_feed(const TrainConfig& c, const Context& ctx);

/// The loss named by train.loss (auto: cross-entropy or MSE by task; nll: -mean(output),
/// the output being a density model's log-density).
at::Tensor task_loss(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target);

/// Per-batch sums for the task's metric: classification: correct predictions;
/// regression: sum of ((prediction - target) / target)^2 (resolution = sqrt(mean)).
double metric_sum(bool regression, const at::Tensor& output, const at::Tensor& target);

/// "accuracy" or "resolution"; `sum / samples` turned into the metric.
const char* metric_name(bool regression);
double metric_value(bool regression, double sum, double samples);

/// A validation or evaluation set's metrics, accumulated batch by batch and summed
/// across ranks as one tensor: loss, accuracy or resolution; for a binary classifier
/// also ROC AUC and background rejection 1/eps_B at signal efficiency 30% (class 1 is
/// the signal). The ROC comes from histograms of the logit difference s (50,000 bins
/// uniform in asinh(1000 s) over [-12, 12], i.e. |s| up to 81), so the result does
/// not depend on the number of ranks.
class Scores {
 public:
  /// `density`: the output is a log-density; the metric is "log_prob" (mean output).
  Scores(bool regression, bool binary, bool density = false);
  /// One batch: model outputs, targets, and the batch's mean loss.
  void add(const at::Tensor& output, const at::Tensor& target, double mean_loss);
  /// The sums (float64); allreduce them to combine ranks.
  at::Tensor& sums() { return sums_; }
  double samples() const;
  /// {"loss", "accuracy"|"resolution"|"log_prob", "samples"} plus {"auc", "rejection_30"} when binary.
  std::map<std::string, double> metrics() const;

  static constexpr int64_t kBins = 50000;
  static constexpr double kRange = 12.0;

 private:
  bool regression_, binary_, density_;
  at::Tensor sums_;  // loss sum, metric sum, samples, then signal and background histograms
};

}  // namespace hpcml::launch
