#include "collectives/torch_compat.hpp"

#include <ATen/autocast_mode.h>

#include "core/error.hpp"

namespace hpcml::compat {

std::string libtorch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

bool autocast_supported(c10::DeviceType device, c10::ScalarType dtype, std::string* why) {
  if (dtype == c10::ScalarType::Float) return true;
  auto no = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (dtype != c10::ScalarType::BFloat16 && dtype != c10::ScalarType::Half) {
    return no(std::string("autocast to ") + c10::toString(dtype) + " is not defined (bf16 or fp16)");
  }
  if (device != c10::DeviceType::CPU && device != c10::DeviceType::CUDA) {
    return no("autocast on " + c10::DeviceTypeName(device) + " is not supported by hpcml");
  }
#if !HPCML_TORCH_AT_LEAST(2, 0)
  if (device == c10::DeviceType::CPU && dtype == c10::ScalarType::Half) {
    return no("fp16 autocast on the CPU needs LibTorch 2.x; this build has " + libtorch_version() +
              " (use bf16 on the CPU, or fp16 on a GPU)");
  }
#endif
  return true;
}

namespace {
#if HPCML_TORCH_AT_LEAST(2, 4)
bool enabled(c10::DeviceType d) { return at::autocast::is_autocast_enabled(d); }
void set_enabled(c10::DeviceType d, bool on) { at::autocast::set_autocast_enabled(d, on); }
c10::ScalarType dtype_of(c10::DeviceType d) { return at::autocast::get_autocast_dtype(d); }
void set_dtype(c10::DeviceType d, c10::ScalarType t) { at::autocast::set_autocast_dtype(d, t); }
#else
bool enabled(c10::DeviceType d) {
  return d == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}
void set_enabled(c10::DeviceType d, bool on) {
  if (d == c10::DeviceType::CPU) at::autocast::set_cpu_enabled(on);
  else at::autocast::set_enabled(on);
}
c10::ScalarType dtype_of(c10::DeviceType d) {
  return d == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
}
void set_dtype(c10::DeviceType d, c10::ScalarType t) {
  if (d == c10::DeviceType::CPU) at::autocast::set_autocast_cpu_dtype(t);
  else at::autocast::set_autocast_gpu_dtype(t);
}
#endif
}  // namespace

AutocastScope::AutocastScope(c10::DeviceType device, c10::ScalarType dtype) : device_(device) {
  if (dtype == c10::ScalarType::Float) return;
  std::string why;
  HPCML_CHECK_AS(ConfigError, autocast_supported(device, dtype, &why), why);
  was_enabled_ = enabled(device);
  was_dtype_ = dtype_of(device);
  set_enabled(device, true);
  set_dtype(device, dtype);
  at::autocast::increment_nesting();
  active_ = true;
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Leaving the outermost scope drops the cached casts of the weights, as
  // torch.autocast's __exit__ does.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_enabled(device_, was_enabled_);
  set_dtype(device_, was_dtype_);
}

}  // namespace hpcml::compat
