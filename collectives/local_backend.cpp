#include "collectives/local_backend.hpp"

#include <ATen/ATen.h>

#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "collectives/detail/work_impl.hpp"

namespace hpcml::collectives {

// Messages rank 0 sent itself, in send order (matching takes the first that fits).
struct LocalBackend::Mailbox {
  std::mutex mutex;
  std::deque<Message> messages;  // handle: the bytes (std::vector<char>)
};

LocalBackend::LocalBackend(BackendOptions options)
    : Backend(std::move(options)), mailbox_(std::make_unique<Mailbox>()) {}
LocalBackend::~LocalBackend() = default;

WorkPtr LocalBackend::do_send(const void* data, size_t bytes, std::shared_ptr<const void>, int, int tag,
                              const P2POptions&) {
  auto copy = std::make_shared<std::vector<char>>(static_cast<const char*>(data),
                                                  static_cast<const char*>(data) + bytes);
  std::lock_guard<std::mutex> lock(mailbox_->mutex);
  mailbox_->messages.push_back(Message{0, tag, bytes, copy});
  return detail::completed_work();
}

std::optional<Message> LocalBackend::do_improbe(int, int tag) {
  std::lock_guard<std::mutex> lock(mailbox_->mutex);
  auto& queue = mailbox_->messages;
  for (auto it = queue.begin(); it != queue.end(); ++it) {
    if (tag != kAnyTag && it->tag != tag) continue;
    Message found = std::move(*it);
    queue.erase(it);
    return found;
  }
  return std::nullopt;
}

void LocalBackend::do_recv(Message& message, void* data, size_t keep) {
  const auto& bytes = *static_cast<const std::vector<char>*>(message.handle.get());
  if (keep > 0) std::memcpy(data, bytes.data(), std::min(keep, bytes.size()));
}

namespace {
WorkPtr done() { return detail::completed_work(); }
}  // namespace

// A reduction over one rank is the identity for sum, avg, min and max.
WorkPtr LocalBackend::do_allreduce(at::Tensor&, const AllreduceOptions&) { return done(); }
WorkPtr LocalBackend::do_broadcast(at::Tensor&, const BroadcastOptions&) { return done(); }

WorkPtr LocalBackend::do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                                   const AllgatherOptions&) {
  outputs[0].view({-1}).copy_(input.reshape({-1}));
  return done();
}

WorkPtr LocalBackend::do_reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions&) {
  output.view({-1}).copy_(input.reshape({-1}));
  return done();
}

WorkPtr LocalBackend::do_barrier(const BarrierOptions&) { return done(); }

WorkPtr LocalBackend::do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions&) {
  output.view({-1}).copy_(input.reshape({-1}));
  return done();
}

std::shared_ptr<Backend> LocalBackend::do_split(int color, int, BackendOptions options) {
  if (color < 0) return nullptr;
  return std::make_shared<LocalBackend>(std::move(options));
}

}  // namespace hpcml::collectives
