/// @file
/// Where this process sits in the job: launcher, ranks, node, Slurm job and het group.
///
/// Read in one place from Slurm, PMIx and Open MPI variables (core/env_vars.hpp),
/// validated, and checked against MPI itself.
#pragma once

#include <optional>
#include <string>

namespace hpcml {

enum class Launcher { kNone, kMpirun, kSrun };
const char* to_string(Launcher launcher);

struct RuntimeEnv {
  Launcher launcher = Launcher::kNone;
  int rank = 0;         ///< rank in MPI_COMM_WORLD
  int size = 1;         ///< size of MPI_COMM_WORLD
  int local_rank = 0;   ///< rank among the processes of this node
  int local_size = 1;   ///< processes on this node
  int node_index = 0;   ///< index of this node among the job's nodes (0-based)
  int num_nodes = 1;
  std::string node_name;
  std::optional<std::string> job_id;   ///< SLURM_JOB_ID
  std::optional<std::string> step_id;  ///< SLURM_STEP_ID
  std::optional<int> het_group;        ///< het-job component of this rank (Slurm het jobs)
  std::optional<int> het_size;         ///< number of het-job components
  /// The launcher's local rank when it differs from MPI's (several Slurm nodes on one host).
  std::optional<int> launcher_local_rank;

  /// From launcher variables alone (no MPI). Throws hpcml::ConfigError when a
  /// variable is malformed or the variables contradict each other.
  static RuntimeEnv from_environment();

  /// from_environment(), then checked against MPI_COMM_WORLD: rank and size must
  /// agree with the launcher's; local rank, node index and node name come from
  /// MPI (MPI_Comm_split_type).
  /// Collective over MPI_COMM_WORLD: every rank calls it once. Throws CommError
  /// on disagreement.
  static RuntimeEnv detect();
};

}  // namespace hpcml
