/// @file
/// The collective Backend interface, in the shape of PyTorch c10d.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "collectives/node_shared.hpp"
#include "collectives/types.hpp"
#include "collectives/work.hpp"

namespace hpcml::collectives {

/// A message found by probe() or improbe() and not yet received (MPI's matched
/// probe, MPI_Improbe/MPI_Mrecv): no other probe or receive sees it, and exactly one
/// recv() consumes it, so several threads can probe one communicator without racing.
/// A Message dropped without a receive is received and discarded by its destructor.
struct Message {
  int source = -1;   ///< sender's rank in the communicator
  int tag = -1;
  size_t bytes = 0;  ///< payload size (for a tensor message: header + data)
  std::shared_ptr<void> handle;  ///< the backend's matched message; null once received
  explicit operator bool() const { return handle != nullptr; }
};

/// A communicator plus the collectives and point-to-point messages on it.
///
/// Contract for every collective below:
/// - All ranks of the communicator call it, in the same order, with tensors of the
///   same dtype and (except allgather's varying outputs) the same shape.
/// - Tensors are contiguous, of a supported dtype and on a device the backend takes
///   (mpi, local: the CPU; nccl: its CUDA device, and CPU tensors staged through
///   it); anything else throws hpcml::CommError naming the rank, the op, the tensor
///   and what was expected.
/// - The caller owns the tensors and keeps them alive, unmodified, until the
///   returned Work completes. Results are written in place.
/// - Synchronous calls (options.async = false) run on the calling thread after the
///   communication thread has finished everything queued before them, so mixing
///   both kinds keeps one collective order on every rank.
/// - Every call has a deadline (options.timeout or the backend's); a missed one
///   ends the job (see Work::wait).
///
/// The public methods validate, then call the protected `do_*` virtuals; a backend
/// overrides what it supports and the rest throw "backend <name> does not support <op>".
class Backend : public std::enable_shared_from_this<Backend> {
 public:
  virtual ~Backend() = default;

  /// The backend's kind: "mpi", "local", "nccl".
  virtual std::string name() const = 0;
  /// The communicator's name in messages, e.g. "world" or "world/servers".
  const std::string& comm_name() const { return options_.name; }
  virtual int rank() const = 0;
  virtual int size() const = 0;
  std::chrono::milliseconds default_timeout() const { return options_.timeout; }
  /// "[rank r/N]" on the whole job ("world"), "[rank r/N of <comm_name>]" on a group:
  /// how messages name this rank.
  std::string rank_label() const;

  /// Reduces `tensor` across ranks in place with options.op.
  /// @param[in,out] tensor input on entry, the reduction on completion.
  WorkPtr allreduce(at::Tensor& tensor, const AllreduceOptions& options = {});
  /// Copies the root's `tensor` into every rank's `tensor`.
  WorkPtr broadcast(at::Tensor& tensor, const BroadcastOptions& options = {});
  /// Gathers every rank's `input` into `outputs[r]` on every rank.
  /// @param[out] outputs size() preallocated tensors of the input's dtype; outputs[r]
  ///   has rank r's element count (which may differ between ranks: see allgather_varying).
  WorkPtr allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input, const AllgatherOptions& options = {});
  /// Reduces `input` (size() equal blocks, flattened) and leaves block `rank()` in `output`.
  /// @param[out] output input.numel() / size() elements.
  WorkPtr reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions& options = {});
  /// Returns when every rank has entered the barrier.
  WorkPtr barrier(const BarrierOptions& options = {});
  /// Sends block j of `input` (size() equal blocks, flattened) to rank j; block i of
  /// `output` receives rank i's block for this rank. Plain copies: any supported dtype.
  WorkPtr alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options = {});

  /// Runs `task` on the backend's communication thread, after everything queued
  /// before it and before anything queued after it. `task` may call this backend's
  /// synchronous collectives (they run on that thread, in that order), which is how
  /// multi-step schemes (compressed allreduce) stay in one collective order on every
  /// rank. Every rank must submit the same sequence of tasks. Exceptions from `task`
  /// are rethrown by the Work's wait(). The local backend runs `task` inline.
  virtual WorkPtr submit(const char* op, std::function<void()> task, std::chrono::milliseconds timeout = kDefaultTimeout);

  /// Allgather of tensors whose first dimension differs between ranks: exchanges the
  /// sizes, then gathers. Synchronous. Returns one tensor per rank.
  std::vector<at::Tensor> allgather_varying(const at::Tensor& input, const AllgatherOptions& options = {});

  /// `root`'s `text` on every rank (its size, then its bytes). Synchronous.
  std::string broadcast_string(const std::string& text, int root = 0);

  /// Splits into groups by `color` (ranks ordered by `key`), like MPI_Comm_split.
  /// Collective over this communicator. A negative color returns null (no group).
  /// @param name appended to comm_name() in messages.
  std::shared_ptr<Backend> split(int color, int key, const std::string& name);

  /// Returns split(0, rank(), name): the same ranks on a communicator of their own, so
  /// messages and collectives on it never mix with this one's.
  std::shared_ptr<Backend> dup(const std::string& name) { return split(0, rank(), name); }

  // ---- Point-to-point -------------------------------------------------------
  // Tags are 0..kMaxTag; peers are ranks of this communicator. Any thread may call
  // these (MPI runs with MPI_THREAD_MULTIPLE); they do not queue behind collectives.
  // Blocking forms wait under the deadline (options.timeout or the backend's); a
  // started MPI send or receive cannot be cancelled (Open MPI 4.1), so a missed
  // deadline ends the job with one line naming the operation, peer, tag and rank.
  // Messages over max_message_bytes() are refused with one line, not split.

  /// Sends `bytes` bytes at `data` to `dest`. With options.async the caller keeps
  /// the buffer alive until the Work completes; a Work dropped before then is
  /// detached (the send still completes, from a buffer that must outlive it).
  WorkPtr send(const void* data, size_t bytes, int dest, int tag, const P2POptions& options = {});
  /// Sends a contiguous CPU tensor with a header (dtype, shape), copied into the
  /// message: the caller may reuse `tensor` at once, even with options.async.
  WorkPtr send(const at::Tensor& tensor, int dest, int tag, const P2POptions& options = {});
  /// Receives one message from `source` (or kAnySource) with `tag` (or kAnyTag) into
  /// `data`. A message longer than `capacity` is an error naming peer, tag and sizes
  /// (it is consumed and dropped). `status`, when given, gets source, tag and bytes
  /// (its handle empty); with options.async it is filled when the Work completes.
  WorkPtr recv(void* data, size_t capacity, int source, int tag, Message* status = nullptr,
               const P2POptions& options = {});
  /// Receives a tensor message into `out`, whose dtype and shape must equal the
  /// header's (else an error naming peer, tag, and both).
  WorkPtr recv(at::Tensor& out, int source, int tag, const P2POptions& options = {});

  /// Returns the next matching message without receiving it, or nothing. Never blocks.
  std::optional<Message> improbe(int source = kAnySource, int tag = kAnyTag);
  /// Waits for the next matching message (under the deadline) and returns it unreceived.
  Message probe(int source = kAnySource, int tag = kAnyTag,
                std::chrono::milliseconds timeout = kDefaultTimeout);
  /// Receives a probed message into `data` (capacity >= message.bytes, else an error
  /// naming peer, tag and sizes; the message is then discarded). Returns message.bytes.
  size_t recv(Message& message, void* data, size_t capacity);
  /// Receives a probed message and returns its bytes.
  std::vector<char> recv_bytes(Message& message);
  /// Receives a probed message keeping only its first min(prefix, bytes) bytes in
  /// `data`; the rest is read through a small scratch buffer and dropped, so an
  /// oversized message costs no memory. Returns how many bytes were kept.
  size_t recv_prefix(Message& message, void* data, size_t prefix);
  /// Receives a probed tensor message as a new tensor of the header's dtype and shape.
  at::Tensor recv_tensor(Message& message);

  /// The largest message this backend sends (BackendOptions::max_message_bytes or
  /// the transport's limit).
  size_t max_message_bytes() const;

  /// `bytes` of zeroed memory mapped by every rank of this communicator, for
  /// node-local schemes that read other ranks' data directly (the gradient
  /// reducer's shared-memory transport). Collective. Returns nullptr on every rank
  /// when the ranks do not all share this node, when the node cannot provide the
  /// memory (`why` then says what failed), or when the backend has no such memory.
  std::shared_ptr<NodeSharedMemory> map_node_shared(size_t bytes, std::string* why = nullptr);

 protected:
  explicit Backend(BackendOptions options) : options_(std::move(options)) {}
  std::chrono::milliseconds resolve(std::chrono::milliseconds timeout) const {
    return timeout.count() < 0 ? options_.timeout : timeout;
  }
  /// "[rank r/N] <op> on communicator '<name>' (backend <kind>)" for messages.
  std::string context(const char* op) const;
  /// Whether tensors on `device` can take part in this backend's collectives.
  virtual bool accepts_device(const c10::Device& device) const { return device.is_cpu(); }
  /// What accepts_device takes, in words for errors.
  virtual std::string accepted_devices() const { return "CPU tensors"; }

  virtual WorkPtr do_allreduce(at::Tensor& tensor, const AllreduceOptions& options);
  virtual WorkPtr do_broadcast(at::Tensor& tensor, const BroadcastOptions& options);
  virtual WorkPtr do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                               const AllgatherOptions& options);
  virtual WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input, const ReduceScatterOptions& options);
  virtual WorkPtr do_barrier(const BarrierOptions& options);
  virtual WorkPtr do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options);
  virtual std::shared_ptr<Backend> do_split(int color, int key, BackendOptions options);
  virtual std::shared_ptr<NodeSharedMemory> do_map_node_shared(size_t bytes, std::string* why);

  // Point-to-point, called after validation. do_send's `keep` owns the buffer
  // when the message was copied (tensor sends). do_recv receives a matched
  // message, writing its first `keep` bytes to `data` (null when keep is 0) and
  // dropping the rest with bounded memory; keep == message.bytes is a plain receive.
  virtual WorkPtr do_send(const void* data, size_t bytes, std::shared_ptr<const void> keep, int dest, int tag,
                          const P2POptions& options);
  virtual std::optional<Message> do_improbe(int source, int tag);
  virtual void do_recv(Message& message, void* data, size_t keep);
  /// context(op) + " to|from rank <peer> tag <tag>": names the peer and tag in errors.
  std::string p2p_context(const char* op, int peer, int tag) const;
  /// "<comm>, to|from rank <peer>, tag <tag>": the object of a deadline line.
  std::string p2p_object(const char* op, int peer, int tag) const;
  /// What the transport carries in one message.
  virtual size_t transport_max_bytes() const { return SIZE_MAX; }

  BackendOptions options_;

 private:
  [[noreturn]] void unsupported(const char* op) const;
  void check_peer(const char* op, int peer, bool any_allowed) const;
  /// probe() whose deadline line names `op` (probe or recv).
  Message wait_for_message(const char* op, int source, int tag, std::chrono::milliseconds timeout);
  /// The blocking or async receive of one matching message, handed to `take`.
  WorkPtr receive_with(int source, int tag, const P2POptions& options, std::function<void(Message&)> take);
  void check_tag(const char* op, int tag, bool any_allowed) const;

  void check_tensor(const char* op, const char* what, const at::Tensor& tensor) const;
};

using BackendPtr = std::shared_ptr<Backend>;

}  // namespace hpcml::collectives
