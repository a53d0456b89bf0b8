/// @file
/// Every environment variable hpcml reads, in one place (see docs/environment.md).
#pragma once

namespace hpcml::env {

// hpcml's own
inline constexpr const char* kNumThreads = "HPCML_NUM_THREADS";          ///< intra-op threads per rank
inline constexpr const char* kLogLevel = "HPCML_LOG_LEVEL";              ///< default log level
inline constexpr const char* kLogAllRanks = "HPCML_LOG_ALL_RANKS";       ///< 1: every rank logs
inline constexpr const char* kCollectiveTimeout = "HPCML_COLLECTIVE_TIMEOUT_S";  ///< default deadline

// Slurm (srun)
inline constexpr const char* kSlurmJobId = "SLURM_JOB_ID";
inline constexpr const char* kSlurmStepId = "SLURM_STEP_ID";
inline constexpr const char* kSlurmProcId = "SLURM_PROCID";
inline constexpr const char* kSlurmNtasks = "SLURM_NTASKS";
inline constexpr const char* kSlurmLocalId = "SLURM_LOCALID";
inline constexpr const char* kSlurmNodeId = "SLURM_NODEID";
inline constexpr const char* kSlurmdNodeName = "SLURMD_NODENAME";
inline constexpr const char* kSlurmHetSize = "SLURM_HET_SIZE";  ///< components of a het job
/// + k: tasks of het group k in the step (SLURM_NTASKS_HET_GROUP_0, ...)
inline constexpr const char* kSlurmNtasksHetGroupPrefix = "SLURM_NTASKS_HET_GROUP_";

// Open MPI (mpirun)
inline constexpr const char* kOmpiRank = "OMPI_COMM_WORLD_RANK";
inline constexpr const char* kOmpiSize = "OMPI_COMM_WORLD_SIZE";
inline constexpr const char* kOmpiLocalRank = "OMPI_COMM_WORLD_LOCAL_RANK";
inline constexpr const char* kOmpiLocalSize = "OMPI_COMM_WORLD_LOCAL_SIZE";

// Any PMI launcher (srun --mpi=pmix, MPICH's and Intel MPI's mpiexec): set in every rank
inline constexpr const char* kPmixRank = "PMIX_RANK";
inline constexpr const char* kPmiRank = "PMI_RANK";

}  // namespace hpcml::env
