/// @file
/// The distributed sampler: which sample indices each rank reads at each step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hpcml::io {

/// What happens to the samples that do not fill a whole global batch.
enum class LastBatch {
  kDrop,  ///< skip them: steps = floor(N / global_batch)
  kPad,   ///< fill the last global batch from the start of the epoch's order: steps = ceil(N / global_batch)
};

/// How a rank's batch is cut from the global batch.
enum class RankSlicing {
  kStrided,     ///< rank r takes positions r, r + W, r + 2W, ... (DDP's DistributedSampler)
  kContiguous,  ///< rank r takes positions [r*b, (r+1)*b): with it, N ranks at batch b see
                ///< exactly the samples of 1 rank at batch N*b (the equivalence tests' mode)
};

struct SamplerOptions {
  int64_t dataset_size = 0;
  int64_t batch_size = 1;  ///< per rank
  int rank = 0;
  int world_size = 1;
  bool shuffle = true;
  uint64_t seed = 0;
  LastBatch last_batch = LastBatch::kDrop;
  RankSlicing slicing = RankSlicing::kStrided;
  /// > 0 selects chunked shuffling for files (then `slicing` is not used): the
  /// dataset is cut into chunks of this many consecutive rows, all ranks permute the
  /// chunks with the same epoch seed, rank r takes the r-th contiguous 1/W of that
  /// sequence (its shard), and shuffles it within windows of `window` rows. Reads
  /// then touch whole chunks, and memory holds one window, whatever the dataset size.
  int64_t chunk_rows = 0;
  /// Rows per shuffle window in chunked mode, rounded up to a multiple of batch_size
  /// so that no batch straddles two windows.
  int64_t window = 0;
};

/// Disjoint per-rank shards of an epoch-seeded permutation.
///
/// Every rank computes the same permutation from (seed, epoch) with its own
/// generator (std::mt19937_64), independent of torch's global generator, so prefetch
/// threads and dropout cannot change the data order. All ranks get the same number
/// of steps per epoch, so none waits in a collective for a batch that never comes.
class DistributedSampler {
 public:
  /// Throws hpcml::ConfigError when the dataset cannot fill one global batch.
  explicit DistributedSampler(SamplerOptions options);

  /// Recomputes the order for `epoch`.
  void set_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }
  int64_t steps_per_epoch() const { return steps_; }
  /// This rank's sample indices for `step` (0-based within the epoch).
  std::vector<int64_t> batch(int64_t step) const;
  const SamplerOptions& options() const { return options_; }

  /// Steps are grouped in windows: a reader loads a window's rows at once (in any
  /// order) and cuts its batches from them. One step per window unless chunked.
  int64_t steps_per_window() const { return window_steps_; }
  /// The rows of window `w` (steps [w * steps_per_window(), ...)), in ascending order.
  std::vector<int64_t> window_rows(int64_t w) const;

 private:
  bool chunked() const { return options_.chunk_rows > 0; }
  // Row at `position` of the epoch's chunk sequence (chunked mode).
  int64_t chunk_sequence_row(int64_t position) const;
  // The shuffled rows of this rank's window `w` (chunked mode).
  std::vector<int64_t> window_order(int64_t w) const;

  SamplerOptions options_;
  int64_t epoch_ = -1;
  int64_t steps_ = 0;
  int64_t window_steps_ = 1;
  std::vector<int64_t> order_;   // sample mode: the epoch's permutation of all rows
  std::vector<int64_t> chunks_;  // chunked mode: the epoch's permutation of chunk indices
  int64_t short_position_ = -1;  // chunked mode: where the last, shorter chunk landed
};

}  // namespace hpcml::io
