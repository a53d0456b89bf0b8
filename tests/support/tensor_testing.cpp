#include "tests/support/tensor_testing.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "collectives/factory.hpp"
#include "core/mpi.hpp"

namespace hpcml::testing {

bool aten_fuses_multiply_add() {
  // LibTorch 1.13's dispatch (aten/src/ATen/native/DispatchStub.cpp): the variable
  // ATEN_CPU_CAPABILITY caps the kernels, else the CPU decides (AVX2 needs FMA too).
  const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
  if (capability != nullptr) {
    const std::string value(capability);
    if (value == "default") return false;
    if (value == "avx2" || value == "avx512") return true;
  }
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

::testing::AssertionResult tensor_near(const at::Tensor& actual, const at::Tensor& expected, double rtol, double atol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << rank_tag() << " shape " << actual.sizes() << " != expected "
                                         << expected.sizes();
  }
  const at::Tensor a = actual.to(at::kDouble).contiguous().view({-1});
  const at::Tensor e = expected.to(at::kDouble).contiguous().view({-1});
  const double* pa = a.data_ptr<double>();
  const double* pe = e.data_ptr<double>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double tolerance = atol + rtol * std::abs(pe[i]);
    if (!(std::abs(pa[i] - pe[i]) <= tolerance)) {
      return ::testing::AssertionFailure() << rank_tag() << " first mismatch at flat index " << i << " of "
                                           << a.numel() << ": actual " << pa[i] << ", expected " << pe[i]
                                           << ", |diff| " << std::abs(pa[i] - pe[i]) << " > tolerance " << tolerance;
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult tensor_equal(const at::Tensor& actual, const at::Tensor& expected) {
  if (actual.scalar_type() != expected.scalar_type()) {
    return ::testing::AssertionFailure() << rank_tag() << " dtype " << actual.scalar_type() << " != expected "
                                         << expected.scalar_type();
  }
  return tensor_near(actual, expected, 0.0, 0.0);
}

at::Tensor seeded_input(uint64_t seed, int rank, int64_t numel, c10::ScalarType dtype) {
  auto gen = at::detail::createCPUGenerator(seed * 1000003ULL + static_cast<uint64_t>(rank));
  if (c10::isFloatingType(dtype)) {
    // Drawn in float32, then converted: the 16-bit inputs are exact, so the
    // reference sees the same numbers the collective does.
    return at::randn({numel}, gen, at::TensorOptions(at::kFloat)).to(dtype);
  }
  if (dtype == at::kByte) return at::randint(0, 40, {numel}, gen, at::TensorOptions(dtype));
  return at::randint(-50, 50, {numel}, gen, at::TensorOptions(dtype));
}

double unit_roundoff(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return std::ldexp(1.0, -8);
    case at::kHalf: return std::ldexp(1.0, -11);
    case at::kFloat: return std::ldexp(1.0, -24);
    case at::kDouble: return std::ldexp(1.0, -53);
    default: return 0.0;
  }
}

hpcml::collectives::BackendPtr test_world() {
  static hpcml::collectives::BackendPtr backend = [] {
    hpcml::collectives::BackendOptions options;
    options.timeout = std::chrono::seconds(60);
    return hpcml::collectives::make_backend(hpcml::mpi_initialized() ? "mpi" : "local", options);
  }();
  return backend;
}

}  // namespace hpcml::testing
