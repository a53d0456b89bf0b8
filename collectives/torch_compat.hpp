/// @file
/// The one place that knows which LibTorch hpcml is built against.
///
/// hpcml builds against Debian's LibTorch 1.13 (CPU) and against PyTorch 2.x
/// (PyPI's CUDA build, or the user's own; docs/environment.md). Where their C++
/// APIs differ, the difference lives here and in torch_compat.cpp / grad_hook.cpp,
/// behind HPCML_TORCH_AT_LEAST; no other file tests TORCH_VERSION_*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#include <string>

/// True when the LibTorch in use is at least major.minor.
#define HPCML_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace hpcml::compat {

/// "1.13.1", "2.11.0": the LibTorch the binary was compiled against.
std::string libtorch_version();

/// Whether autocast to `dtype` on `device` works in this LibTorch; when not, `why`
/// says so in words fit for a one-line config error. float32 is always fine
/// (no autocast). 1.13: CPU autocast is bf16 only; CUDA bf16 and fp16.
bool autocast_supported(c10::DeviceType device, c10::ScalarType dtype, std::string* why = nullptr);

/// Mixed precision for the current thread while alive: eligible ops (matmul,
/// convolution, ...) on `device` run in `dtype`, the rest in float32, as
/// torch.autocast does. float32: does nothing. Not copyable.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, c10::ScalarType dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool was_enabled_ = false;
  c10::ScalarType was_dtype_ = c10::ScalarType::Float;
};

}  // namespace hpcml::compat
