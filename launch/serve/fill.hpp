/// @file
/// The batch sizes that fill a model's device: the server's default preferred batch sizes
/// on a GPU (a model's `measure_batch_sizes` key, repository.hpp). At start-up the server
/// times one instance at 1, 2, 4, ..., max_batch_size rows on its device; the sizes from
/// the smallest one whose throughput is within 10% of the best upward are preferred, so
/// the batcher runs a batch as soon as it is that full instead of waiting out
/// max_queue_delay_us for rows that would add little throughput.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "launch/serve/repository.hpp"
#include "models/model.hpp"

namespace hpcml::launch::serve {

/// One point of a model's throughput curve.
struct BatchPoint {
  std::int64_t rows = 0;
  double rows_per_s = 0;
};

/// The measured sizes that fill the device: the smallest `rows` whose throughput reaches
/// `fraction` of the curve's best, and every larger measured size, ascending. Pure.
std::vector<int> filling_sizes(const std::vector<BatchPoint>& curve, double fraction = 0.9);

/// Rows per second of `model` (on `device`, evaluation mode, no grad) at 1, 2, 4, ...
/// rows and at max_batch_size, on synthetic inputs of the entry's shapes (a ragged input:
/// `ragged_items` items per row; a dimension of any size: 1), the output copied to the
/// CPU as the server does. At least 3 timed runs per size after one warm-up, and about
/// `budget_s` seconds in all.
std::vector<BatchPoint> measure_batch_curve(models::Model& model, const ModelEntry& entry, const c10::Device& device,
                                            double budget_s = 2.0, std::int64_t ragged_items = 32);

/// Whether the server measures the entry's preferred sizes on `device`: the key
/// measure_batch_sizes is yes, or auto on a GPU, and no preferred_batch_sizes are given.
bool measures_batch_sizes(const ModelConfig& config, const c10::Device& device);

}  // namespace hpcml::launch::serve
