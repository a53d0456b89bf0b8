/// @file
/// Gradient wire formats: how one value is stored on the wire (float32, bfloat16 or
/// float16), widened to float32 and rounded back. Shared by the shared-memory
/// reduction's summing loops and by optimizer updates that read 16-bit averages
/// directly (launch/train/optim.hpp, ParameterStepper::update). Header-only and
/// branch-free, so the loops that use them vectorise.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/error.hpp"

namespace hpcml::collectives::wire {

struct Fp32 {
  using Store = float;
  static float widen(float v) { return v; }
  static float narrow(float v) { return v; }
};

struct Bf16 {
  using Store = uint16_t;  // bits of a bfloat16
  static float widen(uint16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  // Round to nearest even, as c10::BFloat16(float); branch-free so it vectorises.
  static uint16_t narrow(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    const auto rounded = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    return v != v ? uint16_t{0x7FC0} : rounded;
  }
};

struct Fp16 {
  using Store = c10::Half;
  static float widen(c10::Half v) { return static_cast<float>(v); }
  static c10::Half narrow(float v) { return c10::Half(v); }
};

/// Calls `f(W{})` with the wire format W of `dtype` (float32, bfloat16 or float16);
/// any other dtype is an error naming `who`.
template <typename F>
decltype(auto) visit(at::ScalarType dtype, const char* who, F&& f) {
  switch (dtype) {
    case at::kFloat: return f(Fp32{});
    case at::kBFloat16: return f(Bf16{});
    case at::kHalf: return f(Fp16{});
    default: HPCML_THROW(Error, who, ": gradient dtype must be float32, bfloat16 or float16; found ",
                         c10::toString(dtype));
  }
}

/// Whether loops built for AVX2 (and FMA) may run: the CPU has both and HPCML_NO_AVX2
/// is unset or empty (tests run both builds; also for diagnosis).
inline bool use_avx2() {
  static const bool avx2 = [] {
    const char* off = std::getenv("HPCML_NO_AVX2");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && (off == nullptr || *off == '\0');
  }();
  return avx2;
}

}  // namespace hpcml::collectives::wire
