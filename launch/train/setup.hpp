/// @file
/// From a training config to what runs (internal to launch/): the model and its feed,
/// the optimizer, the gradient reducer's options and the learning rate. Shared by
/// training, evaluation and inference.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "collectives/gradient_reducer.hpp"
#include "launch/runtime.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/train_config.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace hpcml::launch {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// `c` with the zoo model's default fields and loss filled in.
TrainConfig with_model_defaults(TrainConfig c);

/// The resolved config, the feed and the model of a run.
struct Setup {
  TrainConfig config;
  std::unique_ptr<Feed> feed;
  std::unique_ptr<models::Model> model;
};

/// Builds the feed and the model of `c` (collective: files are opened on every rank);
/// a zoo model's inputs are checked against the files' shapes before any batch is read.
/// `prepare`: initialise what training needs beyond weights (the flow's projection), and
/// with train.pack > 1 build the pack (launch/train/pack.hpp); eval and infer refuse a pack.
Setup set_up(TrainConfig c, const Context& ctx, bool prepare = false);

/// The ordinary (unpacked) model of `c` other than a density model: a zoo model, a TorchScript
/// file, or the MLP sized for `feed`'s inputs. Fresh weights from model.seed.
std::unique_ptr<models::Model> build_model(const TrainConfig& c, const Feed& feed);

/// The flow model of `c` (fresh weights) for data of `parameters` GW parameters and
/// strain width `strain_length`: model.flow's architecture, with one parameter fewer
/// when model.flow.marginalize_phase. And the dataset field of the flow's input `name`.
std::unique_ptr<models::flows::NsfModel> make_flow_model(const TrainConfig& c, int64_t parameters,
                                                         int64_t strain_length);
std::string flow_field(const TrainConfig& c, const std::string& name);

/// A two-class classifier gets ROC metrics.
bool binary_task(const TrainConfig& c, const Feed& feed);

std::unique_ptr<torch::optim::Optimizer> build_optimizer(const TrainConfig& c, std::vector<at::Tensor> params);

/// The learning rate of `step` (0-based): a pure function of the step.
double learning_rate(const TrainConfig& c, int64_t step, int64_t total_steps, int world_size);

collectives::ReducerOptions reducer_options(const TrainConfig& c);

/// train.precision as the autocast dtype: at::kFloat (fp32: no autocast), at::kBFloat16, at::kHalf.
c10::ScalarType precision_dtype(const TrainConfig& c);

/// Checks train.precision against `device` and this LibTorch: one ConfigError line naming
/// the key (fp16 autocast on the CPU needs LibTorch 2.x). set_up calls it.
void check_precision(const TrainConfig& c, c10::DeviceType device);

/// The device of `model`'s parameters (the CPU for a model without any).
c10::Device model_device(const models::Model& model);

/// What `hpcml bench scaling` records of the gradient reducer for the performance model:
/// each trainable parameter's bytes (registration order) and each bucket's, in reduction
/// order; the transport, overlap and bucket options.
nlohmann::json reducer_layout(const collectives::GradientReducer& reducer, models::Model& model);

/// `model`'s forward pass in train.precision: under autocast on the device of its
/// parameters, its floating-point output returned as float32 (losses, metrics and stored
/// predictions stay float32, as with torch.autocast). fp32: the plain forward.
at::Tensor forward_in_precision(models::Model& model, const models::Inputs& inputs, const TrainConfig& c);

/// optimizer.step_in_reduction: sets the optimizer's update to run per bucket inside the
/// reduction unless gradients are clipped (which needs every gradient first). Returns
/// whether it does.
bool step_in_reduction(const TrainConfig& c, torch::optim::Optimizer& optimizer,
                       collectives::GradientReducer& reducer);

}  // namespace hpcml::launch
