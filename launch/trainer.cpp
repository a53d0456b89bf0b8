#include "launch/trainer.hpp"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "collectives/gradient_reducer.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/signals.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"
#include "hpcml/build_config.hpp"
#include "io/h5_tensors.hpp"
#include "launch/feed.hpp"
#include "launch/optim.hpp"
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

// The model, the config with its input fields resolved, and the feed, in the order
// they depend on each other (a TorchScript model's inputs are its argument names).
struct Setup {
  TrainConfig config;
  std::unique_ptr<Feed> feed;
  std::unique_ptr<models::Model> model;
};

Setup set_up(TrainConfig c, const Context& ctx) {
  Setup s;
  s.model = build_named_model(c);
  s.config = with_input_fields(std::move(c), s.model ? s.model->input_names() : std::vector<std::string>{"x"});
  s.feed = make_feed(s.config, ctx);
  if (!s.model) s.model = make_mlp_for(s.config, *s.feed);
  return s;
}

// A two-class classifier gets ROC metrics: zoo classifiers, or data.classes = 2.
bool binary_task(const TrainConfig& c, const Feed& feed) {
  if (feed.regression()) return false;
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
  return std::make_unique<torch::optim::SGD>(
      params, torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay));
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
  o.overlap = c.reducer.overlap == "always"  ? collectives::Overlap::kAlways
              : c.reducer.overlap == "never" ? collectives::Overlap::kNever
                                             : collectives::Overlap::kAuto;
  o.compression = c.reducer.compression == "bf16"   ? collectives::GradCompression::kBf16
                  : c.reducer.compression == "fp16" ? collectives::GradCompression::kFp16
                                                    : collectives::GradCompression::kNone;
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

// Loads a checkpoint into the model and optimizer; returns its header. A model of
// another shape is an error naming the first mismatching parameter.
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
  return c;
}

// The metrics of `model` over this rank's share of the feed's validation set. No
// collectives: allreduce the result's sums().
Scores validation_scores(models::Model& model, Feed& feed, const TrainConfig& c) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  Scores scores(feed.regression(), binary_task(c, feed));
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

int train(Context& ctx, const TrainConfig& config) {
  TrainConfig c = with_model_defaults(config);
  if (c.run.dir.empty()) c.run.dir = ctx.env.job_id ? "runs/" + *ctx.env.job_id : "runs/train";
  auto& world = *ctx.world;
  const int rank = world.rank();
  const int n = world.size();
  const fs::path run_dir = c.run.dir;
  // The model and its data: the synthetic set in memory, or this rank's shard of HDF5 files.
  Setup setup = set_up(c, ctx);
  c = std::move(setup.config);
  auto feed = std::move(setup.feed);
  auto model = std::move(setup.model);
  const std::string config_yaml = config::to_yaml(c);
  if (rank == 0) {
    fs::create_directories(checkpoint_dir(c.run.dir));
    write_atomically(run_dir / "config.yaml", config_yaml);
  }
  world.barrier();
  install_stop_handlers();
  if (c.run.trace) {
    trace::enable(true);
    trace::name_thread("main");
  }

  const bool regression = feed->regression();
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

  const int64_t steps_per_epoch = feed->steps_per_epoch();
  const int64_t total_steps = c.train.max_steps > 0 ? c.train.max_steps : c.train.epochs * steps_per_epoch;
  int64_t start_step = 0;
  if (c.run.resume == "auto") {
    const std::string chosen = agreed_newest_checkpoint(world, c.run.dir);
    if (!chosen.empty()) {
      const auto header = load_checkpoint(chosen, *model, *optimizer, rank, n);
      start_step = header.step;
      if (header.world_size != n || header.threads != ctx.threads.intra_op) {
        HPCML_LOG_WARN("resuming a checkpoint written by {} rank(s) x {} thread(s) on {} x {}: the data is re-sharded "
                       "and the result will not be bit-identical to an uninterrupted run",
                       header.world_size, header.threads, n, ctx.threads.intra_op);
      }
      if (rank == 0) truncate_metrics(run_dir / "metrics.jsonl", start_step);
      HPCML_LOG_INFO("resumed from {} at step {}", chosen, start_step);
    } else {
      HPCML_LOG_INFO("no checkpoint in {}: starting fresh", (run_dir / "checkpoints").string());
    }
  } else if (rank == 0) {
    write_atomically(run_dir / "metrics.jsonl", "");
  }
  world.barrier();

  std::ofstream metrics;
  if (rank == 0) metrics.open(run_dir / "metrics.jsonl", std::ios::app);
  HPCML_LOG_INFO("training {} ({} parameters) on {} rank(s) x {} thread(s): {} steps of {} x {} samples, {} "
                 "step(s) per epoch, overlap {}",
                 model->name(), models::parameter_count(*model), n, ctx.threads.intra_op, total_steps,
                 c.train.batch_size, n, steps_per_epoch, reducer.overlapping() ? "on" : "off");

  Progress progress(c.run.progress, total_steps, ctx.env.launcher != Launcher::kNone);
  // Per log interval: loss sum, correct, samples, data, forward, backward, wait, optimizer (ms).
  std::vector<double> acc(8, 0.0);
  auto interval_start = Clock::now();
  int exit_code = 0;
  const int micro = c.train.gradient_accumulation;
  const int64_t micro_size = c.train.batch_size / micro;

  auto checkpoint = [&](int64_t step_done) {
    const auto rng_states = world.allgather_varying(at::detail::getDefaultCPUGenerator().get_state());
    if (rank == 0) {
      save_checkpoint(checkpoint_path(c.run.dir, step_done), step_done, ctx, *model, *optimizer, config_yaml,
                      rng_states);
      prune_checkpoints(c.run.dir, c.checkpoint.keep);
    }
    world.barrier();
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
    double forward_ms = 0, backward_ms = 0, wait_ms = 0, loss_sum = 0, correct = 0;
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
      }
      backward_ms += ms_between(tb, Clock::now());
      loss_sum += loss.item<double>() * static_cast<double>(micro_size);
      correct += metric_sum(regression, logits, part.target);
    }
    backward_ms -= wait_ms;
    auto t3 = Clock::now();
    {
      trace::Span span("optimizer", "compute");
      if (c.train.clip_grad_norm > 0) {
        // Gradients are averages already: the norm is the same on every rank.
        torch::nn::utils::clip_grad_norm_(params, c.train.clip_grad_norm);
      }
      optimizer->step();
    }
    const double optimizer_ms = ms_between(t3, Clock::now());
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
            {metric_name(regression), metric_value(regression, v[1], v[2])},
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
                         epoch, v[0] / v[2], metric_name(regression), metric_value(regression, v[1], v[2]), lr,
                         v[2] / seconds);
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      interval_start = Clock::now();
    }

    // A stop request on any rank stops every rank at this same step.
    at::Tensor stop = at::tensor({stop_signal()}, at::kInt);
    world.allreduce(stop, {collectives::ReduceOp::kMax});
    const bool epoch_end = done % steps_per_epoch == 0;
    if (epoch_end) validate(done, epoch);
    const bool periodic = c.checkpoint.every_steps > 0 ? done % c.checkpoint.every_steps == 0 : epoch_end;
    if (stop.item<int>() != 0) {
      checkpoint(done);
      progress.finish();
      HPCML_LOG_WARN("signal {} received: stopped at step {} after writing a checkpoint; exit code {} (requeue)",
                     stop.item<int>(), done, kExitPreempted);
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
  if (world.rank() != 0) return 0;
  HPCML_CHECK_AS(ConfigError, scores.samples() > 0, "eval: the evaluation set is empty");
  nlohmann::json result = {{"checkpoint", path}, {"model", model->name()}};
  result.update(metrics_json(scores, ""));
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

}  // namespace hpcml::launch
