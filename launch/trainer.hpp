/// @file
/// Data-parallel training: the step loop, validation, metrics, checkpoints, resume.
#pragma once

#include <string>

#include "launch/runtime.hpp"
#include "launch/train_config.hpp"

namespace hpcml::models {
class Model;
}  // namespace hpcml::models

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

/// `hpcml infer`: importance-sampled posteriors of a density model for the events of a strain file.
struct InferOptions {
  std::string checkpoint;  ///< checkpoint file ("": the newest in run.dir)
  std::string input;       ///< HDF5 file with the strain field (datagen gw layout and attributes)
  std::string output;      ///< HDF5 file to write (atomically: a temporary name, then renamed)
  int64_t samples = 5000;  ///< proposal draws per event
  int64_t first = 0;       ///< first event (row) of `input`
  int64_t events = 1;      ///< events from `first` (0: to the end of the file)
  uint64_t seed = 1;       ///< event i draws from a generator seeded by (seed, i): independent of the ranks
};

/// Draws `samples` θ from the flow of `checkpoint` (model nsf-gw) for each event of
/// `input` and weights them against the toy model's exact likelihood and prior
/// (importance sampling, docs/flows.md). Collective: events are spread over the ranks
/// and gathered on rank 0, which prints each event's sample efficiency and log
/// evidence and writes `output` (schema hpcml.gw.posterior: row, samples, log_weights,
/// weights, ess, efficiency, log_evidence, and the true parameters when the input has
/// them) with provenance attributes. Returns 0.
int infer(Context& context, const TrainConfig& config, const InferOptions& options);

/// The newest checkpoint in `dir`/checkpoints that opens and carries this format
/// version, or "" when there is none.
std::string newest_checkpoint(const std::string& run_dir);

/// Copies the parameters and buffers of checkpoint `path` into `model` (inference:
/// no optimizer state). Throws IoError for an unreadable file, another format
/// version, or a model of another shape (naming the first mismatching parameter).
void load_checkpoint_weights(const std::string& path, models::Model& model);

/// Writes the parameters of checkpoint `path` to an HDF5 file, one dataset per
/// parameter name, with the step and hpcml version as attributes.
void export_checkpoint(const std::string& path, const std::string& out);

/// SHA-256 (hex) of tensors' bytes, in the given order with their names.
std::string parameters_digest(const std::vector<std::pair<std::string, at::Tensor>>& named);

}  // namespace hpcml::launch
