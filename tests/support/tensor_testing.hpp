/// @file
/// Assertions on tensors that explain themselves, and seeded test inputs.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "collectives/backend.hpp"

namespace hpcml::testing {

/// Checks |actual - expected| <= atol + rtol * |expected| elementwise (compared in
/// float64). On failure reports the first mismatching index, both values, the
/// tolerance and this process's rank.
::testing::AssertionResult tensor_near(const at::Tensor& actual, const at::Tensor& expected, double rtol, double atol);
/// Exact equality (integer dtypes, copies), reported the same way.
::testing::AssertionResult tensor_equal(const at::Tensor& actual, const at::Tensor& expected);

/// A deterministic input of `numel` elements of `dtype` for (`seed`, `rank`):
/// normal values for floating dtypes (exactly representable in 16-bit dtypes),
/// integers in [-50, 50) for int32/int64, [0, 40) for uint8.
at::Tensor seeded_input(uint64_t seed, int rank, int64_t numel, c10::ScalarType dtype);

/// Whether LibTorch's elementwise float kernels on this machine use fused
/// multiply-add (its AVX2 and AVX-512 kernels do; its generic ones, selected by
/// ATEN_CPU_CAPABILITY=default or on a CPU without AVX2 and FMA, do not). Where
/// hpcml's loops and LibTorch's both fuse (or both do not), an update such as
/// p - lr * g is the same arithmetic and can be compared exactly; where one fuses
/// and the other does not, they differ by one rounding per operation.
bool aten_fuses_multiply_add();

/// Unit roundoff of a floating dtype (2^-8 bfloat16, 2^-11 float16, 2^-24 float32, 2^-53 float64).
double unit_roundoff(c10::ScalarType dtype);

/// The world every test shares: the "mpi" backend when MPI is initialised (MPI test
/// binaries), else "local"; a 60 s deadline, so a hung collective fails the test, not CI.
hpcml::collectives::BackendPtr test_world();

}  // namespace hpcml::testing
