/// @file
/// Which device a rank computes on, and CUDA streams for the code that uses one.
///
/// Device choice goes through LibTorch's API and builds in every line; a build
/// without CUDA (Debian's LibTorch 1.13) simply sees no device. Streams and
/// device names need the CUDA runtime and exist only with HPCML_HAS_CUDA; without
/// it they are no-ops and the names say "no CUDA in this build".
#pragma once

#include <c10/core/Device.h>

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace hpcml::collectives {

/// A rank's device and why it is that one (for `hpcml info` and logs).
struct DeviceChoice {
  c10::Device device{c10::kCPU};
  std::string why;  ///< e.g. "local rank 1 of 2, 2 visible devices" or "runtime.device: cpu"
};

/// Resolves `spec` for a rank: "cpu"; "cuda" (device local_rank % visible, which is
/// the rank's own GPU under `srun --gpus-per-task=1`, where CUDA_VISIBLE_DEVICES
/// shows each task one device, and under mpirun with one rank per GPU); "cuda:N";
/// "auto" (cuda when this rank sees a device, else cpu). Throws hpcml::ConfigError
/// naming `key` when a CUDA device is asked for and none is visible.
DeviceChoice select_device(const std::string& spec, int local_rank, const std::string& key = "runtime.device");

/// CUDA devices this process sees (0 without CUDA).
int visible_devices();

/// "NVIDIA H200, 139.8 GiB, compute capability 9.0" or "cpu".
std::string describe_device(const c10::Device& device);

/// While alive, the current thread's current CUDA stream on `device` is a stream
/// of its own from LibTorch's pool, so work issued under it can overlap another
/// scope's. synchronize() waits for it. On the CPU: does nothing.
class StreamScope {
 public:
  explicit StreamScope(const c10::Device& device);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;
  void synchronize();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// A copy of `t` on `device`; from a CPU tensor to a GPU through pinned memory, so
/// the copy is asynchronous on the current stream. Returns `t` when already there.
at::Tensor to_device(const at::Tensor& t, const c10::Device& device);

/// Host-to-device copies on a CUDA stream of their own, so the next batch's copy
/// overlaps the current batch's compute. start() issues the copies (through pinned
/// memory) and records an event after them; wait() makes the current stream wait for
/// that event and marks each copied tensor as used by the current stream
/// (record_stream), so the caching allocator does not reuse its memory for the copy
/// stream while compute may still read it. One copy in flight at a time. On the CPU,
/// or without CUDA, start() returns its inputs and wait() does nothing.
class AsyncCopy {
 public:
  explicit AsyncCopy(const c10::Device& device);
  ~AsyncCopy();
  AsyncCopy(const AsyncCopy&) = delete;
  AsyncCopy& operator=(const AsyncCopy&) = delete;
  std::vector<at::Tensor> start(const std::vector<at::Tensor>& host);
  void wait(const std::vector<at::Tensor>& copied);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hpcml::collectives
