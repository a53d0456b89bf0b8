/// @file
/// Data-parallel gradient averaging with bucketed allreduce overlapped with backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "collectives/backend.hpp"
#include "collectives/grad_hook.hpp"

namespace hpcml::collectives {

using NamedTensor = std::pair<std::string, at::Tensor>;

/// What happens to buffers (e.g. BatchNorm running statistics) between ranks.
enum class BufferPolicy {
  kBroadcast,  ///< rank 0's buffers are copied to every rank before each forward (DDP's default)
  kPerRank,    ///< each rank keeps its own
};
/// How gradients travel.
enum class GradCompression {
  kNone,  ///< float32
  kBf16,  ///< bfloat16 on the wire; the sum of each element accumulates in float32, rounded once
  kFp16,  ///< float16 on the wire; same scheme
};
const char* to_string(GradCompression compression);

/// When bucket allreduces are launched.
enum class Overlap {
  /// kAlways when this process may run on more cores than its intra-op threads
  /// use, else kNever. Open MPI's blocking collectives spin: on a rank bound to one
  /// busy core, an allreduce launched mid-backward takes that core from backward
  /// (measured: backward 10.7 -> 14 ms on the reference MLP) and hides nothing.
  kAuto,
  kAlways,  ///< as soon as a bucket's gradients are final during backward
  kNever,   ///< all buckets after backward
};
const char* to_string(Overlap overlap);

/// How bucket gradients reach the other ranks.
enum class Transport {
  /// kSharedMemory when every rank runs on this node and /dev/shm has room, else kMpi.
  kAuto,
  /// The backend's collectives (MPI allreduce), on its communication thread.
  kMpi,
  /// One shared segment on the node: each rank writes its gradients into its own
  /// slot as backward makes them final; whichever rank is idle sums published
  /// buckets for all (see detail::NodeReduction). Overlap needs no spare core: a
  /// rank that finished backward sums while slower ranks still compute. Requires
  /// all ranks on one node; a forced kSharedMemory that cannot be had is an error.
  kSharedMemory,
};
const char* to_string(Transport transport);

/// The inverses of to_string(): a config or command-line value to its enum. Anything
/// else throws hpcml::ConfigError "<what>: expected one of [...], found '<name>'".
GradCompression parse_compression(const std::string& name, const std::string& what);
Overlap parse_overlap(const std::string& name, const std::string& what);
Transport parse_transport(const std::string& name, const std::string& what);

namespace detail {
class NodeReduction;
}

struct ReducerOptions {
  /// The first bucket (the last layers, whose gradients are ready first) is kept small
  /// so its allreduce starts early; later buckets fill up to bucket_cap_bytes.
  int64_t first_bucket_bytes = int64_t{1} << 20;
  int64_t bucket_cap_bytes = int64_t{25} << 20;
  /// When bucket allreduces run, with the MPI transport (the shared-memory transport
  /// always sums a bucket as soon as every rank has published it). Results are
  /// identical either way.
  Overlap overlap = Overlap::kAuto;
  Transport transport = Transport::kAuto;
  /// Parameters that get no gradient in a step count as zero instead of being an error.
  bool allow_unused = false;
  BufferPolicy buffers = BufferPolicy::kBroadcast;
  GradCompression compression = GradCompression::kNone;
  /// Without compression, gradients of at least this many bytes are allreduced in
  /// place in their own tensor (no copy into the bucket, which on one core per rank
  /// costs more than the extra MPI call); smaller ones share the bucket's flat buffer.
  int64_t direct_min_bytes = int64_t{256} << 10;
};

/// Timestamps (trace clock, microseconds) of one bucket in the last synchronised step.
struct BucketTiming {
  int64_t ready_us = 0;   ///< all its gradients were final (or backward ended, without overlap)
  int64_t start_us = 0;   ///< its allreduce started on the communication thread
  int64_t end_us = 0;     ///< its allreduce (and averaging) completed
};

/// Figures of the last synchronised step.
struct ReducerStepStats {
  int64_t backward_start_us = 0;  ///< set by backward(); 0 when the caller ran backward itself
  int64_t backward_end_us = 0;
  /// Time finish() spent waiting for (and doing) reductions after backward, not
  /// counting update_ms.
  double exposed_wait_ms = 0;
  double update_ms = 0;  ///< time in the bucket update (set_bucket_update), inside finish()
  std::vector<BucketTiming> buckets;
};

/// One parameter's averaged gradient, where the reducer holds it once its bucket is final.
struct AveragedGrad {
  int index = 0;                       ///< among the reducer's trainable parameters, registration order
  const at::Tensor* param = nullptr;   ///< the parameter (float32, contiguous)
  const void* data = nullptr;          ///< param->numel() averaged values; read-only, valid during the call
  at::ScalarType dtype = at::kFloat;   ///< kFloat, or kBFloat16 / kHalf (shared memory, 16-bit compression)
  /// The elements to update: [begin, end) of the parameter (the whole of it, unless
  /// the ranks share the parameters: then this rank's part).
  int64_t begin = 0;
  int64_t end = 0;
};
/// Receives one bucket's averaged gradients (GradientReducer::set_bucket_update).
using BucketUpdate = std::function<void(const std::vector<AveragedGrad>&)>;

/// Averages gradients across the ranks of a Backend, DDP-style.
///
/// Usage, on every rank, in the same order:
/// @code
/// GradientReducer reducer(named_parameters, named_buffers, world);
/// for (...) {
///   reducer.zero_grad();
///   reducer.sync_buffers();              // per BufferPolicy
///   auto loss = criterion(model(x), y);  // mean over this rank's batch
///   reducer.backward(loss);              // backward + reduction; grads are averages now
///                                        // (one backward per synchronised step; use
///                                        // no_sync() for micro-batches)
///   optimizer.step();
/// }
/// @endcode
///
/// - Construction broadcasts parameters and buffers from rank 0 and checks that every
///   rank has the same parameter names, shapes and dtypes (collective).
/// - Transport (options.transport): with all ranks on one node, gradients go through
///   shared memory (see Transport::kSharedMemory; after the reduction each `.grad()`
///   is a view of this rank's float32 slot there, valid until the next synchronised
///   backward; with 16-bit compression it is the rank's own gradient tensor, into
///   which the rounded average was widened); otherwise through the backend's
///   allreduce, as follows.
/// - Buckets hold parameters in reverse registration order. Small gradients are copied
///   into the bucket's flat buffer by a grad-ready hook and, after the reduction, each
///   such parameter's `.grad()` is a view into it (no copy back); large ones
///   (options.direct_min_bytes) are allreduced in place in their own tensor.
/// - When every gradient of a bucket is final its allreduces go to the backend's
///   communication thread (during backward with overlap; buckets launch in index
///   order on every rank).
/// - `backward()` scales the loss's gradient by 1/size so the summed allreduce is the
///   average; after a plain `loss.backward()`, `finish()` divides instead.
/// - A parameter without a gradient in a synchronised step is an error naming it
///   (unless allow_unused), raised by finish() before it waits on anything.
/// Not thread-safe: one training thread drives it.
class GradientReducer {
 public:
  /// @param parameters in registration order (e.g. Module::named_parameters()); float32,
  ///   CPU, contiguous, requiring grad.
  /// @param buffers broadcast at construction, then per options.buffers.
  GradientReducer(std::vector<NamedTensor> parameters, std::vector<NamedTensor> buffers, BackendPtr backend,
                  ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Sets every parameter's gradient to undefined (the next backward writes it fresh).
  void zero_grad();
  /// With BufferPolicy::kBroadcast, copies rank 0's buffers to every rank (collective).
  void sync_buffers();
  /// Runs `loss.backward()` and, outside no_sync, reduces: on return every parameter's
  /// gradient is the average over ranks. `loss` must be a scalar.
  void backward(const at::Tensor& loss);
  /// Completes the reduction after the caller ran backward itself (launches what is
  /// left, waits, averages). Called by backward(); a no-op inside no_sync.
  void finish();

  /// Runs `update` on each bucket of every synchronised step as soon as the bucket's
  /// average is final, inside finish(), on this thread: typically the optimizer step
  /// (launch::bucket_update of a ParameterStepper), which then runs while later
  /// buckets are still being reduced or other ranks still sum, and, with 16-bit
  /// compression over shared memory, reads the 16-bit averages where they lie
  /// instead of widening them into float32 gradients first (DDP's "optimizer in
  /// backward"). At one rank it runs per
  /// bucket after backward. Parameters without a gradient are skipped at one rank
  /// (torch's optimizers skip them too); at several ranks they carry zeros (allow_unused).
  /// After such a step `.grad()` holds the average, except with 16-bit compression
  /// over shared memory, where it is left undefined. Empty: off (the default).
  ///
  /// `share_parameters` (collective: the same on every rank), for an update with no
  /// per-element state (ParameterStepper::updates_ranges): with the shared-memory
  /// transport at 2 or more ranks, every trainable parameter's storage moves into one
  /// node-shared segment (values unchanged; rank 0's copy), and each rank updates
  /// only its contiguous 1/N of every parameter (AveragedGrad::begin/end), so the
  /// update's memory traffic per rank shrinks N-fold. finish() returns when every
  /// rank has updated its part. Do not replace the parameters' storage afterwards
  /// (set_data, assignment): loading values with copy_ is fine; a replaced
  /// parameter is an error naming it. Otherwise ignored (see parameters_shared()).
  void set_bucket_update(BucketUpdate update, bool share_parameters = false);
  /// Whether the ranks share one copy of the parameters (set_bucket_update).
  bool parameters_shared() const { return shared_params_ != nullptr; }
  /// Where the optimizer step runs, for logs: "in the reduction" (with ", each rank
  /// updating 1/N of the node-shared parameters") or "after it" (no bucket update).
  std::string update_placement() const;

  /// While alive, backward passes only accumulate gradients locally (micro-batches);
  /// the first backward after it ends reduces the accumulated sum.
  class NoSync {
   public:
    explicit NoSync(GradientReducer& reducer) : reducer_(&reducer) { reducer_->no_sync_ = true; }
    ~NoSync() { reducer_->no_sync_ = false; }
    NoSync(const NoSync&) = delete;
    NoSync& operator=(const NoSync&) = delete;

   private:
    GradientReducer* reducer_;
  };
  NoSync no_sync() { return NoSync(*this); }

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  /// Parameter names of each bucket, in bucket order.
  std::vector<std::vector<std::string>> bucket_layout() const;
  const ReducerStepStats& last_step() const { return stats_; }
  const ReducerOptions& options() const { return options_; }
  /// Whether buckets launch during backward (options.overlap resolved; MPI transport).
  bool overlapping() const { return overlap_; }
  /// The transport in use: kMpi or kSharedMemory (options.transport resolved).
  Transport transport() const { return node_ ? Transport::kSharedMemory : Transport::kMpi; }
  /// How reduction overlaps backward, for logs: "peers" (shared memory: idle ranks sum
  /// while others compute), "on" or "off" (MPI transport, overlapping()).
  const char* overlap_mode() const { return node_ ? "peers" : overlap_ ? "on" : "off"; }
  /// Why kAuto did not get shared memory ("" when it did, or was not asked for it).
  const std::string& transport_note() const { return transport_note_; }

 private:
  struct Param {
    std::string name;
    at::Tensor tensor;
    int bucket = 0;
    bool direct = false;  // allreduced in its own gradient tensor
    int64_t offset = 0;   // in the bucket's flat buffer, in elements (not direct)
    at::Tensor view;      // the bucket slice, shaped like the parameter (not direct)
    at::Tensor send;      // its slice of the 16-bit send buffer (compression)
    at::Tensor slot;      // shared memory: this rank's slot (wire dtype; float32: then the average)
    int64_t node_offset = 0;  // shared memory: where its elements start in the segment's slots
  };
  struct Bucket {
    std::vector<int> params;
    at::Tensor flat;                // float32 gradients
    at::Tensor send, recv, gather;  // 16-bit staging, with compression
    at::Tensor segment;             // float32 sums of this rank's segment, with compression
    int pending = 0;
    bool launched = false;
    WorkPtr work;
    BucketTiming timing;
  };

  void on_grad_ready(int index);
  void launch_ready_buckets();  // in index order; caller holds mutex_
  void launch(int b);
  void reduce_compressed(Bucket& bucket, bool divide) const;
  void reset_step();
  void set_up_shared_memory();
  void finish_shared_memory();
  void deliver_shared_result(int bucket);
  /// Hands `bucket`'s averages to update_ (where each one lies: .grad(), or the 16-bit
  /// shared result area when shared_result); adds the time to stats_.update_ms.
  void run_update(int bucket, bool shared_result);
  void update_unsynchronised();  // one rank: update_ on every bucket's local gradients
  void share_parameters();
  /// Shared parameters: signals that this rank updated its parts, waits for the others.
  void wait_for_shared_updates();

  std::vector<Param> params_;
  std::vector<NamedTensor> buffers_;
  std::vector<Bucket> buckets_;
  std::unique_ptr<detail::NodeReduction> node_;  // shared-memory transport, when in use
  std::string transport_note_;
  BackendPtr backend_;
  ReducerOptions options_;
  c10::Device device_{c10::kCPU};  ///< where every parameter and bucket lives
  std::vector<GradReadyHook> hooks_;
  BucketUpdate update_;
  std::vector<AveragedGrad> averaged_;  // run_update's argument, reused
  std::shared_ptr<NodeSharedMemory> shared_params_;  // the parameters' storage, when shared
  std::vector<const void*> shared_param_data_;        // per parameter, where it must stay
  uint64_t shared_updates_ = 0;                       // synchronised steps updated so far
  std::vector<char> ready_;
  int next_launch_ = 0;
  bool overlap_ = true;
  bool no_sync_ = false;
  bool scaled_ = false;  // this step's backward ran through backward() (gradients pre-divided)
  std::mutex mutex_;
  ReducerStepStats stats_;
};

}  // namespace hpcml::collectives
