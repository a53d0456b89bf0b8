/// @file
/// The gradient reducer's shared-memory transport: every rank of one node reads the
/// others' gradients directly, and whichever rank is idle does the summing.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "collectives/node_shared.hpp"

namespace hpcml::collectives::detail {

/// One round of waiting on a shared-memory flag, politely: spins briefly, then
/// yields the core (ranks may share cores), then sleeps; `idle` counts the rounds
/// (start at 0). The caller bounds the whole wait with a watchdog guard.
void pause_politely(int& idle);

/// Sums gradient buckets across the ranks of one node through one shared segment.
///
/// Layout: control words (one cache line each), then one slot per rank holding that
/// rank's gradients in wire precision (float32, bfloat16 or float16, all buckets
/// back to back), then, with 16-bit wires, one result area in the wire precision
/// shared by all ranks.
///
/// A synchronised step, on every rank:
/// 1. begin_step(); then, as backward makes each bucket's gradients final, the
///    rank writes them into its slot (slot()) and publish()es the bucket.
/// 2. reduce(): the rank takes chunks (64 KiB of float32) of any bucket that every
///    rank has published and sums them in rank order in float32. With float32
///    wires it writes the sum in place into every rank's slot. With 16-bit wires
///    it rounds the sum once to the wire precision into the shared result area,
///    and each rank widens finished buckets into its own float32 gradients
///    (`deliver`): results travel in 16 bits too, and the float32 writes stay in
///    the rank's own cache. Chunks are claimed with an atomic counter, so a rank
///    that finished backward early sums while the others still run backward, and
///    nobody waits idle for a message. Returns when every chunk of the step is
///    summed and every bucket delivered.
/// The sum of each element is taken in rank order whoever computes it: results are
/// bit-identical run to run; for float32 equal to a 2-rank MPI_Allreduce's, for
/// 16-bit wires equal to the MPI transport's compressed reduction (float32 sums in
/// rank order, rounded once).
///
/// Safety of reuse across steps: a rank writes its slot for step g+1 only after
/// reduce() of step g returned (every chunk done), and anyone writes a result (in a
/// slot or the result area) for step g+1 only after every rank published step
/// g+1's bucket, that is after every rank finished reading step g's results.
class NodeReduction {
 public:
  /// @param bucket_numel elements of each bucket, in bucket order
  /// @param wire at::kFloat, at::kBFloat16 or at::kHalf
  NodeReduction(std::shared_ptr<NodeSharedMemory> memory, int rank, int size, std::vector<int64_t> bucket_numel,
                at::ScalarType wire);
  /// Bytes of shared memory the layout needs.
  static size_t bytes_needed(int size, const std::vector<int64_t>& bucket_numel, at::ScalarType wire);

  /// This rank's slot for `numel` elements from flat offset `offset` (wire dtype).
  at::Tensor slot(int64_t offset, int64_t numel) const;
  /// The reduced values of the same elements: for float32 wires this rank's slot
  /// itself; for 16-bit wires a view of the shared result area (wire dtype, read it
  /// only inside `deliver`, see reduce()).
  at::Tensor result(int64_t offset, int64_t numel) const;
  /// The same as result(offset, ...).data_ptr(), without making a tensor.
  const void* result_data(int64_t offset) const;
  at::ScalarType wire() const { return wire_; }
  /// With 16-bit wires: widens the shared result of `numel` elements from `offset`
  /// into `out` (float32, contiguous).
  void widen_result(int64_t offset, int64_t numel, float* out) const;
  /// Whether results are rounded to 16 bits in a shared area (16-bit wires).
  bool shared_result() const { return wire_ != at::kFloat; }

  void begin_step() { ++generation_; }
  /// This rank's gradients of `bucket` are in its slot.
  void publish(int bucket);

  struct BucketSpan {
    int64_t start_us = 0;  ///< this rank's first chunk of the bucket began (0: it summed none)
    int64_t end_us = 0;    ///< this rank's last chunk of the bucket ended
  };
  /// Sums every bucket with the other ranks, multiplying by `scale`; returns when
  /// all are done. `deliver(bucket)` is called once per bucket as soon as its result
  /// is complete (with 16-bit wires it should widen_result() it or read result();
  /// the result area may be read only then). A rank that does not take part within
  /// `timeout` ends the job (deadline, naming `comm`).
  void reduce(float scale, const std::string& comm, std::chrono::milliseconds timeout,
              std::vector<BucketSpan>* spans, const std::function<void(int)>& deliver = {});

 private:
  struct Bucket {
    int64_t begin = 0;   // flat element offset
    int64_t numel = 0;
    int64_t chunks = 0;
    std::atomic<uint64_t>* claimed = nullptr;  // tickets handed out, over all steps
    std::atomic<uint64_t>* done = nullptr;     // chunks summed, over all steps
  };
  bool all_published(int bucket) const;
  /// Claims and sums chunks of `bucket` while any are left; false if it got none.
  bool work_on(int bucket, float scale, BucketSpan* span);
  void sum_chunk(const Bucket& bucket, int64_t chunk, float scale) const;

  std::shared_ptr<NodeSharedMemory> memory_;
  int rank_;
  int size_;
  at::ScalarType wire_;
  int64_t total_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<std::atomic<uint64_t>*> published_;  // [rank * buckets + bucket]
  std::vector<char*> slots_;  // per rank, wire dtype
  std::vector<float*> in_place_;  // float32 wires: every rank's slot, where sums go
  char* result_ = nullptr;        // 16-bit wires: the rounded sums, wire dtype
  uint64_t generation_ = 0;
};

}  // namespace hpcml::collectives::detail
