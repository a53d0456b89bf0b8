#include "collectives/nccl_backend.hpp"

#include "core/error.hpp"
#include "hpcml/build_config.hpp"

#ifdef HPCML_HAS_NCCL
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <mutex>
#include <thread>

#include "collectives/detail/work_impl.hpp"
#include "core/watchdog.hpp"
#endif

namespace hpcml::collectives {

#ifndef HPCML_HAS_NCCL
bool nccl_compiled() { return false; }

BackendPtr make_nccl_backend(BackendPtr, int, BackendOptions) {
  HPCML_THROW(ConfigError, "key 'runtime.backend': expected one of the compiled backends, found 'nccl': this hpcml is "
              "built without CUDA (LibTorch ", HPCML_TORCH_VERSION, "); build with scripts/build.sh --libtorch upstream");
}
#else
bool nccl_compiled() { return true; }

namespace {

#define HPCML_NCCL_CHECK(context, call)                                                                      \
  do {                                                                                                        \
    const ncclResult_t hpcml_nccl_result = (call);                                                            \
    HPCML_CHECK_AS(CommError, hpcml_nccl_result == ncclSuccess, context, ": ", #call, " failed: ",           \
                   ncclGetErrorString(hpcml_nccl_result));                                                     \
  } while (0)

#define HPCML_CUDA_CHECK(context, call)                                                                       \
  do {                                                                                                        \
    const cudaError_t hpcml_cuda_result = (call);                                                             \
    HPCML_CHECK_AS(CommError, hpcml_cuda_result == cudaSuccess, context, ": ", #call, " failed: ",           \
                   cudaGetErrorString(hpcml_cuda_result));                                                     \
  } while (0)

ncclDataType_t nccl_type(c10::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kByte: return ncclUint8;
    default: HPCML_THROW(CommError, "backend nccl: dtype ", c10::toString(t), " has no NCCL type");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kAvg: return ncclAvg;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kMax: return ncclMax;
  }
  return ncclSum;
}

// Completion of one collective: an event recorded on the backend's stream after it.
// wait() polls the event against the deadline; on expiry the communicator is
// aborted (a hung NCCL kernel never returns otherwise) and the job ends.
class NcclWork final : public Work {
 public:
  NcclWork(const char* op, std::string object, ncclComm_t comm, cudaEvent_t done, std::chrono::milliseconds timeout,
           std::function<void()> finish)
      : op_(op), object_(std::move(object)), comm_(comm), done_(done), timeout_(timeout), finish_(std::move(finish)) {}
  ~NcclWork() override { cudaEventDestroy(done_); }
  void wait(std::chrono::milliseconds timeout) override {
    const auto limit = timeout.count() < 0 ? timeout_ : timeout;
    const auto start = std::chrono::steady_clock::now();
    for (int spin = 0;; ++spin) {
      const cudaError_t state = cudaEventQuery(done_);
      if (state == cudaSuccess) break;
      HPCML_CHECK_AS(CommError, state == cudaErrorNotReady, object_, ": ", op_,
                     " failed on the device: ", cudaGetErrorString(state));
      const auto elapsed = std::chrono::steady_clock::now() - start;
      if (limit.count() > 0 && elapsed > limit) {
        ncclCommAbort(comm_);
        deadline_expired(op_, object_, elapsed, limit);
      }
      if (spin > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    std::call_once(finished_, [this] {
      if (finish_) finish_();
    });
  }
  bool is_completed() override { return cudaEventQuery(done_) != cudaErrorNotReady; }
  std::exception_ptr exception() override { return nullptr; }

 private:
  const char* op_;
  std::string object_;
  ncclComm_t comm_;
  cudaEvent_t done_;
  std::chrono::milliseconds timeout_;
  std::function<void()> finish_;  ///< copies staged CPU results back, once
  std::once_flag finished_;
};

class NcclBackend final : public Backend {
 public:
  NcclBackend(BackendPtr bootstrap, int device_index, BackendOptions options)
      : Backend(std::move(options)),
        bootstrap_(std::move(bootstrap)),
        device_(c10::kCUDA, static_cast<c10::DeviceIndex>(device_index)),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_index)) {
    const std::string where = context("init");
    c10::cuda::CUDAGuard guard(device_);
    ncclUniqueId id;
    if (bootstrap_->rank() == 0) HPCML_NCCL_CHECK(where, ncclGetUniqueId(&id));
    at::Tensor bytes = at::empty({static_cast<int64_t>(sizeof id)}, at::kByte);
    if (bootstrap_->rank() == 0) std::memcpy(bytes.data_ptr(), &id, sizeof id);
    bootstrap_->broadcast(bytes);
    std::memcpy(&id, bytes.data_ptr(), sizeof id);
    auto deadline = Watchdog::instance().arm("ncclCommInitRank", comm_name(), options_.timeout);
    HPCML_NCCL_CHECK(where, ncclCommInitRank(&comm_, bootstrap_->size(), id, bootstrap_->rank()));
  }
  ~NcclBackend() override {
    if (comm_ != nullptr) {
      cudaStreamSynchronize(stream_.stream());
      ncclCommDestroy(comm_);
    }
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return bootstrap_->rank(); }
  int size() const override { return bootstrap_->size(); }

 protected:
  bool accepts_device(const c10::Device& device) const override {
    return device.is_cpu() || device == device_;
  }
  std::string accepted_devices() const override { return "tensors on " + device_.str() + " or the CPU (staged)"; }

  WorkPtr do_allreduce(at::Tensor& tensor, const AllreduceOptions& options) override {
    return run("allreduce", options.async, options.timeout, {&tensor}, {}, [&](std::vector<at::Tensor>& t) {
      const ncclRedOp_t op = nccl_op(options.op);
      HPCML_NCCL_CHECK(context("allreduce"), ncclAllReduce(t[0].data_ptr(), t[0].data_ptr(), t[0].numel(),
                                                             nccl_type(t[0].scalar_type()), op, comm_,
                                                             stream_.stream()));
    });
  }
  WorkPtr do_broadcast(at::Tensor& tensor, const BroadcastOptions& options) override {
    return run("broadcast", options.async, options.timeout, {&tensor}, {}, [&](std::vector<at::Tensor>& t) {
      HPCML_NCCL_CHECK(context("broadcast"), ncclBroadcast(t[0].data_ptr(), t[0].data_ptr(), t[0].numel(),
                                                             nccl_type(t[0].scalar_type()), options.root, comm_,
                                                             stream_.stream()));
    });
  }
  WorkPtr do_allgather(std::vector<at::Tensor>& outputs, const at::Tensor& input,
                       const AllgatherOptions& options) override {
    // One broadcast per rank in a group: sizes may differ between ranks.
    std::vector<at::Tensor*> in_out;
    for (auto& o : outputs) in_out.push_back(&o);
    const at::Tensor source = input;
    return run("allgather", options.async, options.timeout, in_out, {source}, [&](std::vector<at::Tensor>& t) {
      const at::Tensor& mine = t.back();
      HPCML_NCCL_CHECK(context("allgather"), ncclGroupStart());
      for (int r = 0; r < size(); ++r) {
        const void* send = r == rank() ? mine.data_ptr() : nullptr;
        HPCML_NCCL_CHECK(context("allgather"), ncclBroadcast(send, t[r].data_ptr(), t[r].numel(),
                                                               nccl_type(t[r].scalar_type()), r, comm_,
                                                               stream_.stream()));
      }
      HPCML_NCCL_CHECK(context("allgather"), ncclGroupEnd());
    });
  }
  WorkPtr do_reduce_scatter(at::Tensor& output, const at::Tensor& input,
                            const ReduceScatterOptions& options) override {
    return run("reduce_scatter", options.async, options.timeout, {&output}, {input}, [&](std::vector<at::Tensor>& t) {
      HPCML_NCCL_CHECK(context("reduce_scatter"),
                       ncclReduceScatter(t[1].data_ptr(), t[0].data_ptr(), t[0].numel(), nccl_type(t[0].scalar_type()),
                                         nccl_op(options.op), comm_, stream_.stream()));
    });
  }
  WorkPtr do_alltoall(at::Tensor& output, const at::Tensor& input, const AlltoallOptions& options) override {
    return run("alltoall", options.async, options.timeout, {&output}, {input}, [&](std::vector<at::Tensor>& t) {
      const int64_t block = t[0].numel() / size();
      const auto type = nccl_type(t[0].scalar_type());
      const int64_t bytes = block * static_cast<int64_t>(t[0].element_size());
      auto* out = static_cast<char*>(t[0].data_ptr());
      const auto* in = static_cast<const char*>(t[1].data_ptr());
      HPCML_NCCL_CHECK(context("alltoall"), ncclGroupStart());
      for (int r = 0; r < size(); ++r) {
        HPCML_NCCL_CHECK(context("alltoall"), ncclSend(in + r * bytes, block, type, r, comm_, stream_.stream()));
        HPCML_NCCL_CHECK(context("alltoall"), ncclRecv(out + r * bytes, block, type, r, comm_, stream_.stream()));
      }
      HPCML_NCCL_CHECK(context("alltoall"), ncclGroupEnd());
    });
  }
  WorkPtr do_barrier(const BarrierOptions& options) override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kInt).device(device_));
    AllreduceOptions sync;
    sync.timeout = options.timeout;
    return do_allreduce(one, sync);
  }
  std::shared_ptr<Backend> do_split(int color, int key, BackendOptions options) override {
    auto sub = bootstrap_->split(color, key, options.name.substr(options.name.rfind('/') + 1));
    if (!sub) return nullptr;
    return std::make_shared<NcclBackend>(sub, device_.index(), std::move(options));
  }

 private:
  // Stages CPU tensors through the device, orders the collective after the caller's
  // stream, runs `body` on the backend's stream, and returns a Work whose wait()
  // copies staged results back. `outputs` are written in place; `inputs` read only.
  template <typename Body>
  WorkPtr run(const char* op, bool async, std::chrono::milliseconds timeout, std::vector<at::Tensor*> outputs,
              std::vector<at::Tensor> inputs, Body&& body) {
    c10::cuda::CUDAGuard guard(device_);
    const auto caller = c10::cuda::getCurrentCUDAStream(device_.index());
    std::vector<at::Tensor> on_device;
    std::vector<std::pair<at::Tensor, at::Tensor>> copy_back;  // (caller's CPU tensor, staged device tensor)
    for (at::Tensor* t : outputs) {
      if (t->device().is_cpu()) {
        on_device.push_back(t->to(device_));
        copy_back.emplace_back(*t, on_device.back());
      } else {
        on_device.push_back(*t);
      }
    }
    for (const auto& t : inputs) on_device.push_back(t.device().is_cpu() ? t.to(device_) : t);
    cudaEvent_t ready = nullptr;
    cudaEvent_t done = nullptr;
    HPCML_CUDA_CHECK(context(op), cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    HPCML_CUDA_CHECK(context(op), cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    HPCML_CUDA_CHECK(context(op), cudaEventRecord(ready, caller.stream()));
    HPCML_CUDA_CHECK(context(op), cudaStreamWaitEvent(stream_.stream(), ready, 0));
    cudaEventDestroy(ready);
    body(on_device);
    // The allocator must not reuse these tensors' memory before the stream is done.
    for (auto& t : on_device) c10::cuda::CUDACachingAllocator::recordStream(t.storage().data_ptr(), stream_);
    HPCML_CUDA_CHECK(context(op), cudaEventRecord(done, stream_.stream()));
    HPCML_CUDA_CHECK(context(op), cudaStreamWaitEvent(caller.stream(), done, 0));
    auto finish = [copy_back]() mutable {
      for (auto& [cpu, staged] : copy_back) cpu.copy_(staged);
    };
    auto work = std::make_shared<NcclWork>(op, context(op), comm_, done, resolve(timeout), std::move(finish));
    if (!async || !copy_back.empty()) work->wait(kDefaultTimeout);
    return work;
  }

  BackendPtr bootstrap_;
  c10::Device device_;
  c10::cuda::CUDAStream stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

BackendPtr make_nccl_backend(BackendPtr bootstrap, int device_index, BackendOptions options) {
  HPCML_CHECK(bootstrap != nullptr, "backend nccl: no bootstrap backend");
  // Every rank must have a device, or rank 0's ncclCommInitRank would wait for ever.
  at::Tensor has = at::tensor({device_index >= 0 ? 1 : 0}, at::kInt);
  AllreduceOptions min_op;
  min_op.op = ReduceOp::kMin;
  bootstrap->allreduce(has, min_op);
  HPCML_CHECK_AS(ConfigError, has.item<int>() == 1, "key 'runtime.backend': expected a CUDA device on every rank for "
                 "backend nccl, found rank(s) without one (this rank ", bootstrap->rank(), ": ",
                 device_index >= 0 ? "has device " + std::to_string(device_index) : std::string("none"),
                 "); use runtime.device: cuda on GPU nodes, or backend mpi");
  return std::make_shared<NcclBackend>(std::move(bootstrap), device_index, std::move(options));
}
#endif

}  // namespace hpcml::collectives
