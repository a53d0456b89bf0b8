#include "io/loader.hpp"

#include <ATen/ATen.h>

#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <cstring>
#include <numeric>

#include "core/error.hpp"

namespace hpcml::io {

namespace {

// Pads the events at `positions` of `r` straight from the block: one copy per event,
// and only the padding tail is zeroed.
void collate_padded(const std::string& name, const Block::Ragged& r, const std::vector<int64_t>& positions,
                    int64_t pad_to, Batch& out) {
  const auto n = static_cast<int64_t>(positions.size());
  const int64_t* offsets = r.offsets.data_ptr<int64_t>();
  int64_t longest = 0;
  for (int64_t e : positions) longest = std::max(longest, offsets[e + 1] - offsets[e]);
  const int64_t p = pad_to > 0 ? pad_to : longest;
  at::Tensor mask = at::empty({n, p}, at::kBool);
  auto* m = mask.data_ptr<bool>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = positions[static_cast<size_t>(i)];
    const int64_t count = std::min(p, offsets[e + 1] - offsets[e]);
    std::fill(m + i * p, m + i * p + count, true);
    std::fill(m + i * p + count, m + (i + 1) * p, false);
  }
  for (const auto& [item, values] : r.items) {
    std::vector<int64_t> dims = values.sizes().vec();
    dims[0] = p;
    dims.insert(dims.begin(), n);
    at::Tensor padded = at::empty(dims, values.options());
    int64_t row_bytes = static_cast<int64_t>(values.element_size());
    for (int64_t d = 1; d < values.dim(); ++d) row_bytes *= values.size(d);
    auto* dst = static_cast<char*>(padded.data_ptr());
    const auto* src = static_cast<const char*>(values.data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t e = positions[static_cast<size_t>(i)];
      const int64_t count = std::min(p, offsets[e + 1] - offsets[e]);
      char* row = dst + i * p * row_bytes;
      std::memcpy(row, src + offsets[e] * row_bytes, static_cast<size_t>(count * row_bytes));
      std::memset(row + count * row_bytes, 0, static_cast<size_t>((p - count) * row_bytes));
    }
    out.emplace(name + "/" + item, std::move(padded));
  }
  out.emplace(name + "/mask", std::move(mask));
}

void collate_packed(const std::string& name, const Block::Ragged& r, Batch& out) {
  const int64_t n = r.offsets.size(0) - 1;
  const int64_t* offsets = r.offsets.data_ptr<int64_t>();
  at::Tensor batch = at::empty({offsets[n]}, at::kLong);
  int64_t* b = batch.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) std::fill(b + offsets[i], b + offsets[i + 1], i);
  for (const auto& [item, values] : r.items) out.emplace(name + "/" + item, values);
  out.emplace(name + "/offsets", r.offsets);
  out.emplace(name + "/batch", std::move(batch));
}

}  // namespace

Batch collate(const Block& block, const std::vector<int64_t>& positions, const CollateOptions& options) {
  Batch out;
  at::Tensor index = at::tensor(positions, at::kLong);
  std::vector<int64_t> rows;
  for (int64_t e : positions) {
    HPCML_CHECK(e >= 0 && e < block.size(), "collate: position ", e, " outside the block of ", block.size());
    rows.push_back(block.rows[static_cast<size_t>(e)]);
  }
  for (const auto& [name, t] : block.fixed) out.emplace(name, t.index_select(0, index));
  for (const auto& [name, r] : block.ragged) {
    const auto mode = options.collections.find(name);
    if (mode != options.collections.end() && mode->second == Collation::kPacked) {
      Block one;
      one.rows = block.rows;
      one.ragged.emplace(name, r);
      collate_packed(name, one.select(positions).ragged.at(name), out);
    } else {
      collate_padded(name, r, positions, options.pad_to, out);
    }
  }
  out.emplace("rows", at::tensor(rows, at::kLong));
  return out;
}

Batch collate(const Block& block, const CollateOptions& options) {
  std::vector<int64_t> all(static_cast<size_t>(block.size()));
  std::iota(all.begin(), all.end(), int64_t{0});
  return collate(block, all, options);
}

Loader::Loader(const H5Dataset& dataset, const DistributedSampler& sampler, CollateOptions collate,
               LoaderOptions options)
    : dataset_(dataset),
      sampler_(sampler),
      collate_(std::move(collate)),
      options_(options),
      depth_(options.prefetch >= 0 ? options.prefetch : sampler.steps_per_window() + 1) {}

Loader::~Loader() { stop(); }

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  space_.notify_all();
  ready_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Batch Loader::produce(int64_t step) {
  using Clock = std::chrono::steady_clock;
  const int64_t w = step / sampler_.steps_per_window();
  if (w != window_) {
    const auto t0 = Clock::now();
    window_block_ = Block();  // release the old window before reading the next
    window_block_ = dataset_.read(sampler_.window_rows(w));
    window_ = w;
    window_position_.clear();
    for (int64_t i = 0; i < window_block_.size(); ++i) window_position_[window_block_.rows[static_cast<size_t>(i)]] = i;
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.windows;
    stats_.events += window_block_.size();
    stats_.bytes += window_block_.bytes();
    stats_.read_s += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  const auto t0 = Clock::now();
  std::vector<int64_t> positions;
  for (int64_t row : sampler_.batch(step)) positions.push_back(window_position_.at(row));
  Batch batch = collate(window_block_, positions, collate_);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.collate_s += std::chrono::duration<double>(Clock::now() - t0).count();
  return batch;
}

Loader::Stats Loader::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Loader::run(int64_t first_step) {
  if (options_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(options_.cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);  // best effort: a refusal only costs speed
  }
  try {
    for (int64_t step = first_step; step < sampler_.steps_per_epoch(); ++step) {
      Batch batch = produce(step);
      std::unique_lock<std::mutex> lock(mutex_);
      if (static_cast<int64_t>(queue_.size()) >= depth_) {
        // Full: sleep until the queue is down to half, not at every pop. Each
        // wake-up is a cross-core interrupt that the step's core pays for.
        producer_waiting_ = true;
        space_.wait(lock, [&] { return stopping_ || static_cast<int64_t>(queue_.size()) <= low_water(); });
        producer_waiting_ = false;
      }
      if (stopping_) return;
      queue_.push_back(std::move(batch));
      if (consumer_waiting_) ready_.notify_one();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  finished_ = true;
  ready_.notify_all();
}

void Loader::start(int64_t first_step) {
  stop();
  queue_.clear();
  error_ = nullptr;
  stopping_ = false;
  finished_ = false;
  stats_ = Stats();
  window_ = -1;
  window_block_ = Block();
  next_step_ = first_step;
  if (depth_ > 0) thread_ = std::thread([this, first_step] { run(first_step); });
}

Batch Loader::next() {
  if (depth_ <= 0) {
    HPCML_CHECK_AS(IoError, next_step_ < sampler_.steps_per_epoch(), "loader: the epoch has ",
                   sampler_.steps_per_epoch(), " steps; next() called after the last");
    return produce(next_step_++);
  }
  std::unique_lock<std::mutex> lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options_.timeout_s);
  consumer_waiting_ = true;
  const bool ready = ready_.wait_until(lock, deadline, [&] { return !queue_.empty() || error_ || finished_; });
  consumer_waiting_ = false;
  if (!queue_.empty()) {
    Batch batch = std::move(queue_.front());
    queue_.pop_front();
    if (producer_waiting_ && static_cast<int64_t>(queue_.size()) <= low_water()) space_.notify_one();
    return batch;
  }
  if (error_) std::rethrow_exception(error_);
  HPCML_CHECK_AS(IoError, ready, "loader: no batch after ", options_.timeout_s,
                 " s (io.timeout_s); the reading thread is stuck on the file system");
  HPCML_THROW(IoError, "loader: the epoch has ", sampler_.steps_per_epoch(), " steps; next() called after the last");
}

}  // namespace hpcml::io
