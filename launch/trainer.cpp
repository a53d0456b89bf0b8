#include "launch/trainer.hpp"

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
#include <numeric>
#include <nlohmann/json.hpp>
#include <sstream>

#include "collectives/gradient_reducer.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"
#include "core/signals.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"
#include "hpcml/build_config.hpp"
#include "io/h5_dataset.hpp"
#include "io/h5_tensors.hpp"
#include "io/predictions.hpp"
#include "launch/feed.hpp"
#include "launch/optim.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

void write_atomically(const fs::path& path, const std::string& text) { write_file_atomically(path.string(), text); }

// The zoo or TorchScript model of `c`, or nullptr for the MLP (whose width comes
// from the feed: make_mlp_for).
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

// The flow's architecture from model.flow, with the parameter and strain widths of the data.
models::flows::NsfOptions flow_options(const TrainConfig& c, int64_t theta_dim, int64_t strain_length) {
  const auto& f = c.model.flow;
  models::flows::NsfOptions o;
  o.theta_dim = theta_dim;
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
  return o;
}

// The dataset field of a density model's input `name` (data.inputs, else the zoo default).
std::string flow_field(const TrainConfig& c, const std::string& name) {
  if (auto it = c.data.inputs.find(name); it != c.data.inputs.end()) return it->second;
  for (const auto& spec : models::zoo_entry(c.model.name).inputs) {
    if (spec.name == name) return spec.field;
  }
  return name;
}

// The (theta, strain) widths of `files`, and the theta of every row when `read_theta`.
struct FlowData {
  int64_t theta_dim = 0, strain_length = 0;
  std::string first_file;
  at::Tensor theta;
};

FlowData flow_data(const TrainConfig& c, const std::vector<std::string>& files, bool read_theta) {
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
  return out;
}

// The nsf-gw model for the training files: with `prepare`, θ standardised on every
// training row and the projection initialised from the SVD of templates (the same
// on every rank; the reducer broadcasts rank 0's anyway).
std::unique_ptr<models::Model> make_flow_for(const TrainConfig& c, bool prepare) {
  const FlowData data = flow_data(c, c.data.files, prepare);
  auto model = std::make_unique<models::flows::NsfModel>(flow_options(c, data.theta_dim, data.strain_length));
  model->set_fresh_noise(c.model.flow.fresh_noise);
  if (prepare) {
    const auto gw = models::flows::gw_options_from_file(data.first_file);
    HPCML_CHECK_AS(ConfigError, gw.length == data.strain_length && data.theta_dim == 5, "config error: key "
                   "'data.files': ", data.first_file, " has gw.length ", gw.length, " and ", data.theta_dim,
                   " parameters; expected the strain width ", data.strain_length, " and 5 parameters (datagen gw)");
    const auto start = Clock::now();
    models::flows::prepare_gw_flow(model->flow(), data.theta, c.model.flow.svd_waveforms, gw);
    HPCML_LOG_INFO("nsf-gw: standardised on {} training rows; projection from the SVD of {} templates ({:.1f} s)",
                   data.theta.size(0), c.model.flow.svd_waveforms, ms_between(start, Clock::now()) / 1000.0);
  }
  return model;
}

// The model, the config with its input fields resolved, and the feed, in the order
// they depend on each other (a TorchScript model's inputs are its argument names).
struct Setup {
  TrainConfig config;
  std::unique_ptr<Feed> feed;
  std::unique_ptr<models::Model> model;
};

// The flow's inputs: θ and strain, and with fresh noise the noise-free signal to
// re-pair, read from datagen gw's `signal` unless data.inputs.signal names another field.
std::vector<std::string> density_inputs(TrainConfig& c) {
  if (!c.model.flow.fresh_noise) return {"theta", "strain"};
  c.data.inputs.emplace("signal", "signal");
  return {"theta", "strain", "signal"};
}

// `prepare`: a fresh model for training (a density model's data-dependent initialisation).
Setup set_up(TrainConfig c, const Context& ctx, bool prepare = false) {
  Setup s;
  const bool density = density_task(c);
  if (density) {
    HPCML_CHECK_AS(ConfigError, c.data.name == "hdf5", "config error: key 'data.name': model ", c.model.name,
                   " reads (theta, strain) pairs from HDF5 files (hpcml datagen gw): expected hdf5, found ",
                   c.data.name);
  }
  s.model = density ? nullptr : build_named_model(c);
  auto inputs = s.model ? s.model->input_names() : density ? density_inputs(c) : std::vector<std::string>{"x"};
  s.config = with_input_fields(std::move(c), inputs);
  s.feed = make_feed(s.config, ctx);
  // A zoo model's inputs have fixed per-event shapes (a density model's strain length
  // follows its files): checked here, before any batch reaches the model.
  if (const auto zoo = models::zoo(); std::any_of(zoo.begin(), zoo.end(), [&](const auto& e) {
        return e.name == s.config.model.name && e.task != "density";
      })) {
    s.feed->check_inputs(s.config.model.name, models::zoo_entry(s.config.model.name).inputs);
  }
  if (density) {
    s.model = make_flow_for(s.config, prepare);
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
  if (!c.optimizer.step_in_reduction || stepper == nullptr || c.train.clip_grad_norm > 0) return false;
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

collectives::ReducerOptions reducer_options(const TrainConfig& c) {
  collectives::ReducerOptions o;
  o.first_bucket_bytes = static_cast<int64_t>(c.reducer.first_bucket_mb * (1 << 20));
  o.bucket_cap_bytes = static_cast<int64_t>(c.reducer.bucket_cap_mb * (1 << 20));
  o.overlap = collectives::parse_overlap(c.reducer.overlap, "config error: key 'reducer.overlap'");
  o.transport = collectives::parse_transport(c.reducer.transport, "config error: key 'reducer.transport'");
  o.compression = collectives::parse_compression(c.reducer.compression, "config error: key 'reducer.compression'");
  o.buffers = c.reducer.buffers == "per_rank" ? collectives::BufferPolicy::kPerRank
                                              : collectives::BufferPolicy::kBroadcast;
  o.allow_unused = c.train.allow_unused_parameters;
  return o;
}

// ---- checkpoints ------------------------------------------------------------------

fs::path checkpoint_dir(const std::string& run_dir) { return fs::path(run_dir) / "checkpoints"; }

fs::path checkpoint_path(const std::string& run_dir, int64_t step) {
  return checkpoint_dir(run_dir) / ("step-" + std::to_string(step) + ".pt");
}

struct CheckpointHeader {
  int64_t step = 0;
  int64_t world_size = 0;
  int64_t threads = 0;
};

void save_checkpoint(const fs::path& path, int64_t step, const Context& ctx, const models::Model& model,
                     torch::optim::Optimizer& optimizer, const std::string& config_yaml,
                     const std::vector<at::Tensor>& rng_states) {
  torch::serialize::OutputArchive archive;
  archive.write("format_version", c10::IValue(kCheckpointFormat));
  archive.write("step", c10::IValue(step));
  archive.write("world_size", c10::IValue(static_cast<int64_t>(ctx.world->size())));
  archive.write("threads", c10::IValue(static_cast<int64_t>(ctx.threads.intra_op)));
  archive.write("config", c10::IValue(config_yaml));
  std::string names;
  int64_t i = 0;
  for (const auto& [name, t] : model.named_parameters()) {
    names += name + "\n";
    archive.write("param_" + std::to_string(i++), t.detach());
  }
  archive.write("param_names", c10::IValue(names));
  i = 0;
  std::string buffer_names;
  for (const auto& [name, t] : model.named_buffers()) {
    buffer_names += name + "\n";
    archive.write("buffer_" + std::to_string(i++), t, true);
  }
  archive.write("buffer_names", c10::IValue(buffer_names));
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  // Dropout and other random ops draw from torch's global generator: every rank's state.
  for (size_t r = 0; r < rng_states.size(); ++r) archive.write("rng_torch_" + std::to_string(r), rng_states[r]);
  const fs::path tmp = path.string() + ".tmp";
  archive.save_to(tmp.string());
  fsync_file(tmp.string());
  fs::rename(tmp, path);
}

int64_t read_int(torch::serialize::InputArchive& archive, const char* key, const std::string& path) {
  c10::IValue v;
  HPCML_CHECK_AS(IoError, archive.try_read(key, v) && v.isInt(), "checkpoint '", path, "': no integer '", key, "'");
  return v.toInt();
}

// Opens a checkpoint and checks its format version (IoError naming the file otherwise).
void open_checkpoint(const std::string& path, torch::serialize::InputArchive& archive) {
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    HPCML_THROW(IoError, "cannot read checkpoint '", path, "': ", e.what_without_backtrace());
  }
  const int64_t version = read_int(archive, "format_version", path);
  HPCML_CHECK_AS(IoError, version == kCheckpointFormat, "checkpoint '", path, "' has format version ", version,
                 "; this hpcml reads version ", kCheckpointFormat);
}

// Copies a checkpoint's parameters and buffers into `model`. A model of another
// shape is an error naming the first mismatching parameter.
void load_model_state(torch::serialize::InputArchive& archive, const std::string& path, models::Model& model) {
  c10::IValue names_value;
  archive.read("param_names", names_value);
  std::vector<std::string> names;
  std::istringstream lines(names_value.toStringRef());
  for (std::string line; std::getline(lines, line);) names.push_back(line);
  const auto params = model.named_parameters();
  HPCML_CHECK_AS(IoError, names.size() == params.size(), "checkpoint '", path, "' holds ", names.size(),
                 " parameters; the model has ", params.size());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor stored;
    archive.read("param_" + std::to_string(i), stored);
    HPCML_CHECK_AS(IoError, names[i] == params[i].first && stored.sizes() == params[i].second.sizes(),
                   "checkpoint '", path, "' does not fit the model: parameter ", i, " is '", names[i], "' of shape ",
                   stored.sizes(), " in the checkpoint, '", params[i].first, "' of shape ", params[i].second.sizes(),
                   " in the model");
    params[i].second.copy_(stored);
  }
  int64_t i = 0;
  for (const auto& [name, t] : model.named_buffers()) {
    at::Tensor stored;
    archive.read("buffer_" + std::to_string(i++), stored, true);
    t.copy_(stored);
  }
}

// Loads a checkpoint into the model and optimizer; returns its header. A model of
// another shape is an error naming the first mismatching parameter.
CheckpointHeader load_checkpoint(const std::string& path, models::Model& model, torch::optim::Optimizer& optimizer,
                                 int rank, int world_size) {
  torch::serialize::InputArchive archive;
  open_checkpoint(path, archive);
  CheckpointHeader header{read_int(archive, "step", path), read_int(archive, "world_size", path),
                          read_int(archive, "threads", path)};
  load_model_state(archive, path, model);
  torch::serialize::InputArchive opt_archive;
  archive.read("optimizer", opt_archive);
  optimizer.load(opt_archive);
  // This rank's random stream, when the rank count is unchanged.
  at::Tensor rng;
  if (header.world_size == world_size && archive.try_read("rng_torch_" + std::to_string(rank), rng)) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global one
    generator.set_state(rng);
  }
  return header;
}

void prune_checkpoints(const std::string& run_dir, int keep) {
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& entry : fs::directory_iterator(checkpoint_dir(run_dir))) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && entry.path().extension() == ".pt") {
      found.emplace_back(std::stoll(name.substr(5)), entry.path());
    }
  }
  std::sort(found.rbegin(), found.rend());
  for (size_t k = static_cast<size_t>(keep); k < found.size(); ++k) fs::remove(found[k].second);
}

// Drops metrics rows after `step`, so a resumed run appends without duplicates.
void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_atomically(path, kept);
}

// Why a training loss is not finite, as far as this rank's batch tells: a non-finite
// value in an input, else the model or its loss diverged.
std::string nonfinite_cause(double loss, const models::Inputs& inputs, const DataSection& data) {
  for (const auto& [name, t] : inputs) {
    if (!t.is_floating_point()) continue;
    const int64_t bad = (~at::isfinite(t)).sum().item<int64_t>();
    if (bad > 0) {
      const auto field = data.inputs.find(name);
      const std::string source = data.name == "hdf5" && field != data.inputs.end()
                                     ? " (dataset '" + field->second + "' of data.files)"
                                     : std::string();
      return fmt::format("the loss is {}: input '{}'{} holds {} non-finite value(s) in this batch", loss, name,
                         source, bad);
    }
  }
  return fmt::format("the loss is {} with finite inputs: the model diverged (lower optimizer.lr, or set "
                     "train.clip_grad_norm)", loss);
}

// ---- progress -----------------------------------------------------------------

class Progress {
 public:
  // Under mpirun every rank's stdout is a pseudo-terminal even when mpirun's own
  // output goes to a file, so "auto" draws a bar only without a launcher.
  Progress(const std::string& mode, int64_t total, bool launched) : total_(total) {
    bar_ = mode == "bar" || (mode == "auto" && !launched && isatty(STDOUT_FILENO));
  }
  void update(int64_t step, double loss, double samples_per_s) {
    if (!bar_) return;
    const int width = 30;
    const int filled = static_cast<int>(width * step / std::max<int64_t>(1, total_));
    std::printf("\r[%s%s] step %lld/%lld  loss %.4f  %.0f samples/s ", std::string(filled, '#').c_str(),
                std::string(width - filled, '.').c_str(), static_cast<long long>(step),
                static_cast<long long>(total_), loss, samples_per_s);
    std::fflush(stdout);
  }
  void finish() {
    if (bar_) std::printf("\n");
  }
  bool bar() const { return bar_; }

 private:
  int64_t total_;
  bool bar_;
};

}  // namespace

std::string parameters_digest(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& [name, t] : named) {
    const at::Tensor c = t.detach().contiguous();
    EVP_DigestUpdate(ctx, name.data(), name.size());
    EVP_DigestUpdate(ctx, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  EVP_MD_CTX_free(ctx);
  std::ostringstream hex;
  for (unsigned int i = 0; i < length; ++i) hex << std::hex << std::setw(2) << std::setfill('0') << int(digest[i]);
  return hex.str();
}

std::string newest_checkpoint(const std::string& run_dir) {
  const fs::path dir = checkpoint_dir(run_dir);
  if (!fs::is_directory(dir)) return "";
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && entry.path().extension() == ".pt") {
      try {
        found.emplace_back(std::stoll(name.substr(5)), entry.path());
      } catch (const std::exception&) {
      }
    }
  }
  std::sort(found.rbegin(), found.rend());
  for (const auto& [step, path] : found) {
    try {  // valid = readable, with this format version
      torch::serialize::InputArchive archive;
      archive.load_from(path.string());
      c10::IValue v;
      if (archive.try_read("format_version", v) && v.isInt() && v.toInt() == kCheckpointFormat) return path.string();
    } catch (const c10::Error&) {
    }
    HPCML_LOG_WARN("skipping unreadable checkpoint {}", path.string());
  }
  return "";
}

void export_checkpoint(const std::string& path, const std::string& out) {
  torch::serialize::InputArchive archive;
  open_checkpoint(path, archive);
  c10::IValue names_value;
  archive.read("param_names", names_value);
  std::vector<io::NamedTensor> tensors;
  std::istringstream lines(names_value.toStringRef());
  int64_t i = 0;
  for (std::string name; std::getline(lines, name);) {
    at::Tensor t;
    archive.read("param_" + std::to_string(i++), t);
    tensors.emplace_back(name, t);
  }
  // The buffers (batch-norm statistics) too, so a twin reproduces evaluation outputs.
  const std::string digest = parameters_digest(tensors);
  c10::IValue buffer_names;
  if (archive.try_read("buffer_names", buffer_names)) {
    std::istringstream buffer_lines(buffer_names.toStringRef());
    i = 0;
    for (std::string name; std::getline(buffer_lines, name);) {
      at::Tensor t;
      archive.read("buffer_" + std::to_string(i++), t, true);
      tensors.emplace_back(name, t);
    }
  }
  c10::IValue config;
  archive.read("config", config);
  io::write_tensors_h5(out, tensors,
                       {{"checkpoint", path},
                        {"step", std::to_string(read_int(archive, "step", path))},
                        {"hpcml_version", std::string(HPCML_VERSION) + " (" + HPCML_GIT_REVISION + ")"},
                        {"parameters_sha256", digest},
                        {"config", config.toStringRef()}});
}

// The newest valid checkpoint of `run_dir` as rank 0 finds it (it alone opens the
// candidates), broadcast so that every rank loads the same file; "" when none.
std::string agreed_newest_checkpoint(collectives::Backend& world, const std::string& run_dir) {
  std::string chosen = world.rank() == 0 ? newest_checkpoint(run_dir) : std::string();
  at::Tensor len = at::tensor({static_cast<int64_t>(chosen.size())}, at::kLong);
  world.broadcast(len);
  at::Tensor bytes = at::zeros({len.item<int64_t>()}, at::kByte);
  if (world.rank() == 0 && !chosen.empty()) std::memcpy(bytes.data_ptr(), chosen.data(), chosen.size());
  world.broadcast(bytes);
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel()));
}

// A zoo model names the fields it reads and predicts: they are the data defaults.
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
Scores validation_scores(models::Model& model, Feed& feed, const TrainConfig& c) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  Scores scores(feed.regression(), binary_task(c, feed), density_task(c));
  feed.for_each_validation([&](const Example& e) {
    const auto output = model.forward(e.inputs);
    scores.add(output, e.target, task_loss(c.train.loss, feed.regression(), output, e.target).item<double>());
  });
  model.set_training(true);
  return scores;
}

// The metrics as JSON fields, "val_"-prefixed or not, in a fixed order.
nlohmann::json metrics_json(const Scores& scores, const std::string& prefix) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : scores.metrics()) out[prefix + key] = value;
  return out;
}

std::string metrics_text(const Scores& scores) {
  std::string text;
  for (const auto& [key, value] : scores.metrics()) {
    if (key == "samples") continue;
    text += (text.empty() ? "" : ", ") + key + " " + fmt::format("{:.5g}", value);
  }
  return text;
}

// Simulation-based calibration of a density model over the validation set (every rank
// its share; the sums allreduced): coverage of the central 50% / 90% intervals with
// the 99% binomial band, the P–P curve, KS p-values, and the chirp-mass interval width
// relative to the prior's. Rank 0 prints a table; the JSON goes into summary.json.
nlohmann::json flow_calibration(Context& ctx, models::Model& model, Feed& feed, const TrainConfig& c) {
  auto& world = *ctx.world;
  auto& flow = dynamic_cast<models::flows::NsfModel&>(model).flow();
  models::flows::CalibrationOptions o;
  o.samples = c.model.flow.posterior_samples;
  const auto gw = models::flows::gw_options_from_file(io::expand_files(c.data.validation_files).front());
  o.prior_width = gw.chirp_mass_max - gw.chirp_mass_min;
  models::flows::Calibration calibration(flow.options().theta_dim, o);
  // Each rank's own stream: the statistics do not depend on which rank drew them.
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(c.train.seed) * 7919u + 17u +
                                                            static_cast<uint64_t>(world.rank()));
  const auto start = Clock::now();
  flow.train(false);
  feed.for_each_validation([&](const Example& e) {
    calibration.add(flow, e.inputs.at("theta"), e.inputs.at("strain"), generator);
  });
  world.allreduce(calibration.sums());
  const auto r = calibration.result();
  const double n = r.events;
  // The 99% band of a binomial fraction around p (normal approximation, z = 2.5758).
  auto band = [&](double p) {
    const double half = 2.5758 * std::sqrt(p * (1 - p) / std::max(1.0, n));
    return std::vector<double>{p - half, p + half};
  };
  const auto band50 = band(0.5), band90 = band(0.9);
  std::vector<std::string> names = models::flows::kGwParameterNames;
  names.resize(static_cast<size_t>(flow.options().theta_dim));
  nlohmann::json out = {{"events", n}, {"posterior_samples", o.samples}, {"band_50", band50}, {"band_90", band90}};
  bool within = true;
  double min_p = 1.0;
  for (size_t d = 0; d < names.size(); ++d) {
    const std::string name = names[d].empty() ? "theta" + std::to_string(d) : names[d];
    out["coverage_50"][name] = r.coverage_50[d];
    out["coverage_90"][name] = r.coverage_90[d];
    out["ks_p"][name] = r.ks_p[d];
    out["pp"][name] = r.pp[d];
    within = within && r.coverage_50[d] >= band50[0] && r.coverage_50[d] <= band50[1] &&
             r.coverage_90[d] >= band90[0] && r.coverage_90[d] <= band90[1];
    min_p = std::min(min_p, r.ks_p[d]);
  }
  out["coverage_within_band"] = within;
  out["ks_min_p"] = min_p;
  out["chirp_mass_width_90_over_prior"] = r.median_width_90;
  out["chirp_mass_width_50_over_prior"] = r.median_width_50;
  out["informative"] = r.median_width_90 <= 0.25;
  if (world.rank() == 0) {
    std::printf("calibration on %.0f held-out events, %lld posterior draws each (%.1f s); 99%% bands: 50%% "
                "[%.3f, %.3f], 90%% [%.3f, %.3f]\n",
                n, static_cast<long long>(o.samples), ms_between(start, Clock::now()) / 1000.0, band50[0], band50[1],
                band90[0], band90[1]);
    std::printf("  %-12s %8s %8s %8s   P-P at 0.1 0.2 ... 0.9\n", "parameter", "cov50", "cov90", "KS p");
    for (size_t d = 0; d < names.size(); ++d) {
      std::string pp;
      for (int k = 1; k <= 9; ++k) pp += fmt::format(" {:.3f}", r.pp[d][static_cast<size_t>(k * o.bins / 10)]);
      std::printf("  %-12s %8.3f %8.3f %8.3f  %s\n", names[d].c_str(), r.coverage_50[d], r.coverage_90[d], r.ks_p[d],
                  pp.c_str());
    }
    std::printf("coverage within the 99%% band: %s; KS min p %.3g; median chirp-mass 90%% width / prior width %.3f "
                "(50%%: %.3f)\n",
                within ? "yes" : "no", min_p, r.median_width_90, r.median_width_50);
  }
  return out;
}

int train(Context& ctx, const TrainConfig& config) {
  TrainConfig c = with_model_defaults(config);
  if (c.run.dir.empty()) c.run.dir = ctx.env.job_id ? "runs/" + *ctx.env.job_id : "runs/train";
  auto& world = *ctx.world;
  const int rank = world.rank();
  const int n = world.size();
  const fs::path run_dir = c.run.dir;
  Activity activity("training model '" + c.model.name + "'");
  // A fresh run never mixes with another in one directory: refused here, before any
  // work; with run.overwrite the other run is moved aside once start-up has succeeded.
  const std::string occupant =
      rank == 0 && c.run.resume != "auto"
          ? describe_run(run_dir, {"config.yaml", "metrics.jsonl", "summary.json", "trace.json"}, "checkpoints")
          : std::string();
  HPCML_CHECK_AS(ConfigError, occupant.empty() || c.run.overwrite, "config error: key 'run.dir': '", run_dir.string(),
                 "' holds another run (", occupant, "); continue it with --resume, choose another run.dir, or pass "
                 "--overwrite (run.overwrite: true) to move it aside");
  // The model and its data: the synthetic set in memory, or this rank's shard of HDF5 files.
  Setup setup = set_up(c, ctx, /*prepare=*/true);
  c = std::move(setup.config);
  auto feed = std::move(setup.feed);
  auto model = std::move(setup.model);
  const std::string config_yaml = config::to_yaml(c);
  // SyncBatchNorm: batch-norm statistics over the global batch, on a communicator of
  // its own (its blocking allreduces run inside forward and backward).
  collectives::BackendPtr batch_norm_group;
  if (c.model.sync_batch_norm) {
    if (n > 1) batch_norm_group = ctx.world->split(0, rank, "sync_batch_norm");
    const int layers = model->synchronize_batch_norm(batch_norm_group);
    HPCML_CHECK_AS(ConfigError, layers > 0, "config error: key 'model.sync_batch_norm': expected a model with hpcml "
                   "batch-norm layers (facile, deepcalo, particlenet, particlenet-lite), found '", model->name(),
                   "' with none (the MLP has none; TorchScript modules are out of scope)");
    if (n > 1) HPCML_LOG_INFO("SyncBatchNorm: {} batch-norm layer(s) use the global batch's statistics", layers);
  }
  install_stop_handlers();
  if (c.run.trace) {
    trace::enable(true);
    trace::name_thread("main");
  }

  const bool regression = feed->regression();
  const bool density = density_task(c);
  const char* metric = density ? "log_prob" : metric_name(regression);
  // The training metric from its sum over samples (log_prob: the mean log-density).
  auto metric_of = [&](double sum, double samples) {
    return density ? (samples > 0 ? sum / samples : 0.0) : metric_value(regression, sum, samples);
  };
  HPCML_CHECK_AS(ConfigError, c.train.batch_size % c.train.gradient_accumulation == 0,
                 "config error: key 'train.gradient_accumulation': expected a divisor of train.batch_size (",
                 c.train.batch_size, "), found ", c.train.gradient_accumulation);

  // After the model (whose initialisation seeds torch's generator): each rank's own
  // stream for dropout and other random ops.
  torch::manual_seed(static_cast<uint64_t>(c.train.seed) + 7919u * static_cast<uint64_t>(rank));
  collectives::GradientReducer reducer(model->named_parameters(), model->named_buffers(), ctx.world,
                                       reducer_options(c));
  std::vector<at::Tensor> params;
  for (const auto& [name, t] : model->named_parameters()) {
    if (t.requires_grad()) params.push_back(t);
  }
  auto optimizer = build_optimizer(c, params);
  const bool in_reduction = step_in_reduction(c, *optimizer, reducer);

  const int64_t steps_per_epoch = feed->steps_per_epoch();
  const int64_t total_steps = c.train.max_steps > 0 ? c.train.max_steps : c.train.epochs * steps_per_epoch;
  int64_t start_step = 0;
  bool resumed = false;
  if (c.run.resume == "auto") {
    const std::string chosen = agreed_newest_checkpoint(world, c.run.dir);
    if (!chosen.empty()) {
      const auto header = load_checkpoint(chosen, *model, *optimizer, rank, n);
      start_step = header.step;
      resumed = true;
      if (header.world_size != n || header.threads != ctx.threads.intra_op) {
        HPCML_LOG_WARN("resuming a checkpoint written by {} rank(s) x {} thread(s) on {} x {}: the data is re-sharded "
                       "and the result will not be bit-identical to an uninterrupted run",
                       header.world_size, header.threads, n, ctx.threads.intra_op);
      }
      HPCML_LOG_INFO("resumed from {} at step {}", chosen, start_step);
    } else {
      HPCML_LOG_INFO("no checkpoint in {}: starting fresh", (run_dir / "checkpoints").string());
    }
  }
  // Start-up has succeeded (config, data, model, checkpoint): only now is run.dir written.
  if (rank == 0) {
    if (!occupant.empty()) {
      const fs::path aside = moved_aside_name(run_dir);
      fs::rename(run_dir, aside);
      HPCML_LOG_WARN("run.dir {} held another run ({}): moved it to {}", run_dir.string(), occupant, aside.string());
    }
    fs::create_directories(checkpoint_dir(c.run.dir));
    write_atomically(run_dir / "config.yaml", config_yaml);
    if (resumed) {
      truncate_metrics(run_dir / "metrics.jsonl", start_step);
    } else {
      write_atomically(run_dir / "metrics.jsonl", "");
    }
  }
  world.barrier();

  std::ofstream metrics;
  if (rank == 0) metrics.open(run_dir / "metrics.jsonl", std::ios::app);
  HPCML_LOG_INFO("training {} ({} parameters) on {} rank(s) x {} thread(s): {} steps of {} x {} samples, {} "
                 "step(s) per epoch, gradients via {} (overlap {}), optimizer step {}",
                 model->name(), models::parameter_count(*model), n, ctx.threads.intra_op, total_steps,
                 c.train.batch_size, n, steps_per_epoch, collectives::to_string(reducer.transport()),
                 reducer.overlap_mode(), reducer.update_placement());
  if (!reducer.transport_note().empty() && n > 1) HPCML_LOG_INFO("{}", reducer.transport_note());

  Progress progress(c.run.progress, total_steps, ctx.env.launcher != Launcher::kNone);
  // Per log interval: loss sum, correct, samples, data, forward, backward, wait, optimizer (ms).
  std::vector<double> acc(8, 0.0);
  auto interval_start = Clock::now();
  int exit_code = 0;
  const int micro = c.train.gradient_accumulation;
  const int64_t micro_size = c.train.batch_size / micro;

  // A step whose loss (or validation metric) is NaN or Inf on any rank: every rank
  // learns it in the step's stop agreement. Filled on the lowest such rank.
  int64_t nonfinite_step = -1;
  std::string nonfinite_what;
  bool nonfinite_warned = false;
  auto checkpoint = [&](int64_t step_done) {
    // Only finite parameters are kept: a checkpoint is where a diverged run restarts.
    bool finite = true;
    for (const auto& [name, t] : model->named_parameters()) finite = finite && at::isfinite(t).all().item<bool>();
    at::Tensor flag = at::tensor({finite ? 0 : 1}, at::kInt);
    world.allreduce(flag, {collectives::ReduceOp::kMax});
    if (flag.item<int>() != 0) {
      HPCML_LOG_WARN("step {}: non-finite parameters; no checkpoint written", step_done);
      return false;
    }
    const auto rng_states = world.allgather_varying(at::detail::getDefaultCPUGenerator().get_state());
    if (rank == 0) {
      save_checkpoint(checkpoint_path(c.run.dir, step_done), step_done, ctx, *model, *optimizer, config_yaml,
                      rng_states);
      prune_checkpoints(c.run.dir, c.checkpoint.keep);
    }
    world.barrier();
    return true;
  };

  nlohmann::json last_validation;
  auto validate = [&](int64_t step_done, int64_t epoch) {
    if (feed->validation_size() == 0) return;
    reducer.sync_buffers();  // every rank validates with rank 0's statistics, as a checkpoint stores them
    Scores scores = validation_scores(*model, *feed, c);
    world.allreduce(scores.sums());
    if (rank == 0) {
      last_validation = {{"step", step_done}, {"epoch", epoch}};
      last_validation.update(metrics_json(scores, "val_"));
      metrics << last_validation.dump() << "\n" << std::flush;
      HPCML_LOG_INFO("epoch {} validation: {}", epoch, metrics_text(scores));
    }
  };

  model->set_training(true);
  for (int64_t step = start_step; step < total_steps; ++step) {
    const int64_t epoch = step / steps_per_epoch;
    const double lr = learning_rate(c, step, total_steps, n);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);

    auto t0 = Clock::now();
    Example batch;
    {
      trace::Span span("data", "data");
      batch = feed->batch(epoch, step % steps_per_epoch);
    }
    auto t1 = Clock::now();
    double forward_ms = 0, backward_ms = 0, wait_ms = 0, update_ms = 0, loss_sum = 0, correct = 0;
    reducer.zero_grad();
    reducer.sync_buffers();
    for (int m = 0; m < micro; ++m) {
      auto tf = Clock::now();
      at::Tensor logits, loss;
      const Example part = micro > 1 ? batch.narrow(m * micro_size, micro_size) : batch;
      {
        trace::Span span("forward", "compute");
        logits = model->forward(part.inputs);
        loss = task_loss(c.train.loss, regression, logits, part.target);
      }
      auto tb = Clock::now();
      forward_ms += ms_between(tf, tb);
      // Each micro-batch's mean loss, divided by their count: the step's mean.
      const at::Tensor scaled = micro > 1 ? loss / micro : loss;
      if (m + 1 < micro) {
        auto no_sync = reducer.no_sync();
        reducer.backward(scaled);
      } else {
        reducer.backward(scaled);
        wait_ms = reducer.last_step().exposed_wait_ms;
        update_ms = reducer.last_step().update_ms;  // the optimizer step, when in the reduction
      }
      backward_ms += ms_between(tb, Clock::now());
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value) && nonfinite_what.empty()) {
        nonfinite_step = step + 1;
        nonfinite_what = nonfinite_cause(loss_value, part.inputs, c.data);
      }
      loss_sum += loss_value * static_cast<double>(micro_size);
      correct += density ? logits.detach().to(at::kDouble).sum().item<double>()
                         : metric_sum(regression, logits, part.target);
    }
    backward_ms -= wait_ms + update_ms;
    auto t3 = Clock::now();
    if (!in_reduction) {
      trace::Span span("optimizer", "compute");
      if (c.train.clip_grad_norm > 0) {
        // Gradients are averages already: the norm is the same on every rank.
        torch::nn::utils::clip_grad_norm_(params, c.train.clip_grad_norm);
      }
      optimizer->step();
    }
    const double optimizer_ms = ms_between(t3, Clock::now()) + update_ms;
    const double step_values[8] = {loss_sum, correct, static_cast<double>(c.train.batch_size), ms_between(t0, t1),
                                   forward_ms, backward_ms, wait_ms, optimizer_ms};
    for (int k = 0; k < 8; ++k) acc[k] += step_values[k];
    const int64_t done = step + 1;

    if (done % c.train.log_every == 0 || done == total_steps) {
      at::Tensor t = at::tensor(acc, at::kDouble);
      world.allreduce(t);  // sums over ranks
      const double seconds = ms_between(interval_start, Clock::now()) / 1000.0;
      const auto v = t.accessor<double, 1>();
      const double steps_in = std::max(1.0, v[2] / (c.train.batch_size * static_cast<double>(n)));
      if (rank == 0) {
        const double per = 1.0 / (steps_in * n);  // per step, averaged over ranks
        nlohmann::json row = {
            {"step", done},
            {"epoch", epoch},
            {"loss", v[0] / v[2]},
            {metric, metric_of(v[1], v[2])},
            {"lr", lr},
            {"samples_per_s", v[2] / seconds},
            {"time_ms",
             {{"data", v[3] * per}, {"forward", v[4] * per}, {"backward", v[5] * per}, {"comm_wait", v[6] * per},
              {"optimizer", v[7] * per}}}};
        metrics << row.dump() << "\n" << std::flush;
        if (progress.bar()) {
          progress.update(done, v[0] / v[2], v[2] / seconds);
        } else {
          HPCML_LOG_INFO("step {}/{} epoch {} loss {:.4g} {} {:.4f} lr {:.4g} {:.0f} samples/s", done, total_steps,
                         epoch, v[0] / v[2], metric, metric_of(v[1], v[2]), lr,
                         v[2] / seconds);
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      interval_start = Clock::now();
    }

    // A stop request on any rank stops every rank at this same step; so does a
    // non-finite loss (its lowest rank, as n - rank, so that the maximum names it).
    at::Tensor agreed = at::tensor({stop_signal(), nonfinite_step == done ? n - rank : 0}, at::kInt);
    world.allreduce(agreed, {collectives::ReduceOp::kMax});
    const int stop_requested = agreed[0].item<int>();
    int nonfinite_rank = agreed[1].item<int>() > 0 ? n - agreed[1].item<int>() : -1;
    const bool epoch_end = done % steps_per_epoch == 0;
    if (epoch_end && nonfinite_rank < 0) {
      validate(done, epoch);
      if (feed->validation_size() > 0) {
        // Rank 0 holds the reduced validation metrics; it tells the others.
        const double val_loss = rank == 0 ? last_validation.value("val_loss", 0.0) : 0.0;
        at::Tensor bad = at::tensor({std::isfinite(val_loss) ? 0 : 1}, at::kInt);
        world.allreduce(bad, {collectives::ReduceOp::kMax});
        if (bad.item<int>() != 0) {
          nonfinite_rank = 0;
          if (rank == 0) nonfinite_what = fmt::format("the validation loss is {}", val_loss);
        }
      }
    }
    if (nonfinite_rank >= 0) {
      if (c.train.on_nonfinite == "warn") {
        if (rank == nonfinite_rank && !nonfinite_warned) {
          HPCML_LOG_WARN("step {}: {} (train.on_nonfinite: warn, going on)", done, nonfinite_what);
        }
        nonfinite_warned = true;
        nonfinite_what.clear();
        nonfinite_step = -1;
      } else {
        if (rank == nonfinite_rank) {
          const std::string kept = newest_checkpoint(c.run.dir);
          std::fprintf(stderr, "%s\n",
                       fmt::format("hpcml: {}training stopped at step {}: {}; {} (train.on_nonfinite: warn goes on)",
                                   n > 1 ? rank_tag() + " " : std::string(), done, nonfinite_what,
                                   kept.empty() ? std::string("no checkpoint was written before it")
                                                : "the last checkpoint, with finite parameters, is " + kept)
                           .c_str());
          std::fflush(stderr);
        }
        progress.finish();
        exit_code = kExitError;
        break;
      }
    }
    const bool periodic = c.checkpoint.every_steps > 0 ? done % c.checkpoint.every_steps == 0 : epoch_end;
    if (stop_requested != 0) {
      checkpoint(done);
      progress.finish();
      HPCML_LOG_WARN("signal {} received: stopped at step {} after writing a checkpoint; exit code {} (requeue)",
                     stop_requested, done, kExitPreempted);
      exit_code = kExitPreempted;
      break;
    }
    if (periodic || done == total_steps) checkpoint(done);
  }
  progress.finish();

  const std::string digest = parameters_digest(model->named_parameters());
  if (c.run.trace) {
    const auto mine = trace::to_json_events(rank);
    at::Tensor bytes = at::empty({static_cast<int64_t>(mine.size())}, at::kByte);
    std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
    const auto all = world.allgather_varying(bytes);
    if (rank == 0) {
      std::string json = "[\n";
      for (size_t r = 0; r < all.size(); ++r) {
        json += (r ? ",\n" : "") + std::string(static_cast<const char*>(all[r].data_ptr()), all[r].numel());
      }
      write_atomically(run_dir / "trace.json", json + "\n]\n");
    }
  }
  if (rank == 0 && exit_code == 0) {
    nlohmann::json summary = {{"steps", total_steps},
                              {"ranks", n},
                              {"threads", ctx.threads.intra_op},
                              {"model", model->name()},
                              {"parameters", models::parameter_count(*model)},
                              {"parameters_sha256", digest},
                              {"hpcml_version", HPCML_VERSION},
                              {"git_revision", HPCML_GIT_REVISION}};
    if (!last_validation.is_null()) summary["validation"] = last_validation;
    write_atomically(run_dir / "summary.json", summary.dump(2) + "\n");
    HPCML_LOG_INFO("done: {} steps; parameters sha256 {}", total_steps, digest);
  }
  return exit_code;
}

int evaluate(Context& ctx, const TrainConfig& config, const std::string& checkpoint_path) {
  TrainConfig c = with_model_defaults(config);
  Activity activity("evaluating model '" + c.model.name + "'");
  HPCML_CHECK_AS(ConfigError, c.data.name == "synthetic" || !c.data.validation_files.empty(),
                 "config error: key 'data.validation_files': expected the files to evaluate on, found none");
  if (c.data.name == "hdf5" && c.data.files.empty()) c.data.files = c.data.validation_files;
  auto& world = *ctx.world;
  const std::string path = checkpoint_path.empty() ? agreed_newest_checkpoint(world, c.run.dir) : checkpoint_path;
  HPCML_CHECK_AS(ConfigError, !path.empty(), "eval: no checkpoint in '", c.run.dir,
                 "/checkpoints' (run.dir); give one with --checkpoint");
  Setup setup = set_up(c, ctx);
  auto& model = setup.model;
  {
    torch::serialize::InputArchive archive;
    open_checkpoint(path, archive);
    load_model_state(archive, path, *model);
  }
  Scores scores = validation_scores(*model, *setup.feed, setup.config);
  world.allreduce(scores.sums());
  HPCML_CHECK_AS(ConfigError, scores.samples() > 0, "eval: the evaluation set is empty");
  nlohmann::json calibration;
  if (density_task(setup.config)) calibration = flow_calibration(ctx, *model, *setup.feed, setup.config);
  if (world.rank() != 0) return 0;
  nlohmann::json result = {{"checkpoint", path}, {"model", model->name()}};
  result.update(metrics_json(scores, ""));
  if (!calibration.is_null()) result["calibration"] = calibration;
  result["parameters_sha256"] = parameters_digest(model->named_parameters());
  std::printf("eval %s (%s) on %.0f samples: %s\n", model->name().c_str(), path.c_str(), scores.samples(),
              metrics_text(scores).c_str());
  // Into run.dir/summary.json under "eval", keeping what training wrote.
  const fs::path summary_path = fs::path(c.run.dir) / "summary.json";
  nlohmann::json summary = nlohmann::json::object();
  if (fs::exists(summary_path)) {
    std::ifstream in(summary_path);
    summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (summary.is_discarded()) summary = nlohmann::json::object();
  }
  summary["eval"] = result;
  fs::create_directories(c.run.dir);
  write_atomically(summary_path, summary.dump(2) + "\n");
  std::printf("wrote %s\n", summary_path.string().c_str());
  return 0;
}

int infer(Context& ctx, const TrainConfig& config, const InferOptions& options) {
  const TrainConfig c = with_model_defaults(config);
  Activity activity("drawing posterior samples of model '" + c.model.name + "' for '" + options.input + "'");
  HPCML_CHECK_AS(ConfigError, density_task(c), "config error: key 'model.name': infer needs a density model "
                 "(nsf-gw), found ", c.model.name);
  HPCML_CHECK_AS(ConfigError, options.samples >= 2, "infer: --samples: expected at least 2, found ", options.samples);
  auto& world = *ctx.world;
  const std::string path = options.checkpoint.empty() ? agreed_newest_checkpoint(world, c.run.dir) : options.checkpoint;
  HPCML_CHECK_AS(ConfigError, !path.empty(), "infer: no checkpoint in '", c.run.dir,
                 "/checkpoints' (run.dir); give one with --checkpoint");
  const std::string theta_field = flow_field(c, "theta"), strain_field = flow_field(c, "strain");
  // The strain (and, when present, the true parameters) of the input file.
  io::H5DatasetOptions data_options;
  data_options.files = {options.input};
  data_options.expect.fields.push_back({strain_field, io::layout::ElementKind::kFloat, 1});
  io::H5Dataset probe(data_options);
  const auto& info = probe.files().front();
  const bool has_theta = info.field(theta_field) != nullptr;
  if (has_theta) data_options.expect.fields.push_back({theta_field, io::layout::ElementKind::kFloat, 1});
  io::H5Dataset data(data_options);
  const int64_t rows = data.size();
  const int64_t count = options.events == 0 ? rows - options.first : options.events;
  HPCML_CHECK_AS(ConfigError, options.first >= 0 && count >= 1 && options.first + count <= rows, "infer: --first ",
                 options.first, " --events ", options.events, ": expected rows within the ", rows, " of ",
                 options.input);
  // Rank 0 gathers every event's draws: samples (5 floats) and log weights (a double)
  // per draw, and the flow's batch of draws with its strain context on each rank.
  const int64_t strain_length = info.field(strain_field)->shape.dims[1];
  limits::check_fits_in_memory(static_cast<double>(count) * options.samples * (5 * 4 + 8) * 2 +
                                   static_cast<double>(options.samples) * (strain_length + 64) * 4,
                               "infer's posterior draws", "--samples x --events");
  check_output_path(options.output, {options.input, path}, "-o/--output");
  models::flows::NsfModel model(flow_options(c, 5, strain_length));
  {
    torch::serialize::InputArchive archive;
    open_checkpoint(path, archive);
    load_model_state(archive, path, model);
  }
  model.set_training(false);
  const auto gw = models::flows::gw_options_from_file(options.input);
  HPCML_CHECK_AS(ConfigError, gw.length == strain_length, "infer: ", options.input, ": attribute gw.length ",
                 gw.length, " differs from the strain width ", strain_length);

  // Events first + r, first + r + N, ... on rank r; each from its own seeded generator.
  const int rank = world.rank(), n = world.size();
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < count; i += n) mine.push_back(options.first + i);
  const int64_t draws = options.samples;
  at::Tensor samples = at::zeros({static_cast<int64_t>(mine.size()), draws, 5}, at::kFloat);
  at::Tensor log_weights = at::zeros({static_cast<int64_t>(mine.size()), draws}, at::kDouble);
  at::Tensor stats = at::zeros({static_cast<int64_t>(mine.size()), 4}, at::kDouble);  // row, ess, efficiency, log Z
  const auto start = Clock::now();
  for (size_t k = 0; k < mine.size(); ++k) {
    const auto block = data.read({mine[k]});
    at::Generator generator =
        at::detail::createCPUGenerator(io::datagen::derive_seed(options.seed, static_cast<uint64_t>(mine[k])));
    torch::NoGradGuard no_grad;
    const auto r = models::flows::gw_importance_sample(model.flow(), block.fixed.at(strain_field), draws, gw, generator);
    samples[static_cast<int64_t>(k)].copy_(r.samples);
    log_weights[static_cast<int64_t>(k)].copy_(r.log_weights);
    stats[static_cast<int64_t>(k)].copy_(
        at::tensor({static_cast<double>(mine[k]), r.ess, r.efficiency, r.log_evidence}, at::kDouble));
  }
  const double seconds = ms_between(start, Clock::now()) / 1000.0;
  // Gathered on rank 0 in row order: rank r's k-th event is row first + r + k N.
  const auto all_samples = world.allgather_varying(samples.reshape({-1}));
  const auto all_weights = world.allgather_varying(log_weights.reshape({-1}));
  const auto all_stats = world.allgather_varying(stats.reshape({-1}));
  if (rank != 0) return 0;
  at::Tensor out_samples = at::empty({count, draws, 5}, at::kFloat);
  at::Tensor out_log_weights = at::empty({count, draws}, at::kDouble);
  at::Tensor out_stats = at::empty({count, 4}, at::kDouble);
  for (int r = 0; r < n; ++r) {
    const auto s = all_samples[static_cast<size_t>(r)].reshape({-1, draws, 5});
    const auto w = all_weights[static_cast<size_t>(r)].reshape({-1, draws});
    const auto t = all_stats[static_cast<size_t>(r)].reshape({-1, 4});
    for (int64_t k = 0; k < t.size(0); ++k) {
      const int64_t i = r + k * n;
      out_samples[i].copy_(s[k]);
      out_log_weights[i].copy_(w[k]);
      out_stats[i].copy_(t[k]);
    }
  }
  const auto lse = at::logsumexp(out_log_weights, 1, /*keepdim=*/true);
  const auto out_weights = at::where(at::isfinite(lse), at::exp(out_log_weights - lse), at::zeros_like(out_log_weights));
  std::vector<io::Column> columns;
  columns.push_back(io::column_from_tensor("row", out_stats.select(1, 0).to(at::kLong)));
  columns.push_back(io::column_from_tensor("samples", out_samples, {"M_sun", "", "Mpc", "s", "rad"},
                                           models::flows::kGwParameterNames));
  columns.push_back(io::column_from_tensor("log_weights", out_log_weights));
  columns.push_back(io::column_from_tensor("weights", out_weights));
  columns.push_back(io::column_from_tensor("ess", out_stats.select(1, 1).contiguous()));
  columns.push_back(io::column_from_tensor("efficiency", out_stats.select(1, 2).contiguous()));
  columns.push_back(io::column_from_tensor("log_evidence", out_stats.select(1, 3).contiguous()));
  if (has_theta) {
    std::vector<int64_t> wanted(static_cast<size_t>(count));
    std::iota(wanted.begin(), wanted.end(), options.first);
    columns.push_back(io::column_from_tensor("parameters", data.read(wanted).fixed.at(theta_field).contiguous(),
                                             {"M_sun", "", "Mpc", "s", "rad"}, models::flows::kGwParameterNames));
  }
  io::Provenance provenance;
  provenance.model = model.name();
  provenance.checkpoint_digest = parameters_digest(model.named_parameters());
  provenance.config_yaml = config::to_yaml(c);
  provenance.input_file = options.input;
  provenance.first_row = options.first;
  provenance.rows = count;
  io::write_predictions(options.output, std::move(columns), provenance, "hpcml.gw.posterior");
  const auto efficiency = out_stats.select(1, 2);
  for (int64_t i = 0; i < count; ++i) {
    std::printf("event %lld: sample efficiency %.4f (ESS %.1f of %lld), log evidence %.3f\n",
                static_cast<long long>(out_stats[i][0].item<double>()), out_stats[i][2].item<double>(),
                out_stats[i][1].item<double>(), static_cast<long long>(draws), out_stats[i][3].item<double>());
  }
  std::printf("infer: %lld event(s) x %lld draws on %d rank(s) in %.1f s: median sample efficiency %.4f, mean %.4f; "
              "wrote %s\n",
              static_cast<long long>(count), static_cast<long long>(draws), n, seconds,
              efficiency.median().item<double>(), efficiency.mean().item<double>(), options.output.c_str());
  return 0;
}

void load_checkpoint_weights(const std::string& path, models::Model& model) {
  torch::serialize::InputArchive archive;
  open_checkpoint(path, archive);
  load_model_state(archive, path, model);
}

}  // namespace hpcml::launch
