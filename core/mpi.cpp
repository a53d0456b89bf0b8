#include "core/mpi.hpp"

#include "core/watchdog.hpp"

namespace hpcml {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

bool mpi_initialized() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

int world_rank() {
  int rank = 0;
  if (mpi_initialized()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  if (mpi_initialized()) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::string rank_tag() {
  const int size = world_size();
  if (size <= 1) return "[rank 0/1]";
  return "[rank " + std::to_string(world_rank()) + "/" + std::to_string(size) + "]";
}

MpiSession::MpiSession(int* argc, char*** argv, std::chrono::milliseconds finalize_timeout)
    : finalize_timeout_(finalize_timeout) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Query_thread(&thread_level_);
  } else {
    HPCML_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
    owns_ = true;
  }
  // Errors come back as codes, which HPCML_MPI_CHECK turns into exceptions
  // carrying MPI's text; the default handler would abort without context.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (thread_level_ < MPI_THREAD_MULTIPLE) {
    HPCML_THROW(CommError, "MPI granted thread level ", thread_level_,
                "; hpcml needs MPI_THREAD_MULTIPLE (", MPI_THREAD_MULTIPLE, ") for its communication thread");
  }
}

MpiSession::~MpiSession() {
  if (!owns_ || !mpi_initialized()) return;
  // MPI_Finalize synchronises with the other ranks in Open MPI: a rank that
  // never gets there must not leave this one waiting forever.
  auto guard = Watchdog::instance().arm("MPI_Finalize", "world", finalize_timeout_);
  MPI_Finalize();
}

std::string mpi_library_description() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string library(text, static_cast<size_t>(length));
  library = library.substr(0, library.find_first_of(",\n"));
  int major = 0, minor = 0;
  MPI_Get_version(&major, &minor);
  return library + " (MPI " + std::to_string(major) + "." + std::to_string(minor) + ")";
}

bool mpi_thread_multiple() {
  if (!mpi_initialized()) return false;
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  return level >= MPI_THREAD_MULTIPLE;
}

int mpi_appnum() {
  if (!mpi_initialized()) return -1;
  int* appnum = nullptr;
  int flag = 0;
  HPCML_MPI_CHECK(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &flag));
  return flag && appnum != nullptr ? *appnum : -1;
}

int world_min(int value, const char* what, std::chrono::milliseconds timeout) {
  if (!mpi_initialized() || world_size() == 1) return value;
  auto guard = Watchdog::instance().arm(what, "world", timeout);
  HPCML_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
  return value;
}

}  // namespace hpcml
