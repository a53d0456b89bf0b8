/// @file
/// Data-parallel training (the step loop, metrics, checkpoints, resume) and `hpcml eval`.
/// The checkpoint format is in checkpoint.hpp, the set-up from a config in setup.hpp.
#pragma once

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

/// Evaluates checkpoint `checkpoint` (or, when empty, the newest in run.dir) on the
/// validation set of `config` over all ranks; rank 0 prints the loss and the task's
/// metric and writes them under "eval" in run.dir/summary.json. Returns 0.
int evaluate(Context& context, const TrainConfig& config, const std::string& checkpoint);

}  // namespace hpcml::launch
