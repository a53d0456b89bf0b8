/// @file
/// Data-parallel training: the step loop, validation, metrics, checkpoints, resume.
#pragma once

#include <string>

#include "launch/runtime.hpp"
#include "launch/train_config.hpp"

namespace hpcml::launch {

/// Checkpoint file format version; readers refuse other versions.
inline constexpr int64_t kCheckpointFormat = 1;

/// Runs `config` on every rank of `context.world` (collective). Returns the exit
/// code: 0, or kExitPreempted after a SIGUSR1/SIGTERM stop (checkpoint written).
///
/// Writes into config.run.dir (rank 0): config.yaml, metrics.jsonl, summary.json,
/// checkpoints/step-<N>.pt and, with run.trace, trace.json.
int train(Context& context, const TrainConfig& config);

/// Evaluates checkpoint `checkpoint` (or, when empty, the newest in run.dir) on the
/// validation set of `config` over all ranks; rank 0 prints the loss and the task's
/// metric and writes them under "eval" in run.dir/summary.json. Returns 0.
int evaluate(Context& context, const TrainConfig& config, const std::string& checkpoint);

/// The newest checkpoint in `dir`/checkpoints that opens and carries this format
/// version, or "" when there is none.
std::string newest_checkpoint(const std::string& run_dir);

/// Writes the parameters of checkpoint `path` to an HDF5 file, one dataset per
/// parameter name, with the step and hpcml version as attributes.
void export_checkpoint(const std::string& path, const std::string& out);

/// SHA-256 (hex) of tensors' bytes, in the given order with their names.
std::string parameters_digest(const std::vector<std::pair<std::string, at::Tensor>>& named);

}  // namespace hpcml::launch
