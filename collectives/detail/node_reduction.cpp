#include "collectives/detail/node_reduction.hpp"

#include <ATen/ATen.h>
#include <c10/util/Half.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives::detail {

namespace {

constexpr int64_t kChunk = 16384;  // elements per claimed chunk: 64 KiB of float32
constexpr size_t kLine = 64;       // one control word per cache line
constexpr size_t kPage = 4096;

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

size_t wire_size(at::ScalarType wire) { return wire == at::kFloat ? 4 : 2; }

int64_t total_of(const std::vector<int64_t>& bucket_numel) {
  int64_t total = 0;
  for (auto n : bucket_numel) total += n;
  return total;
}

size_t control_bytes(int size, size_t buckets) { return round_up((2 + size) * buckets * kLine, kPage); }

size_t slot_bytes(int64_t total, at::ScalarType wire) {
  return round_up(static_cast<size_t>(total) * wire_size(wire), kPage);
}

size_t result_bytes(int64_t total) { return round_up(static_cast<size_t>(total) * 4, kPage); }

inline float widen(float v) { return v; }
inline float widen(c10::BFloat16 v) {
  uint32_t bits = static_cast<uint32_t>(v.x) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float widen(c10::Half v) { return static_cast<float>(v); }

// out[r][i] = scale * (in[0][i] + in[1][i] + ... ) for every rank r, summed in rank
// order in float32. One pass: each element is read once per rank and written once
// per rank. N known at compile time lets the compiler vectorise across i.
template <typename T, int N>
[[gnu::always_inline]] inline void sum_fixed_body(float* const* out, char* const* in, int64_t begin, int64_t count,
                                                  float scale) {
  const T* src[N];
  float* dst[N];
  for (int r = 0; r < N; ++r) {
    src[r] = reinterpret_cast<const T*>(in[r]) + begin;
    dst[r] = out[r] + begin;
  }
  for (int64_t i = 0; i < count; ++i) {
    float sum = widen(src[0][i]);
    for (int r = 1; r < N; ++r) sum += widen(src[r][i]);
    sum *= scale;
    for (int r = 0; r < N; ++r) dst[r][i] = sum;
  }
}

// The same loop compiled for the build's baseline (SSE2) and for AVX2, chosen at run
// time: AVX2 summed the reference MLP's gradients in 0.25-0.28 ms per rank and step
// instead of 0.36-0.40 (the sums are the same bits: adds and one multiply, no FMA).
template <typename T, int N>
void sum_fixed(float* const* out, char* const* in, int64_t begin, int64_t count, float scale) {
  sum_fixed_body<T, N>(out, in, begin, count, scale);
}

template <typename T, int N>
[[gnu::target("avx2")]] void sum_fixed_avx2(float* const* out, char* const* in, int64_t begin, int64_t count,
                                            float scale) {
  sum_fixed_body<T, N>(out, in, begin, count, scale);
}

// Any rank count: accumulate in a buffer, rank by rank, then copy out.
template <typename T>
void sum_any(float* const* out, char* const* in, int n, int64_t begin, int64_t count, float scale) {
  thread_local std::vector<float> acc;
  acc.resize(count);
  const T* first = reinterpret_cast<const T*>(in[0]) + begin;
  for (int64_t i = 0; i < count; ++i) acc[i] = widen(first[i]);
  for (int r = 1; r < n; ++r) {
    const T* src = reinterpret_cast<const T*>(in[r]) + begin;
    for (int64_t i = 0; i < count; ++i) acc[i] += widen(src[i]);
  }
  for (int64_t i = 0; i < count; ++i) acc[i] *= scale;
  for (int r = 0; r < n; ++r) std::memcpy(out[r] + begin, acc.data(), count * sizeof(float));
}

template <typename T>
void sum_ranks(float* const* out, char* const* in, int n, int64_t begin, int64_t count, float scale) {
  // HPCML_NO_AVX2 (non-empty) forces the baseline build (tests run both; also for diagnosis).
  static const bool avx2 = [] {
    const char* off = std::getenv("HPCML_NO_AVX2");
    return __builtin_cpu_supports("avx2") && (off == nullptr || *off == '\0');
  }();
  switch (n) {
    case 2: return (avx2 ? sum_fixed_avx2<T, 2> : sum_fixed<T, 2>)(out, in, begin, count, scale);
    case 3: return (avx2 ? sum_fixed_avx2<T, 3> : sum_fixed<T, 3>)(out, in, begin, count, scale);
    case 4: return (avx2 ? sum_fixed_avx2<T, 4> : sum_fixed<T, 4>)(out, in, begin, count, scale);
    default: return sum_any<T>(out, in, n, begin, count, scale);
  }
}

// Waits politely: spins briefly, then yields the core (ranks may share cores),
// then sleeps; the watchdog guard in reduce() bounds the whole wait.
void pause(int& idle) {
  ++idle;
  if (idle < 64) {
    __builtin_ia32_pause();
  } else if (idle < 20000) {
    sched_yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

size_t NodeReduction::bytes_needed(int size, const std::vector<int64_t>& bucket_numel, at::ScalarType wire) {
  const int64_t total = total_of(bucket_numel);
  size_t bytes = control_bytes(size, bucket_numel.size()) + size * slot_bytes(total, wire);
  if (wire != at::kFloat) bytes += size * result_bytes(total);
  return bytes;
}

NodeReduction::NodeReduction(std::shared_ptr<NodeSharedMemory> memory, int rank, int size,
                             std::vector<int64_t> bucket_numel, at::ScalarType wire)
    : memory_(std::move(memory)), rank_(rank), size_(size), wire_(wire), total_(total_of(bucket_numel)) {
  HPCML_CHECK(wire == at::kFloat || wire == at::kBFloat16 || wire == at::kHalf,
              "node reduction: wire dtype must be float32, bfloat16 or float16; found ", c10::toString(wire));
  HPCML_CHECK(memory_ != nullptr && memory_->bytes() >= bytes_needed(size, bucket_numel, wire),
              "node reduction: shared segment too small");
  char* base = static_cast<char*>(memory_->base());
  const size_t nb = bucket_numel.size();
  auto word = [base](size_t index) { return reinterpret_cast<std::atomic<uint64_t>*>(base + index * kLine); };
  static_assert(std::atomic<uint64_t>::is_always_lock_free, "cross-process atomics need lock-free words");
  int64_t begin = 0;
  for (size_t b = 0; b < nb; ++b) {
    Bucket bucket;
    bucket.begin = begin;
    bucket.numel = bucket_numel[b];
    bucket.chunks = (bucket.numel + kChunk - 1) / kChunk;
    bucket.claimed = word(2 * b);
    bucket.done = word(2 * b + 1);
    buckets_.push_back(bucket);
    begin += bucket.numel;
  }
  for (int r = 0; r < size; ++r) {
    for (size_t b = 0; b < nb; ++b) published_.push_back(word(2 * nb + r * nb + b));
  }
  char* cursor = base + control_bytes(size, nb);
  for (int r = 0; r < size; ++r, cursor += slot_bytes(total_, wire)) slots_.push_back(cursor);
  for (int r = 0; r < size; ++r) {
    if (wire == at::kFloat) {
      results_.push_back(reinterpret_cast<float*>(slots_[r]));
    } else {
      results_.push_back(reinterpret_cast<float*>(cursor));
      cursor += result_bytes(total_);
    }
  }
}

// The tensors keep the mapping alive: gradients that point into it stay valid after
// the reducer is gone.
at::Tensor NodeReduction::slot(int64_t offset, int64_t numel) const {
  return at::from_blob(slots_[rank_] + offset * wire_size(wire_), {numel}, [keep = memory_](void*) {},
                       at::TensorOptions().dtype(wire_));
}

at::Tensor NodeReduction::result(int64_t offset, int64_t numel) const {
  return at::from_blob(results_[rank_] + offset, {numel}, [keep = memory_](void*) {},
                       at::TensorOptions().dtype(at::kFloat));
}

void NodeReduction::publish(int bucket) {
  published_[rank_ * buckets_.size() + bucket]->store(generation_, std::memory_order_release);
}

bool NodeReduction::all_published(int bucket) const {
  for (int r = 0; r < size_; ++r) {
    if (published_[r * buckets_.size() + bucket]->load(std::memory_order_acquire) < generation_) return false;
  }
  return true;
}

void NodeReduction::sum_chunk(const Bucket& bucket, int64_t chunk, float scale) const {
  const int64_t begin = bucket.begin + chunk * kChunk;
  const int64_t count = std::min(kChunk, bucket.begin + bucket.numel - begin);
  switch (wire_) {
    case at::kFloat: return sum_ranks<float>(results_.data(), slots_.data(), size_, begin, count, scale);
    case at::kBFloat16: return sum_ranks<c10::BFloat16>(results_.data(), slots_.data(), size_, begin, count, scale);
    default: return sum_ranks<c10::Half>(results_.data(), slots_.data(), size_, begin, count, scale);
  }
}

bool NodeReduction::work_on(int index, float scale, BucketSpan* span) {
  const Bucket& bucket = buckets_[index];
  // Step g's tickets are [(g-1) * chunks, g * chunks): nobody claims past the step.
  const uint64_t end = generation_ * bucket.chunks;
  const uint64_t first = end - bucket.chunks;
  uint64_t ticket = bucket.claimed->load(std::memory_order_relaxed);
  bool worked = false;
  while (ticket < end) {
    if (!bucket.claimed->compare_exchange_weak(ticket, ticket + 1, std::memory_order_acq_rel)) continue;
    const int64_t start = trace::now_us();
    sum_chunk(bucket, static_cast<int64_t>(ticket - first), scale);
    bucket.done->fetch_add(1, std::memory_order_release);
    if (!worked) span->start_us = start;
    span->end_us = trace::now_us();
    worked = true;
    ticket = bucket.claimed->load(std::memory_order_relaxed);
  }
  return worked;
}

void NodeReduction::reduce(float scale, const std::string& comm, std::chrono::milliseconds timeout,
                           std::vector<BucketSpan>* spans) {
  const int nb = static_cast<int>(buckets_.size());
  spans->assign(nb, {});
  auto guard = Watchdog::instance().arm("gradient reduction (shared memory)", comm, timeout);
  std::vector<char> taken(nb, 0);  // every chunk of it claimed (by some rank)
  int left = nb;
  int idle = 0;
  while (left > 0) {
    bool progressed = false;
    for (int b = 0; b < nb; ++b) {
      if (taken[b] || !all_published(b)) continue;
      work_on(b, scale, &(*spans)[b]);
      taken[b] = 1;
      --left;
      progressed = true;
      idle = 0;
    }
    if (!progressed) pause(idle);
  }
  for (int b = 0; b < nb; ++b) {
    const uint64_t end = generation_ * buckets_[b].chunks;
    while (buckets_[b].done->load(std::memory_order_acquire) < end) pause(idle);
  }
}

}  // namespace hpcml::collectives::detail
