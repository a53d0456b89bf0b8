#include "collectives/device.hpp"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstdio>
#include <cstdlib>

#include "core/error.hpp"
#include "hpcml/build_config.hpp"

#ifdef HPCML_HAS_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/cuda/CUDAEvent.h>
#include <cuda_runtime_api.h>
#endif

namespace hpcml::collectives {

int visible_devices() { return static_cast<int>(torch::cuda::device_count()); }

DeviceChoice select_device(const std::string& spec, int local_rank, const std::string& key) {
  DeviceChoice choice;
  if (spec == "cpu") {
    choice.why = key + ": cpu";
    return choice;
  }
  const int visible = visible_devices();
  const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string shown = env != nullptr ? std::string(", CUDA_VISIBLE_DEVICES=") + env : std::string();
  if (spec == "auto" && visible == 0) {
    choice.why = key + ": auto, no CUDA device visible" + shown;
    return choice;
  }
  int index = -1;
  if (spec == "cuda" || spec == "auto") {
    index = visible > 0 ? local_rank % visible : 0;
  } else if (spec.rfind("cuda:", 0) == 0) {
    char* end = nullptr;
    const long n = std::strtol(spec.c_str() + 5, &end, 10);
    HPCML_CHECK_AS(ConfigError, end != spec.c_str() + 5 && *end == '\0' && n >= 0 && n < 1024, "key '", key,
                   "': expected cpu, cuda, cuda:N or auto, found '", spec, "'");
    index = static_cast<int>(n);
  } else {
    HPCML_THROW(ConfigError, "key '", key, "': expected cpu, cuda, cuda:N or auto, found '", spec, "'");
  }
#ifndef HPCML_HAS_CUDA
  HPCML_THROW(ConfigError, "key '", key, "': expected cpu or auto, found '", spec,
              "': this hpcml is built without CUDA (LibTorch ", HPCML_TORCH_VERSION,
              "); build with scripts/build.sh --libtorch upstream");
#endif
  HPCML_CHECK_AS(ConfigError, visible > 0, "key '", key, "': expected a CUDA device, found none visible to local rank ",
                 local_rank, shown.empty() ? "" : " (" + shown.substr(2) + ")");
  HPCML_CHECK_AS(ConfigError, index < visible, "key '", key, "': device ", index, " asked for, but local rank ",
                 local_rank, " sees ", visible, " CUDA device(s)", shown);
  choice.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  choice.why = "local rank " + std::to_string(local_rank) + ", " + std::to_string(visible) + " visible device(s)" + shown;
  return choice;
}

std::string describe_device(const c10::Device& device) {
  if (device.is_cpu()) return "cpu";
#ifdef HPCML_HAS_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess) {
    char line[256];
    std::snprintf(line, sizeof line, "%s, %.1f GiB, compute capability %d.%d", prop.name,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), prop.major, prop.minor);
    return device.str() + " (" + line + ")";
  }
  return device.str() + " (properties unavailable)";
#else
  return device.str() + " (no CUDA in this build)";
#endif
}

#ifdef HPCML_HAS_CUDA
struct StreamScope::State {
  c10::cuda::CUDAStream stream;
  c10::cuda::CUDAStreamGuard guard;
  explicit State(const c10::Device& device)
      : stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())), guard(stream) {}
};
StreamScope::StreamScope(const c10::Device& device) {
  if (device.is_cuda()) state_ = std::make_unique<State>(device);
}
void StreamScope::synchronize() {
  if (state_) state_->stream.synchronize();
}
#else
struct StreamScope::State {};
StreamScope::StreamScope(const c10::Device&) {}
void StreamScope::synchronize() {}
#endif
StreamScope::~StreamScope() = default;

#ifdef HPCML_HAS_CUDA
struct AsyncCopy::State {
  c10::Device device;
  c10::cuda::CUDAStream stream;
  at::cuda::CUDAEvent done;
  explicit State(const c10::Device& d)
      : device(d), stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, d.index())) {}
};
AsyncCopy::AsyncCopy(const c10::Device& device) {
  if (device.is_cuda()) state_ = std::make_unique<State>(device);
}
std::vector<at::Tensor> AsyncCopy::start(const std::vector<at::Tensor>& host) {
  if (!state_) return host;
  c10::cuda::CUDAStreamGuard guard(state_->stream);
  std::vector<at::Tensor> out;
  out.reserve(host.size());
  for (const auto& t : host) out.push_back(to_device(t, state_->device));  // on the copy stream
  state_->done.record(state_->stream);
  return out;
}
void AsyncCopy::wait(const std::vector<at::Tensor>& copied) {
  if (!state_) return;
  const auto current = c10::cuda::getCurrentCUDAStream(state_->device.index());
  state_->done.block(current);
  for (const auto& t : copied) {
    if (t.is_cuda()) t.record_stream(current);
  }
}
#else
struct AsyncCopy::State {};
AsyncCopy::AsyncCopy(const c10::Device&) {}
std::vector<at::Tensor> AsyncCopy::start(const std::vector<at::Tensor>& host) { return host; }
void AsyncCopy::wait(const std::vector<at::Tensor>&) {}
#endif
AsyncCopy::~AsyncCopy() = default;

at::Tensor to_device(const at::Tensor& t, const c10::Device& device) {
  if (!t.defined() || t.device() == device) return t;
  if (device.is_cuda() && t.device().is_cpu()) {
    return t.pin_memory().to(device, /*non_blocking=*/true);
  }
  return t.to(device);
}

}  // namespace hpcml::collectives
