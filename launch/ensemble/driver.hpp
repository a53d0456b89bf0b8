/// @file
/// `hpcml ensemble -c` (internal to launch/): members x variations trained on rank groups of
/// the farm, journaled and resumable, with summary.json listing every member (docs/ensembles.md).
///
/// Crashes. Open MPI cannot survive a dead rank: a member whose process crashes ends the job.
/// The journal holds a "start" line for every member handed out and an end line ("done",
/// "failed", "interrupted") for every member that ended; a start without an end is an attempt
/// that crashed. The ensemble's next run (a job script re-runs it, jobs/ensemble.sbatch) runs
/// such members again, from their newest checkpoint, until one has crashed
/// 1 + ensemble.max_retries times: then it is recorded "crashed" and not run again. A job
/// killed outright counts as a crash of every member it was training. A member whose training
/// diverges (a NaN or Inf loss) ends its task normally: recorded "failed", never retried
/// with the same seed.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "launch/ensemble/ensemble_config.hpp"
#include "launch/runtime.hpp"

namespace hpcml::launch::ensemble {

/// Trains the ensemble on every rank (collective): the world splits into groups of
/// ensemble.ranks_per_member ranks, each training one member (or pack) at a time as the farm
/// hands them out. Journal: <dir>/journal.jsonl; a re-run resumes. Writes <dir>/ensemble.json
/// (identity, first run) and <dir>/summary.json. Returns 0 once every member has ended
/// (complete, failed or crashed), kExitPreempted after a stop signal.
/// @throws ConfigError for a dir that holds another ensemble, or groups that do not fit.
int run_ensemble(Context& context, const EnsembleConfig& config);

/// Crashed attempts per task id in a farm journal: "start" lines without a matching end line.
std::map<std::string, int> crashed_attempts(const std::string& journal);

}  // namespace hpcml::launch::ensemble
