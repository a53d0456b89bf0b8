/// @file
/// The MPI backend: CPU tensors over an MPI communicator.
#pragma once

#include <mpi.h>

#include <memory>
#include <optional>

#include "collectives/backend.hpp"

namespace hpcml::collectives {

namespace detail {
class CommThread;
}

/// Collectives over a private duplicate of an MPI communicator.
///
/// Synchronous calls are blocking MPI calls on the calling thread, covered by the
/// watchdog. Asynchronous calls (options.async) run as blocking calls on the
/// backend's communication thread: Open MPI has no progress thread, and a
/// blocking call there is faster than MPI_I* plus wait. One thread at a time may
/// issue synchronous calls on a backend.
class MpiBackend final : public Backend {
 public:
  /// Duplicates `comm` (collective over it). MPI must be initialised with
  /// MPI_THREAD_MULTIPLE (see hpcml::MpiSession).
  MpiBackend(MPI_Comm comm, BackendOptions options);
  ~MpiBackend() override;

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  /// The duplicated communicator (for raw MPI calls that must not interleave with ours).
  MPI_Comm comm() const { return comm_; }
  WorkPtr submit(const char* op, std::function<void()> task,
                 std::chrono::milliseconds timeout = kDefaultTimeout) override;

 protected:
  WorkPtr do_allreduce(at::Tensor& tensor, const AllreduceOptions& options) override;
  WorkPtr do_broadcast(at::Tensor& tensor, const BroadcastOptions& options) override;
  WorkPtr do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                       const AllgatherOptions& options) override;
  WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions& options) override;
  WorkPtr do_barrier(const BarrierOptions& options) override;
  WorkPtr do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options) override;
  std::shared_ptr<Backend> do_split(int color, int key, BackendOptions options) override;
  std::shared_ptr<NodeSharedMemory> do_map_node_shared(size_t bytes, std::string* why) override;
  WorkPtr do_send(const void* data, size_t bytes, std::shared_ptr<const void> keep, int dest, int tag,
                  const P2POptions& options) override;
  std::optional<Message> do_improbe(int source, int tag) override;
  void do_recv(Message& message, void* data, size_t keep) override;
  size_t transport_max_bytes() const override;

 private:
  struct Detached;
  class SendWork;  // an async send's Work (mpi_backend.cpp)
  /// Runs `body` now (after the queue drains) or on the communication thread, under a deadline.
  int checked_count(const char* op, int64_t numel) const;
  template <typename Body>
  WorkPtr launch(const char* op, bool async, std::chrono::milliseconds timeout, Body&& body);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<detail::CommThread> thread_;
  std::unique_ptr<Detached> detached_;  // sends whose Work was dropped before completing
};

/// The MPI communicator under `backend` (its private duplicate), or MPI_COMM_NULL when
/// it is not an MPI backend: for libraries that take one (HDF5's MPI-IO driver).
MPI_Comm mpi_comm_of(const Backend& backend);

}  // namespace hpcml::collectives
