/// @file
/// Small in-memory datasets generated from a seed, for training without files.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace hpcml::io {

/// A dataset held as two tensors: inputs (N, features...) and targets (N, ...).
struct TensorDataset {
  at::Tensor inputs;
  at::Tensor targets;
  int64_t size() const { return inputs.size(0); }
  /// The rows `indices`, in that order.
  std::pair<at::Tensor, at::Tensor> gather(const std::vector<int64_t>& indices) const;
};

/// Classification data a network can learn: x ~ N(0, 1)^features; the label is the
/// arg-max of a fixed random linear "teacher" applied to x, plus label noise.
/// Deterministic in `seed` (its own generator; torch's global one is untouched).
/// Train and validation sets drawn with the same teacher: use the same teacher_seed.
TensorDataset synthetic_classification(int64_t samples, int64_t features, int64_t classes, uint64_t seed,
                                       uint64_t teacher_seed);

}  // namespace hpcml::io
