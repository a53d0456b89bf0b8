#include "core/runtime_env.hpp"

#include <mpi.h>

#include "core/env.hpp"
#include "core/env_vars.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"

namespace hpcml {

const char* to_string(Launcher launcher) {
  switch (launcher) {
    case Launcher::kNone: return "none";
    case Launcher::kMpirun: return "mpirun";
    case Launcher::kSrun: return "srun";
  }
  return "unknown";
}

namespace {
int checked_index(const char* name, long value, long upper) {
  if (value < 0 || value >= upper) {
    HPCML_THROW(ConfigError, "environment variable ", name, ": expected a value in [0, ", upper, "), found ", value);
  }
  return static_cast<int>(value);
}
}  // namespace

RuntimeEnv RuntimeEnv::from_environment() {
  RuntimeEnv env;
  env.job_id = env::get_string(env::kSlurmJobId);
  env.step_id = env::get_string(env::kSlurmStepId);
  if (auto host = env::get_string(env::kSlurmdNodeName)) env.node_name = *host;

  // srun sets SLURM_PROCID for every task of a step; sbatch's batch shell has a
  // job id but no step, and then mpirun (if any) is the launcher.
  const bool in_step = env.step_id && env::get_string(env::kSlurmProcId);
  const bool under_mpirun = env::get_string(env::kOmpiRank).has_value();
  if (under_mpirun) {
    env.launcher = Launcher::kMpirun;
    env.size = static_cast<int>(env::get_int(env::kOmpiSize).value_or(1));
    HPCML_CHECK_AS(ConfigError, env.size >= 1, "environment variable ", env::kOmpiSize,
                   ": expected >= 1, found ", env.size);
    env.rank = checked_index(env::kOmpiRank, *env::get_int(env::kOmpiRank), env.size);
    env.local_size = static_cast<int>(env::get_int(env::kOmpiLocalSize).value_or(1));
    env.local_rank = checked_index(env::kOmpiLocalRank, env::get_int(env::kOmpiLocalRank).value_or(0),
                                   env.local_size);
  } else if (in_step) {
    env.launcher = Launcher::kSrun;
    env.size = static_cast<int>(env::get_int(env::kSlurmNtasks).value_or(1));
    HPCML_CHECK_AS(ConfigError, env.size >= 1, "environment variable ", env::kSlurmNtasks,
                   ": expected >= 1, found ", env.size);
    env.rank = checked_index(env::kSlurmProcId, *env::get_int(env::kSlurmProcId), env.size);
    env.local_rank = checked_index(env::kSlurmLocalId, env::get_int(env::kSlurmLocalId).value_or(0), env.size);
    env.node_index = checked_index(env::kSlurmNodeId, env::get_int(env::kSlurmNodeId).value_or(0), env.size);
  }
  if (auto het_size = env::get_int(env::kSlurmHetSize)) {
    HPCML_CHECK_AS(ConfigError, *het_size >= 1, "environment variable ", env::kSlurmHetSize,
                   ": expected >= 1, found ", *het_size);
    env.het_size = static_cast<int>(*het_size);
    // Slurm 22.05 sets no per-task component variable in a het step (verified: no
    // SLURM_HET_JOB_COMPONENT); tasks are numbered component by component, so a
    // task's group is where its rank falls in the running sum of the groups' sizes.
    if (env.launcher == Launcher::kSrun) {
      long first = 0;
      for (int k = 0; k < *het_size; ++k) {
        const std::string name = std::string(env::kSlurmNtasksHetGroupPrefix) + std::to_string(k);
        const auto tasks = env::get_int(name.c_str());
        if (!tasks) break;  // a step over some of the groups only
        if (env.rank >= first && env.rank < first + *tasks) {
          env.het_group = k;
          break;
        }
        first += *tasks;
      }
    }
  }
  return env;
}

RuntimeEnv RuntimeEnv::detect() {
  RuntimeEnv env = from_environment();
  if (!mpi_initialized()) return env;
  const Launcher launcher = env.launcher;
  const int env_rank = env.rank;
  const int env_size = env.size;
  const int env_local_rank = env.local_rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &env.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &env.size);
  if (launcher != Launcher::kNone && (env_rank != env.rank || env_size != env.size)) {
    HPCML_THROW(CommError, "launcher ", to_string(launcher), " says rank ", env_rank, " of ", env_size,
                " but MPI_COMM_WORLD says rank ", env.rank, " of ", env.size,
                "; was the program started by a different launcher than the MPI library expects?");
  }

  // Local rank and node index from MPI itself; launcher variables are only a cross-check.
  MPI_Comm node_comm = MPI_COMM_NULL;
  HPCML_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, env.rank, MPI_INFO_NULL, &node_comm));
  MPI_Comm_rank(node_comm, &env.local_rank);
  MPI_Comm_size(node_comm, &env.local_size);
  MPI_Comm leaders = MPI_COMM_NULL;
  HPCML_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, env.local_rank == 0 ? 0 : MPI_UNDEFINED, env.rank, &leaders));
  int node_index = 0;
  int num_nodes = 1;
  if (leaders != MPI_COMM_NULL) {
    MPI_Comm_rank(leaders, &node_index);
    MPI_Comm_size(leaders, &num_nodes);
    MPI_Comm_free(&leaders);
  }
  int node_info[2] = {node_index, num_nodes};
  HPCML_MPI_CHECK(MPI_Bcast(node_info, 2, MPI_INT, 0, node_comm));
  MPI_Comm_free(&node_comm);
  env.node_index = node_info[0];
  env.num_nodes = node_info[1];
  if (env.node_name.empty()) {
    char name[MPI_MAX_PROCESSOR_NAME];
    int length = 0;
    MPI_Get_processor_name(name, &length);
    env.node_name.assign(name, static_cast<size_t>(length));
  }
  // The launcher's local id can legitimately differ from MPI's shared-memory
  // rank, e.g. when several Slurm "nodes" share one host (the local test
  // cluster). MPI's view is the physical one; keep the launcher's for display.
  if (launcher != Launcher::kNone && env_local_rank != env.local_rank) env.launcher_local_rank = env_local_rank;
  return env;
}

}  // namespace hpcml
