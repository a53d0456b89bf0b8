/// @file
/// Ownership of MPI's lifetime, and the checked wrapper for every MPI call.
///
/// MPI is initialised once per process by MpiSession (MPI_THREAD_MULTIPLE, because
/// collectives run on a communication thread) and finalised by its destructor under
/// a deadline. Everything else in hpcml asks `mpi_initialized()` and never calls
/// MPI_Init itself.
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>

#include "core/error.hpp"

namespace hpcml {

/// MPI's own text for an error code ("MPI_ERR_TRUNCATE: message truncated").
std::string mpi_error_string(int code);

/// True between MPI_Init and MPI_Finalize.
bool mpi_initialized();
/// Rank and size in MPI_COMM_WORLD, or 0 and 1 before MPI_Init / after MPI_Finalize.
int world_rank();
int world_size();
/// "[rank r/N]" for messages; "" in a single process.
std::string rank_tag();

/// The facts about MPI that code above core/ and collectives/ needs, without calling
/// MPI itself (only these two layers may):
/// "Open MPI v4.1.4 (MPI 3.1)": the library's first line and the standard version.
std::string mpi_library_description();
/// Whether MPI runs with MPI_THREAD_MULTIPLE (false before MPI_Init).
bool mpi_thread_multiple();
/// This process's app context in an mpirun MPMD line (MPI_APPNUM), or -1 when MPI
/// does not say (not initialised, or no MPMD launch).
int mpi_appnum();
/// The lowest `value` over MPI_COMM_WORLD, under a deadline of `timeout` (a missed
/// one ends the job): start-up agreement before any backend exists.
int world_min(int value, const char* what, std::chrono::milliseconds timeout);

/// RAII owner of MPI_Init_thread / MPI_Finalize for one process.
///
/// Not thread-safe; construct once on the main thread. The destructor finalises
/// under `finalize_timeout`: a rank whose peers never reach MPI_Finalize ends the
/// job instead of hanging.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv,
             std::chrono::milliseconds finalize_timeout = std::chrono::seconds(60));
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  /// The thread level MPI granted (always MPI_THREAD_MULTIPLE: anything less throws).
  int thread_level() const { return thread_level_; }

 private:
  int thread_level_ = MPI_THREAD_SINGLE;
  bool owns_ = false;
  std::chrono::milliseconds finalize_timeout_;
};

}  // namespace hpcml

/// Evaluates an MPI call once; on failure throws hpcml::CommError naming the call,
/// the rank and MPI's own error string.
#define HPCML_MPI_CHECK(call)                                                                 \
  do {                                                                                        \
    const int hpcml_mpi_rc_ = (call);                                                         \
    if (hpcml_mpi_rc_ != MPI_SUCCESS)                                                         \
      HPCML_THROW(::hpcml::CommError, ::hpcml::rank_tag(), " ", #call, " failed: ",           \
                  ::hpcml::mpi_error_string(hpcml_mpi_rc_));                                  \
  } while (false)
