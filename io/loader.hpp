/// @file
/// From rows to batches: collation of ragged collections (padded with a mask, or
/// packed with offsets and a batch index) and a prefetch thread that keeps a bounded
/// queue of collated batches ahead of the training step.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "io/h5_dataset.hpp"
#include "io/sampler.hpp"

namespace hpcml::io {

/// How a ragged collection becomes tensors; the model decides.
enum class Collation {
  kPadded,  ///< "<c>/<item>": (B, P, ...) zero-padded; "<c>/mask": (B, P) bool, true for real items
  kPacked,  ///< "<c>/<item>": (items, ...); "<c>/offsets": (B + 1,); "<c>/batch": (items,) event of each item
};

struct CollateOptions {
  std::map<std::string, Collation> collections;  ///< by collection; unlisted ones are padded
  /// Padded: P = this when > 0 (longer events keep their first P items, shorter are
  /// padded), else the longest event of the batch.
  int64_t pad_to = 0;
};

/// Named tensors of one batch: fixed fields by name, plus the collated collections.
using Batch = std::map<std::string, at::Tensor>;

Batch collate(const Block& block, const CollateOptions& options);
/// The events at `positions` of `block` (in that order), collated without an
/// intermediate copy. "rows" holds their global rows.
Batch collate(const Block& block, const std::vector<int64_t>& positions, const CollateOptions& options);

struct LoaderOptions {
  /// Batches read ahead on a thread; 0 reads on the caller's thread; -1 (auto) holds
  /// one sampler window of batches plus one, so the burst of reading the next window
  /// is covered by batches already queued.
  int64_t prefetch = -1;
  double timeout_s = 600.0;   ///< longest wait for one batch before IoError
  /// The prefetch thread runs on this CPU (sched_setaffinity) when >= 0, so it does
  /// not migrate onto the cores of the compute threads.
  int cpu = -1;
};

/// Iterates one rank's batches of an epoch: reads each sampler window with one
/// H5Dataset::read (whole chunks), cuts its batches, collates them. With prefetch > 0
/// a thread does this while the caller computes; memory is one window plus the queue.
class Loader {
 public:
  Loader(const H5Dataset& dataset, const DistributedSampler& sampler, CollateOptions collate,
         LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Starts (or restarts) epoch `epoch` at step `first_step` (resume); the sampler
  /// must already be set to that epoch.
  void start(int64_t first_step = 0);
  /// Stops the prefetch thread (idempotent); call before changing the sampler's epoch.
  void stop();
  /// The next batch; rows of the batch in "rows" (int64). Throws the reader's error,
  /// IoError after timeout_s without a batch, or when the epoch is exhausted.
  Batch next();
  int64_t steps() const { return sampler_.steps_per_epoch(); }
  /// Queue depth in use (prefetch resolved).
  int64_t depth() const { return depth_; }

  /// What the reading side did since start(): windows read, their bytes and events,
  /// and the seconds spent reading and collating (on whichever thread did it).
  struct Stats {
    int64_t windows = 0;
    int64_t events = 0;
    int64_t bytes = 0;
    double read_s = 0;
    double collate_s = 0;
  };
  Stats stats() const;

 private:
  Batch produce(int64_t step);
  void run(int64_t first_step);

  const H5Dataset& dataset_;
  const DistributedSampler& sampler_;
  CollateOptions collate_;
  LoaderOptions options_;
  int64_t depth_ = 0;

  // The window whose rows are in memory (producer side only).
  int64_t window_ = -1;
  Block window_block_;
  std::map<int64_t, int64_t> window_position_;

  int64_t next_step_ = 0;  // synchronous mode
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable space_;  // the producer waits for room
  std::condition_variable ready_;  // the consumer waits for a batch
  bool producer_waiting_ = false;
  bool consumer_waiting_ = false;
  int64_t low_water() const { return depth_ / 2; }
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stopping_ = false;
  bool finished_ = false;
  Stats stats_;  // guarded by mutex_
};

}  // namespace hpcml::io
