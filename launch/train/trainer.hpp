/// @file
/// Data-parallel training (the step loop, metrics, checkpoints, resume) and `hpcml eval`.
/// The checkpoint format is in checkpoint.hpp, the set-up from a config in setup.hpp.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "launch/runtime.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::models {
class Model;
}  // namespace hpcml::models

namespace hpcml::launch {

/// Runs `config` on every rank of `context.world` (collective). Returns the exit
/// code: 0, or kExitPreempted after a SIGUSR1/SIGTERM stop (checkpoint written).
///
/// Writes into config.run.dir (rank 0): config.yaml, metrics.jsonl, summary.json,
/// checkpoints/step-<N>.pt and, with run.trace, trace.json.
int train(Context& context, const TrainConfig& config);

/// How far one call of train_part goes (HPO's rungs: a trial trained rung by rung).
struct TrainPart {
  /// Stop after this many epochs (or optimizer steps, with `steps`) of the run; 0: the whole
  /// run. The learning-rate schedule stays the whole run's, and a checkpoint is written
  /// where it stops, so calling again with a larger `until` (run.resume: auto) continues
  /// exactly as one uninterrupted run.
  int64_t until = 0;
  bool steps = false;
  /// Also validate where it stops when that is not an epoch's end (so the caller always
  /// gets the metric there; needs a validation set).
  bool validate_at_end = false;
};

/// What train_part did.
struct TrainOutcome {
  int exit_code = 0;          ///< as train()'s
  int64_t step = -1;          ///< the step it stopped at (exit code 0), else -1
  int64_t total_steps = 0;    ///< of the whole run
  bool complete = false;      ///< the whole run is done (summary.json written)
  nlohmann::json validation;  ///< rank 0: the last validation's metrics line (null when none ran)
  std::string failure;        ///< after a non-finite stop (exit code 1), on every rank: why, one line
  /// The gradient reducer's layout: parameter_bytes, buckets_bytes (reduction order),
  /// transport, overlap and the reducer's bucket options (`hpcml bench scaling`'s profile).
  nlohmann::json layout;
};

/// train() up to `part` (collective). A non-finite loss or validation metric (with
/// train.on_nonfinite: error) returns exit code 1 with `failure` set; nothing is thrown for it.
TrainOutcome train_part(Context& context, const TrainConfig& config, const TrainPart& part);

/// Evaluates checkpoint `checkpoint` (or, when empty, the newest in run.dir) on the
/// validation set of `config` over all ranks; rank 0 prints the loss and the task's
/// metric and writes them under "eval" in run.dir/summary.json. Returns 0.
int evaluate(Context& context, const TrainConfig& config, const std::string& checkpoint);

}  // namespace hpcml::launch
