// The checkpoint format: one writer, one open/read path (see checkpoint.hpp).
#include "launch/train/checkpoint.hpp"


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
#include "launch/train/grad_scaler.hpp"
#include "launch/train/setup.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

fs::path checkpoint_dir(const std::string& run_dir) { return fs::path(run_dir) / "checkpoints"; }

fs::path checkpoint_path(const std::string& run_dir, int64_t step) {
  return checkpoint_dir(run_dir) / ("step-" + std::to_string(step) + ".pt");
}

RngStates gather_rng_states(collectives::Backend& world, const c10::Device& device) {
  RngStates states;
  states.cpu = world.allgather_varying(at::detail::getDefaultCPUGenerator().get_state());
  // Through the generic accessor: no CUDA header, and the CPU-only build never calls it.
  const at::Tensor cuda = device.is_cuda() ? at::globalContext().defaultGenerator(device).get_state()
                                           : at::empty({0}, at::kByte);
  states.cuda = world.allgather_varying(cuda);
  return states;
}

void save_checkpoint(const fs::path& path, int64_t step, const Context& ctx, const models::Model& model,
                     torch::optim::Optimizer& optimizer, const std::string& config_yaml, const RngStates& rng,
                     const GradScaler* scaler) {
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
    archive.write("param_" + std::to_string(i++), t.detach().cpu());  // readable without the device
  }
  archive.write("param_names", c10::IValue(names));
  i = 0;
  std::string buffer_names;
  for (const auto& [name, t] : model.named_buffers()) {
    buffer_names += name + "\n";
    archive.write("buffer_" + std::to_string(i++), t.cpu(), true);
  }
  archive.write("buffer_names", c10::IValue(buffer_names));
  torch::serialize::OutputArchive opt_archive;
  optimizer.save(opt_archive);
  archive.write("optimizer", opt_archive);
  // Dropout and other random ops draw from torch's global generators: every rank's states.
  for (size_t r = 0; r < rng.cpu.size(); ++r) archive.write("rng_torch_" + std::to_string(r), rng.cpu[r]);
  for (size_t r = 0; r < rng.cuda.size(); ++r) {
    if (rng.cuda[r].numel() > 0) archive.write("rng_cuda_" + std::to_string(r), rng.cuda[r].cpu());
  }
  if (scaler != nullptr) {
    archive.write("grad_scaler_scale", c10::IValue(scaler->scale()));
    archive.write("grad_scaler_growth_tracker", c10::IValue(scaler->growth_tracker()));
    archive.write("grad_scaler_skipped", c10::IValue(scaler->skipped()));
  }
  const fs::path tmp = path.string() + ".tmp";
  archive.save_to(tmp.string());
  fsync_file(tmp.string());
  fs::rename(tmp, path);
}

namespace {

int64_t read_int(torch::serialize::InputArchive& archive, const char* key, const std::string& path) {
  c10::IValue v;
  HPCML_CHECK_AS(IoError, archive.try_read(key, v) && v.isInt(), "checkpoint '", path, "': no integer '", key, "'");
  return v.toInt();
}

// Opens a checkpoint and checks its format version (IoError naming the file otherwise).
// Its tensors are read onto `device` (the optimizer's state where the parameters are).
void open_checkpoint(const std::string& path, torch::serialize::InputArchive& archive,
                     const c10::Device& device = c10::kCPU) {
  try {
    archive.load_from(path, device);
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

}  // namespace

CheckpointHeader load_checkpoint(const std::string& path, models::Model& model, torch::optim::Optimizer& optimizer,
                                 int rank, int world_size, GradScaler* scaler) {
  torch::serialize::InputArchive archive;
  open_checkpoint(path, archive, model_device(model));
  CheckpointHeader header{read_int(archive, "step", path), read_int(archive, "world_size", path),
                          read_int(archive, "threads", path)};
  load_model_state(archive, path, model);
  torch::serialize::InputArchive opt_archive;
  archive.read("optimizer", opt_archive);
  optimizer.load(opt_archive);
  // This rank's random streams, when the rank count is unchanged.
  at::Tensor rng;
  if (header.world_size == world_size && archive.try_read("rng_torch_" + std::to_string(rank), rng)) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global one
    generator.set_state(rng.cpu());
  }
  const c10::Device device = model_device(model);
  if (device.is_cuda() && header.world_size == world_size) {
    at::Tensor cuda_rng;
    if (archive.try_read("rng_cuda_" + std::to_string(rank), cuda_rng)) {
      at::Generator generator = at::globalContext().defaultGenerator(device);  // a handle to the device's
      generator.set_state(cuda_rng.cpu());
    } else {
      HPCML_LOG_WARN("checkpoint '{}' holds no CUDA generator state for rank {} (written on the CPU, or by hpcml "
                     "before 2026-12-05): dropout on {} resumes with a fresh random stream", path, rank, device.str());
    }
  }
  c10::IValue scale, tracker, skipped;
  if (scaler != nullptr && archive.try_read("grad_scaler_scale", scale)) {
    const bool valid = scale.isDouble() && archive.try_read("grad_scaler_growth_tracker", tracker) &&
                       archive.try_read("grad_scaler_skipped", skipped) && tracker.isInt() && skipped.isInt() &&
                       std::isfinite(scale.toDouble()) && scale.toDouble() > 0 && tracker.toInt() >= 0 &&
                       skipped.toInt() >= 0;
    auto shown = [](const c10::IValue& v) {
      return v.isDouble() ? fmt::format("{}", v.toDouble()) : v.isInt() ? std::to_string(v.toInt()) : v.tagKind();
    };
    HPCML_CHECK_AS(IoError, valid, "checkpoint '", path, "': expected a positive finite grad_scaler_scale and "
                   "grad_scaler_growth_tracker, grad_scaler_skipped >= 0, found ", shown(scale), ", ", shown(tracker),
                   ", ", shown(skipped));
    scaler->restore(scale.toDouble(), tracker.toInt(), skipped.toInt());
  } else if (scaler != nullptr) {
    HPCML_LOG_WARN("checkpoint '{}' holds no loss scale (written without train.precision: fp16): the scale starts "
                   "at {}", path, scaler->scale());
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


std::string parameters_digest(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& [name, t] : named) {
    const at::Tensor c = t.detach().cpu().contiguous();
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
  return world.broadcast_string(world.rank() == 0 ? newest_checkpoint(run_dir) : std::string());
}

ResumePoint resume_from_newest_checkpoint(const Context& ctx, const std::string& run_dir, models::Model& model,
                                          torch::optim::Optimizer& optimizer, GradScaler* scaler) {
  ResumePoint start;
  auto& world = *ctx.world;
  const int n = world.size();
  const std::string chosen = agreed_newest_checkpoint(world, run_dir);
  if (chosen.empty()) {
    HPCML_LOG_INFO("no checkpoint in {}: starting fresh", (fs::path(run_dir) / "checkpoints").string());
    return start;
  }
  const auto header = load_checkpoint(chosen, model, optimizer, world.rank(), n, scaler);
  start.step = header.step;
  start.resumed = true;
  if (header.world_size != n || header.threads != ctx.threads.intra_op) {
    HPCML_LOG_WARN("resuming a checkpoint written by {} rank(s) x {} thread(s) on {} x {}: the data is re-sharded "
                   "and the result will not be bit-identical to an uninterrupted run",
                   header.world_size, header.threads, n, ctx.threads.intra_op);
  }
  HPCML_LOG_INFO("resumed from {} at step {}", chosen, start.step);
  return start;
}

// A zoo model names the fields it reads and predicts: they are the data defaults.
void load_checkpoint_weights(const std::string& path, models::Model& model) {
  torch::serialize::InputArchive archive;
  open_checkpoint(path, archive);
  load_model_state(archive, path, model);
}


}  // namespace hpcml::launch
