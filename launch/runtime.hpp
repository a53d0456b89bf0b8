/// @file
/// What every subcommand sets up after parsing its config: logging, the thread
/// budget, the runtime environment and the world backend.
#pragma once

#include <string>
#include <vector>

#include "collectives/backend.hpp"
#include "collectives/device.hpp"
#include "core/runtime_env.hpp"
#include "launch/run_config.hpp"

namespace hpcml::launch {

/// This rank's cores and the threads it was given.
struct ThreadBudget {
  std::string cpus;      ///< cores this rank may run on, e.g. "0" or "0-3"
  int num_cpus = 1;      ///< how many
  int intra_op = 1;      ///< LibTorch intra-op threads (at::get_num_threads after setting)
  int blas = -1;         ///< OpenBLAS threads, or -1 when OpenBLAS is not the BLAS in use
};

/// Sets LibTorch's and OpenBLAS's thread counts for this rank: `requested`, or
/// when 0, the cores this rank is bound to (divided among the node's ranks when
/// the rank is not bound).
ThreadBudget apply_thread_budget(int requested, int local_size);

/// The set-up shared by all subcommands.
struct Context {
  RunConfig config;
  RuntimeEnv env;
  ThreadBudget threads;
  collectives::BackendPtr world;  ///< over all ranks
  collectives::DeviceChoice device;  ///< runtime.device resolved for this rank
};

/// Logging, RuntimeEnv::detect (collective), thread budget, world backend.
/// Collective over MPI_COMM_WORLD when MPI is up.
/// with_mpi false: a process that no launcher started, running a command that needs no MPI
/// (cli::CommonOptions::needs_mpi); its world is the local backend of one rank, whatever
/// runtime.backend says, and MPI is not started.
Context make_context(const RunConfig& config, bool with_mpi = true);

/// The context of a rank group (a farm's worker, an HPO trial, an ensemble member):
/// `parent` with `group` as its world and `config`'s runtime and log settings, and
/// this process's log lines counted in the group and naming it. Drivers below the
/// CLI take their ranks from context.world only, so they run unchanged on a group.
Context group_context(const Context& parent, collectives::BackendPtr group, const RunConfig& config);

/// Throws ConfigError naming runtime.device when this rank's device is not the CPU:
/// `command` (infer, tracking, ensemble, hpo, bench infer|scaling) runs on the CPU today (docs/gpu.md).
void require_cpu(const Context& context, const std::string& command);

/// What in `dir` belongs to a run: which of `files` exist, and how many files the
/// subdirectory `checkpoints` holds ("config.yaml, metrics.jsonl, 2 checkpoint(s)");
/// "" when none (missing, empty, or only other files).
std::string describe_run(const std::string& dir, const std::vector<std::string>& files,
                         const std::string& checkpoints = "");

/// Where a run that is replaced (run.overwrite) is moved: "<dir>.replaced-<UTC time>",
/// with -2, -3, ... when taken. Nothing is deleted.
std::string moved_aside_name(const std::string& dir);

}  // namespace hpcml::launch
