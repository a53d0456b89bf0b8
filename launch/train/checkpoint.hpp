/// @file
/// The checkpoint format of `hpcml train`: one writer and one open/read path, used by
/// training (resume), evaluation, inference, export and the inference service.
///
/// A checkpoint (run.dir/checkpoints/step-<N>.pt, a LibTorch archive) holds the format
/// version, step, rank and thread counts, the resolved config, the parameters and
/// buffers by name, the optimizer state, every rank's torch generator states (the CPU
/// one, and the CUDA one of a rank that computes on a GPU) and, for fp16 training, the
/// loss scale (grad_scaler.hpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "collectives/backend.hpp"
#include "launch/runtime.hpp"

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace hpcml::models {
class Model;
}  // namespace hpcml::models

namespace hpcml::launch {

class GradScaler;

/// Checkpoint file format version; readers refuse other versions.
inline constexpr int64_t kCheckpointFormat = 1;

/// run_dir/checkpoints, and the checkpoint of `step` in it.
std::filesystem::path checkpoint_dir(const std::string& run_dir);
std::filesystem::path checkpoint_path(const std::string& run_dir, int64_t step);

/// What a checkpoint says about the run that wrote it.
struct CheckpointHeader {
  int64_t step = 0;
  int64_t world_size = 0;
  int64_t threads = 0;
};

/// Every rank's random streams, by rank: torch's CPU generator, and the CUDA generator
/// of the rank's device (an empty tensor for a rank on the CPU).
struct RngStates {
  std::vector<at::Tensor> cpu, cuda;
};

/// This rank's generator states on every rank (collective): dropout and other random
/// ops draw from them, so an exact resume restores them.
RngStates gather_rng_states(collectives::Backend& world, const c10::Device& device);

/// Writes a checkpoint to `path` atomically (a temporary name, fsync, rename). Rank 0;
/// `rng` holds every rank's generator states; `scaler`, when given, its state.
void save_checkpoint(const std::filesystem::path& path, int64_t step, const Context& ctx, const models::Model& model,
                     torch::optim::Optimizer& optimizer, const std::string& config_yaml, const RngStates& rng,
                     const GradScaler* scaler = nullptr);

/// Loads a checkpoint into the model and optimizer (and, at the same rank count, this
/// rank's generator states: the CUDA one when the model is on a GPU, with a warning when
/// the checkpoint holds none; and into `scaler`, when given, the loss scale it holds, else the
/// scaler keeps its initial state); returns its header. Throws IoError naming the file for
/// an unreadable file, another format version, or a model of another shape (naming the
/// first mismatching parameter).
CheckpointHeader load_checkpoint(const std::string& path, models::Model& model, torch::optim::Optimizer& optimizer,
                                 int rank, int world_size, GradScaler* scaler = nullptr);

/// Copies the parameters and buffers of checkpoint `path` into `model` (inference:
/// no optimizer state). Throws IoError as load_checkpoint.
void load_checkpoint_weights(const std::string& path, models::Model& model);

/// Keeps the newest `keep` checkpoints of run_dir, deleting the others.
void prune_checkpoints(const std::string& run_dir, int keep);

/// The newest checkpoint in `dir`/checkpoints that opens and carries this format
/// version, or "" when there is none.
std::string newest_checkpoint(const std::string& run_dir);

/// newest_checkpoint as rank 0 finds it (it alone opens the files), on every rank.
std::string agreed_newest_checkpoint(collectives::Backend& world, const std::string& run_dir);

/// Where a resumed run starts: the step of the checkpoint it loaded, or 0 (`resumed` false).
struct ResumePoint {
  int64_t step = 0;
  bool resumed = false;
};

/// run.resume: auto. Loads the newest checkpoint of `run_dir` that every rank agrees on
/// (agreed_newest_checkpoint) into `model` and `optimizer` on every rank of
/// `context.world` (collective); logs which, and warns when it was written by another
/// rank or thread count. Returns step 0, not resumed, when `run_dir` holds none.
ResumePoint resume_from_newest_checkpoint(const Context& context, const std::string& run_dir, models::Model& model,
                                          torch::optim::Optimizer& optimizer, GradScaler* scaler = nullptr);

/// Writes the parameters of checkpoint `path` to an HDF5 file, one dataset per
/// parameter name, with the step and hpcml version as attributes.
void export_checkpoint(const std::string& path, const std::string& out);

/// SHA-256 (hex) of tensors' bytes, in the given order with their names.
std::string parameters_digest(const std::vector<std::pair<std::string, at::Tensor>>& named);

}  // namespace hpcml::launch
