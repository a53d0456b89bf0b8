/// @file
/// The single-process backend: every collective on one rank, no MPI needed.
#pragma once

#include <memory>

#include "collectives/backend.hpp"

namespace hpcml::collectives {

/// A communicator of exactly one rank. Collectives keep their single-rank meaning
/// (allreduce and broadcast leave the tensor as is, allgather copies), so models,
/// io and most tests run without mpirun. Point-to-point messages go to rank 0
/// itself through an in-process mailbox (sends complete at once; probes and
/// receives from any thread). Always built.
class LocalBackend final : public Backend {
 public:
  explicit LocalBackend(BackendOptions options = {});
  ~LocalBackend() override;
  std::string name() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }

 protected:
  WorkPtr do_allreduce(at::Tensor& tensor, const AllreduceOptions& options) override;
  WorkPtr do_broadcast(at::Tensor& tensor, const BroadcastOptions& options) override;
  WorkPtr do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                       const AllgatherOptions& options) override;
  WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions& options) override;
  WorkPtr do_barrier(const BarrierOptions& options) override;
  WorkPtr do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options) override;
  std::shared_ptr<Backend> do_split(int color, int key, BackendOptions options) override;
  WorkPtr do_send(const void* data, size_t bytes, std::shared_ptr<const void> keep, int dest, int tag,
                  const P2POptions& options) override;
  std::optional<Message> do_improbe(int source, int tag) override;
  void do_recv(Message& message, void* data, size_t keep) override;

 private:
  struct Mailbox;
  std::unique_ptr<Mailbox> mailbox_;
};

}  // namespace hpcml::collectives
