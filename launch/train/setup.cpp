// From a config to what a training, evaluation or inference runs: the model, its feed,
// the optimizer, the reducer options and the learning rate (see setup.hpp).
#include "launch/train/setup.hpp"


#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <numeric>
#include <nlohmann/json.hpp>
#include <sstream>

#include "collectives/gradient_reducer.hpp"
#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"
#include "core/signals.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"
#include "hpcml/build_config.hpp"
#include "io/datagen/datagen.hpp"
#include "io/h5_dataset.hpp"
#include "io/h5_tensors.hpp"
#include "io/predictions.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/pack.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

std::unique_ptr<models::Model> build_named_model(const TrainConfig& c) {
  if (c.model.name == "torchscript") {
    HPCML_CHECK_AS(ConfigError, !c.model.torchscript.empty(),
                   "config error: key 'model.torchscript': expected the path of a TorchScript file when model.name "
                   "is torchscript, found nothing");
    return models::load_torchscript(c.model.torchscript);
  }
  if (c.model.name != "mlp") return models::make(c.model.name, static_cast<uint64_t>(c.model.seed));
  return nullptr;
}

std::unique_ptr<models::Model> make_mlp_for(const TrainConfig& c, const Feed& feed) {
  std::vector<int64_t> hidden(c.model.hidden.begin(), c.model.hidden.end());
  int64_t inputs = 1;
  for (int64_t d : feed.input_shape()) inputs *= d;
  return models::make_mlp(inputs, hidden, feed.regression() ? 1 : c.data.classes, static_cast<uint64_t>(c.model.seed));
}

std::unique_ptr<models::Model> build_model(const TrainConfig& c, const Feed& feed) {
  if (auto named = build_named_model(c)) return named;
  return make_mlp_for(c, feed);
}

// The flow's architecture from model.flow, with the parameter and strain widths of the data.
std::unique_ptr<models::flows::NsfModel> make_flow_model(const TrainConfig& c, int64_t parameters,
                                                         int64_t strain_length) {
  const auto& f = c.model.flow;
  HPCML_CHECK_AS(ConfigError, !f.marginalize_phase || parameters == 5, "config error: key "
                 "'model.flow.marginalize_phase': expected the 5 parameters of datagen gw (the phase last), found ",
                 parameters);
  models::flows::NsfOptions o;
  o.theta_dim = f.marginalize_phase ? parameters - 1 : parameters;
  o.strain_length = strain_length;
  o.num_steps = f.steps;
  o.spline.num_bins = f.bins;
  o.spline.tail_bound = f.tail_bound;
  o.hidden = f.hidden;
  o.hidden_layers = f.hidden_layers;
  o.linear = f.linear;
  o.n_basis = f.basis;
  o.embedding_hidden.assign(f.embedding_hidden.begin(), f.embedding_hidden.end());
  o.context_dim = f.context;
  o.seed = static_cast<uint64_t>(c.model.seed);
  return std::make_unique<models::flows::NsfModel>(o, f.marginalize_phase, f.align_time);
}

// The dataset field of a density model's input `name` (data.inputs, else the zoo default).
std::string flow_field(const TrainConfig& c, const std::string& name) {
  if (auto it = c.data.inputs.find(name); it != c.data.inputs.end()) return it->second;
  for (const auto& spec : models::zoo_entry(c.model.name).inputs) {
    if (spec.name == name) return spec.field;
  }
  return name;
}

// The (theta, strain) widths of `files`, the theta of every row when `read_theta`, and
// the strain of the first `strain_rows` rows.
struct FlowData {
  int64_t theta_dim = 0, strain_length = 0;
  std::string first_file;
  at::Tensor theta, strain;
};

FlowData flow_data(const TrainConfig& c, const std::vector<std::string>& files, bool read_theta, int64_t strain_rows) {
  const std::string theta_field = flow_field(c, "theta"), strain_field = flow_field(c, "strain");
  io::H5DatasetOptions o;
  o.files = files;
  o.expect.fields.push_back({theta_field, io::layout::ElementKind::kFloat, 1});
  io::H5Dataset data(o);
  const auto& first = data.files().front();
  const auto* strain = first.field(strain_field);
  HPCML_CHECK_AS(ConfigError, strain != nullptr && strain->shape.dims.size() == 2, "config error: key "
                 "'data.inputs.strain': expected a (rows, T) field '", strain_field, "' in ", first.path,
                 ", found ", strain ? strain->shape.describe() : std::string("none"));
  FlowData out;
  out.theta_dim = first.field(theta_field)->shape.dims[1];
  out.strain_length = strain->shape.dims[1];
  out.first_file = first.path;
  if (read_theta) {
    std::vector<int64_t> rows(static_cast<size_t>(data.size()));
    std::iota(rows.begin(), rows.end(), int64_t{0});
    out.theta = data.read(rows).fixed.at(theta_field);
  }
  if (strain_rows > 0) {
    io::H5DatasetOptions so;
    so.files = files;
    so.expect.fields.push_back({strain_field, io::layout::ElementKind::kFloat, 1});
    io::H5Dataset strains(so);
    std::vector<int64_t> rows(static_cast<size_t>(std::min(strain_rows, strains.size())));
    std::iota(rows.begin(), rows.end(), int64_t{0});
    out.strain = strains.read(rows).fixed.at(strain_field);
  }
  return out;
}

// The nsf-gw model for the training files: with `prepare`, θ standardised on every
// training row and the projection initialised from the SVD of templates (the same
// on every rank; the reducer broadcasts rank 0's anyway).
std::unique_ptr<models::Model> make_flow_for(const TrainConfig& c, bool prepare) {
  const bool align = prepare && c.model.flow.align_time;
  const FlowData data = flow_data(c, c.data.files, prepare, align ? c.model.flow.svd_waveforms : 0);
  auto model = make_flow_model(c, data.theta_dim, data.strain_length);
  model->set_fresh_noise(c.model.flow.fresh_noise);
  if (prepare) {
    const auto gw = models::flows::gw_options_from_file(data.first_file);
    HPCML_CHECK_AS(ConfigError, gw.length == data.strain_length && data.theta_dim == 5, "config error: key "
                   "'data.files': ", data.first_file, " has gw.length ", gw.length, " and ", data.theta_dim,
                   " parameters; expected the strain width ", data.strain_length, " and 5 parameters (datagen gw)");
    const auto start = Clock::now();
    models::flows::prepare_gw_flow(*model, data.theta, data.strain, c.model.flow.svd_waveforms, gw);
    HPCML_LOG_INFO("nsf-gw: standardised on {} training rows; projection from the SVD of {} templates ({:.1f} s)",
                   data.theta.size(0), c.model.flow.svd_waveforms, ms_between(start, Clock::now()) / 1000.0);
  }
  return model;
}

// The model, the config with its input fields resolved, and the feed, in the order
// they depend on each other (a TorchScript model's inputs are its argument names).

// The flow's inputs: θ and strain, and with fresh noise the noise-free signal to
// re-pair, read from datagen gw's `signal` unless data.inputs.signal names another field.
std::vector<std::string> density_inputs(TrainConfig& c) {
  if (!c.model.flow.fresh_noise) return {"theta", "strain"};
  c.data.inputs.emplace("signal", "signal");
  return {"theta", "strain", "signal"};
}

// `prepare`: a fresh model for training (a density model's data-dependent initialisation).
Setup set_up(TrainConfig c, const Context& ctx, bool prepare) {
  Setup s;
  check_pack(c, /*training=*/prepare);
  check_precision(c, ctx.device.device.type());
  const bool density = density_task(c);
  if (density) {
    HPCML_CHECK_AS(ConfigError, c.data.name == "hdf5", "config error: key 'data.name': model ", c.model.name,
                   " reads (theta, strain) pairs from HDF5 files (hpcml datagen gw): expected hdf5, found ",
                   c.data.name);
  }
  const bool pack = c.train.pack > 1;  // packable models are built once the feed exists
  s.model = density || pack ? nullptr : build_named_model(c);
  auto inputs = s.model ? s.model->input_names() : density ? density_inputs(c) : std::vector<std::string>{"x"};
  s.config = with_input_fields(std::move(c), inputs);
  s.feed = pack ? make_pack_feed(s.config, ctx) : make_feed(s.config, ctx);
  // A zoo model's inputs have fixed per-event shapes (a density model's strain length
  // follows its files): checked here, before any batch reaches the model.
  if (const auto zoo = models::zoo(); std::any_of(zoo.begin(), zoo.end(), [&](const auto& e) {
        return e.name == s.config.model.name && e.task != "density";
      })) {
    s.feed->check_inputs(s.config.model.name, models::zoo_entry(s.config.model.name).inputs);
  }
  if (density) {
    s.model = make_flow_for(s.config, prepare);
  } else if (pack) {
    s.model = make_pack_model(s.config, *s.feed);
  } else if (!s.model) {
    s.model = make_mlp_for(s.config, *s.feed);
  }
  return s;
}

// A two-class classifier gets ROC metrics: zoo classifiers, or data.classes = 2.
bool binary_task(const TrainConfig& c, const Feed& feed) {
  if (feed.regression() || density_task(c)) return false;
  if (c.model.name != "mlp" && c.model.name != "torchscript") return true;
  return c.data.classes == 2;
}

std::unique_ptr<torch::optim::Optimizer> build_optimizer(const TrainConfig& c, std::vector<at::Tensor> params) {
  const auto& o = c.optimizer;
  if (o.name == "adam") {
    return std::make_unique<FusedAdam>(
        params, torch::optim::AdamOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  }
  if (o.name == "adamw") {
    return std::make_unique<FusedAdamW>(
        params, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay));
  }
  return std::make_unique<FusedSgd>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay));
}

// optimizer.step_in_reduction: the optimizer's update runs per bucket inside the
// reduction (GradientReducer::set_bucket_update) unless gradients are clipped, which
// needs every gradient before any update. Returns whether it does.
bool step_in_reduction(const TrainConfig& c, torch::optim::Optimizer& optimizer,
                       collectives::GradientReducer& reducer) {
  auto* stepper = dynamic_cast<ParameterStepper*>(&optimizer);
  // fp16's loss scale decides after the whole reduction whether the step runs at all.
  if (!c.optimizer.step_in_reduction || stepper == nullptr || c.train.clip_grad_norm > 0 ||
      c.train.precision == "fp16") {
    return false;
  }
  // An update without per-element state (SGD without momentum) lets the ranks of a
  // node share one copy of the parameters, each updating its part.
  reducer.set_bucket_update(bucket_update(*stepper), stepper->updates_ranges());
  return true;
}

// The learning rate of `step` (0-based): a pure function of the step, so a resumed
// run needs no scheduler state to continue exactly.
double learning_rate(const TrainConfig& c, int64_t step, int64_t total_steps, int world_size) {
  const auto& s = c.schedule;
  double lr = c.optimizer.lr * (s.scale_with_batch ? world_size : 1);
  if (step < s.warmup_steps) return lr * static_cast<double>(step + 1) / s.warmup_steps;
  const int64_t after = step - s.warmup_steps;
  if (s.name == "step") return lr * std::pow(s.gamma, static_cast<double>(after / s.step_size));
  if (s.name == "cosine") {
    const double span = std::max<int64_t>(1, total_steps - s.warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(after) / span);
    return lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + std::cos(M_PI * progress)));
  }
  return lr;
}

c10::ScalarType precision_dtype(const TrainConfig& c) {
  return c.train.precision == "bf16" ? at::kBFloat16 : c.train.precision == "fp16" ? at::kHalf : at::kFloat;
}

void check_precision(const TrainConfig& c, c10::DeviceType device) {
  std::string why;
  HPCML_CHECK_AS(ConfigError, compat::autocast_supported(device, precision_dtype(c), &why),
                 "config error: key 'train.precision': ", c.train.precision, " on ", c10::DeviceTypeName(device, true),
                 ": ", why);
}

c10::Device model_device(const models::Model& model) {
  const auto params = model.named_parameters();
  return params.empty() ? c10::Device(c10::kCPU) : params.front().second.device();
}

at::Tensor forward_in_precision(models::Model& model, const models::Inputs& inputs, const TrainConfig& c) {
  if (c.train.precision == "fp32") return model.forward(inputs);
  at::Tensor out;
  {
    compat::AutocastScope autocast(model_device(model).type(), precision_dtype(c));
    out = model.forward(inputs);
  }
  return out.is_floating_point() ? out.to(at::kFloat) : out;
}

nlohmann::json reducer_layout(const collectives::GradientReducer& reducer, models::Model& model) {
  std::map<std::string, int64_t> bytes;
  nlohmann::json parameter_bytes = nlohmann::json::array(), buckets_bytes = nlohmann::json::array();
  for (const auto& [name, t] : model.named_parameters()) {
    if (!t.requires_grad()) continue;
    bytes[name] = t.numel() * 4;  // float32 gradients
    parameter_bytes.push_back(bytes[name]);
  }
  for (const auto& names : reducer.bucket_layout()) {
    int64_t sum = 0;
    for (const auto& n : names) sum += bytes[n];
    buckets_bytes.push_back(sum);
  }
  const auto& o = reducer.options();
  return {{"parameter_bytes", parameter_bytes},
          {"buckets_bytes", buckets_bytes},
          {"transport", collectives::to_string(reducer.transport())},
          {"overlap", reducer.overlap_mode()},
          {"reducer",
           {{"first_bucket_bytes", o.first_bucket_bytes},
            {"bucket_cap_bytes", o.bucket_cap_bytes},
            {"direct_min_bytes", o.direct_min_bytes},
            {"overlap", reducer.overlapping()}}}};
}

collectives::ReducerOptions reducer_options(const TrainConfig& c) {
  collectives::ReducerOptions o = c.reducer.options();
  o.allow_unused = c.train.allow_unused_parameters;
  return o;
}


TrainConfig with_model_defaults(TrainConfig c) {
  if (c.model.name != "mlp" && c.model.name != "torchscript") {
    if (c.data.target.empty()) c.data.target = models::zoo_entry(c.model.name).target_field;
  }
  const bool density = density_task(c);
  if (density && c.train.loss == "auto") c.train.loss = "nll";
  HPCML_CHECK_AS(ConfigError, density == (c.train.loss == "nll"), "config error: key 'train.loss': ",
                 density ? "model " + c.model.name + " is a density model: expected nll or auto, found " + c.train.loss
                         : "nll needs a density model (nsf-gw), found model " + c.model.name);
  return c;
}

// The metrics of `model` over this rank's share of the feed's validation set. No
// collectives: allreduce the result's sums().

}  // namespace hpcml::launch
