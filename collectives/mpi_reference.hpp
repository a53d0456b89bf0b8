/// @file
/// Raw MPI allreduce, the reference `hpcml bench allreduce` measures hpcml's paths
/// against. Lives here because only core/ and collectives/ call MPI.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "collectives/backend.hpp"

namespace hpcml::collectives {

/// MPI_Allreduce and MPI_Iallreduce + MPI_Wait (float32 sum, in place) on a private
/// duplicate of an MPI backend's communicator, so they never interleave with the
/// backend's own. No communication thread, no checks beyond MPI's: the bare calls,
/// each under the backend's deadline.
class RawMpiAllreduce {
 public:
  /// Collective over `backend` (duplicates its communicator). Throws ConfigError when
  /// `backend` is not an MPI backend.
  explicit RawMpiAllreduce(const Backend& backend);
  ~RawMpiAllreduce();
  RawMpiAllreduce(const RawMpiAllreduce&) = delete;
  RawMpiAllreduce& operator=(const RawMpiAllreduce&) = delete;

  void blocking(at::Tensor& tensor);
  void nonblocking(at::Tensor& tensor);

 private:
  struct Comm;
  std::unique_ptr<Comm> comm_;
  std::chrono::milliseconds timeout_;
};

}  // namespace hpcml::collectives
