/// @file
/// The work farm: one coordinator hands tasks to workers (single ranks or rank
/// groups) as they become free, and journals every event.
///
/// Campaigns hand out file chunks, HPO hands out trials, ensembles hand out members:
/// each is a run_farm() with its own tasks and task function.
///
/// @code
/// FarmPlan plan;
/// plan.tasks = {{"a", {{"seconds", 1}}}, {"b", {{"seconds", 2}}}};
/// FarmOptions options;
/// options.ranks_per_worker = 2;
/// options.journal = "run/farm.jsonl";
/// FarmReport report = run_farm(world, plan, [](const Task& task, collectives::Backend& group) {
///   return nlohmann::json{{"value", compute(task.spec, group)}};  // every rank of the group runs this
/// }, options);
/// @endcode
///
/// Roles. Rank 0 of the communicator coordinates, on a thread of its own, and also
/// works (its main thread is worker 0's first rank) unless `coordinator_works` is
/// false. Coordinating costs a probe loop and one fsync'ed journal line per event,
/// far below one task, so on small allocations a dedicated rank would waste a
/// share of the job; on many workers with short tasks a dedicated coordinator
/// answers faster. Workers are consecutive ranks: worker w is ranks
/// [first + w*k, first + (w+1)*k) with k = ranks_per_worker (first = 0, or 1 when
/// the coordinator does not work); ranks left over are idle.
///
/// Failures. A task function that throws an hpcml::Error (a bad file, a diverged
/// training) fails that task only: the reason is journaled and the farm goes on. A
/// dead rank still ends the job (Open MPI cannot survive it), and a task that runs
/// past task_timeout_s ends it with one line naming the task and the worker.
///
/// Stop signals. After SIGUSR1 or SIGTERM (a batch system's notice) the coordinator
/// hands out no more tasks; a running task that stops early for the signal throws
/// TaskInterrupted (a training first writes its checkpoint), which the farm journals
/// as "interrupted", not as failed; run_farm returns with `interrupted` set once every
/// worker is idle, and the driver exits for a requeue. The re-run runs those tasks again.
///
/// Resume. With a journal, a re-run with the same journal continues: tasks done (or
/// failed, unless retry_failed) are not run again; tasks that had started are run
/// again from the beginning, so a task must be safe to re-run (write outputs to a
/// temporary name and rename).
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "collectives/backend.hpp"
#include "core/error.hpp"

namespace hpcml::launch::farm {

struct Task {
  std::string id;        ///< unique within a farm (and its journal)
  nlohmann::json spec;   ///< what to do; the same id must always carry the same spec
};

/// Thrown by a task function that stopped early for a stop signal (see above).
class TaskInterrupted : public Error {
  using Error::Error;
};

/// Thrown by a task function for a failure that is not the task's own (the output
/// disk is full, the output directory unwritable): not journaled as the task's
/// failure; it ends the job with its one line, as any error outside a task does.
class FarmFatal : public Error {
  using Error::Error;
};

struct TaskResult {
  std::string id;
  bool ok = false;
  nlohmann::json result;  ///< what the task function returned (ok)
  std::string error;      ///< the failure's one-line message (!ok)
  int worker = -1;
  double seconds = 0;
  bool replayed = false;  ///< read back from the journal of an earlier run
};

/// The coordinator's side: the tasks known up front and how results create more.
struct FarmPlan {
  std::vector<Task> tasks;
  /// Called on the coordinator for every result, in the order they arrive (and,
  /// on a resume, first for every result in the journal, in journal order). Tasks it
  /// returns join the queue; an id the farm already knows is ignored, so a
  /// deterministic callback can be replayed safely. The farm ends when no task is
  /// queued or running and the last callback added none.
  std::function<std::vector<Task>(const TaskResult&)> on_result;
  /// Tasks found finished outside the journal (a campaign's committed output parts whose
  /// journal line was lost to a kill; what other jobs' journals say), with their
  /// results: journaled as done or failed ("recovered": true) and replayed through
  /// on_result like journaled results.
  std::vector<TaskResult> already_done;

  // Sharing tasks with other jobs (a campaign run by several jobs at once); all called
  // on the coordinator, all optional.
  /// True when this job may run `task` now (it holds the task's claim); false when
  /// another live job holds it: the task waits and is offered again about every second.
  std::function<bool(const Task&)> claim;
  /// For a waiting task: its result when another job finished it meanwhile (journaled
  /// as done, "recovered": true), else nothing.
  std::function<std::optional<TaskResult>(const Task&)> done_elsewhere;
  /// Called about every second while the farm runs (claims renew their heartbeat).
  std::function<void()> tick;
};

/// Runs `task` on every rank of a worker; `group` is the worker's communicator
/// (1 rank for single-rank workers). The first rank's return value is the result.
using TaskFunction = std::function<nlohmann::json(const Task& task, collectives::Backend& group)>;

struct FarmOptions {
  int ranks_per_worker = 1;
  bool coordinator_works = true;
  std::string journal;          ///< JSONL journal path; "" for none (no resume)
  bool retry_failed = false;    ///< on a resume, run tasks that failed before again
  double task_timeout_s = 0;    ///< a task running longer ends the job (0: no limit)
  double progress_s = 30;       ///< period of progress lines in batch logs
  std::string name = "farm";    ///< in log lines and the journal
};

struct FarmReport {
  std::vector<TaskResult> results;  ///< on the coordinator: every task's outcome, journal's included
  int done = 0, failed = 0;         ///< on the coordinator
  int tasks_run = 0;                ///< by this rank's worker in this run
  int workers = 0;
  double seconds = 0;
  bool interrupted = false;         ///< stopped by a signal before every task ran (on every rank)
};

/// Seconds since the Unix epoch: the clock of the journal's "t" stamps, for drivers that time
/// their tasks on the same clock.
double unix_now();

/// Collective over `comm`: every rank calls it with the same options (the plan is
/// read on the coordinator only). Returns when every task has finished.
/// Throws ConfigError for options that cannot form workers, IoError for a journal
/// that cannot be read or written, or whose tasks disagree with the plan.
FarmReport run_farm(const collectives::BackendPtr& comm, const FarmPlan& plan, const TaskFunction& task,
                    const FarmOptions& options);

}  // namespace hpcml::launch::farm
