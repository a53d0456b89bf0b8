#include "collectives/mpi_reference.hpp"

#include <mpi.h>

#include "collectives/mpi_backend.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives {

struct RawMpiAllreduce::Comm {
  MPI_Comm comm = MPI_COMM_NULL;
};

RawMpiAllreduce::RawMpiAllreduce(const Backend& backend)
    : comm_(std::make_unique<Comm>()), timeout_(backend.default_timeout()) {
  const MPI_Comm base = mpi_comm_of(backend);
  HPCML_CHECK_AS(ConfigError, base != MPI_COMM_NULL, "raw MPI reference: needs an mpi backend, found '",
                 backend.name(), "'");
  auto guard = Watchdog::instance().arm("MPI_Comm_dup", "bench", timeout_);
  HPCML_MPI_CHECK(MPI_Comm_dup(base, &comm_->comm));
}

RawMpiAllreduce::~RawMpiAllreduce() {
  if (comm_->comm != MPI_COMM_NULL && mpi_initialized()) MPI_Comm_free(&comm_->comm);
}

void RawMpiAllreduce::blocking(at::Tensor& t) {
  auto guard = Watchdog::instance().arm("MPI_Allreduce", "bench", timeout_);
  HPCML_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM,
                                comm_->comm));
}

void RawMpiAllreduce::nonblocking(at::Tensor& t) {
  auto guard = Watchdog::instance().arm("MPI_Iallreduce", "bench", timeout_);
  MPI_Request request;
  HPCML_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM,
                                 comm_->comm, &request));
  HPCML_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
}

}  // namespace hpcml::collectives
