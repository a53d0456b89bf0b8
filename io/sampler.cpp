#include "io/sampler.hpp"

#include <algorithm>
#include <numeric>
#include <random>

#include "core/error.hpp"

namespace hpcml::io {

namespace {
// Fisher-Yates with an explicit generator: std::shuffle's algorithm is not
// specified, and the order must be the same for every build of hpcml.
void fisher_yates(std::vector<int64_t>& values, std::mt19937_64 gen) {
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(gen() % i);
    std::swap(values[i - 1], values[j]);
  }
}

std::mt19937_64 epoch_seed(uint64_t seed, int64_t epoch, uint64_t stream) {
  std::seed_seq sequence{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                         static_cast<uint32_t>(epoch), static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  return std::mt19937_64(sequence);
}
}  // namespace

DistributedSampler::DistributedSampler(SamplerOptions options) : options_(options) {
  const int64_t global = options_.batch_size * options_.world_size;
  HPCML_CHECK_AS(ConfigError, options_.batch_size >= 1, "sampler: batch size must be >= 1, found ",
                 options_.batch_size);
  HPCML_CHECK_AS(ConfigError, options_.rank >= 0 && options_.rank < options_.world_size, "sampler: rank ",
                 options_.rank, " outside world of ", options_.world_size);
  HPCML_CHECK_AS(ConfigError, options_.dataset_size >= global, "sampler: the dataset has ", options_.dataset_size,
                 " samples, fewer than one global batch (", options_.batch_size, " per rank x ", options_.world_size,
                 " ranks = ", global, ")");
  steps_ = options_.last_batch == LastBatch::kDrop ? options_.dataset_size / global
                                                   : (options_.dataset_size + global - 1) / global;
  HPCML_CHECK_AS(ConfigError, options_.chunk_rows >= 0 && options_.window >= 0,
                 "sampler: chunk_rows and window must be >= 0, found ", options_.chunk_rows, " and ", options_.window);
  if (chunked()) {
    const int64_t window = std::max(options_.window, options_.batch_size);
    window_steps_ = std::min(steps_, (window + options_.batch_size - 1) / options_.batch_size);
  }
  set_epoch(0);
}

void DistributedSampler::set_epoch(int64_t epoch) {
  if (epoch == epoch_) return;
  epoch_ = epoch;
  if (chunked()) {
    const int64_t n = options_.dataset_size;
    const int64_t chunk = options_.chunk_rows;
    chunks_.resize(static_cast<size_t>((n + chunk - 1) / chunk));
    std::iota(chunks_.begin(), chunks_.end(), int64_t{0});
    if (options_.shuffle) fisher_yates(chunks_, epoch_seed(options_.seed, epoch, 0));
    short_position_ = -1;
    if (n % chunk != 0) {
      const auto last = static_cast<int64_t>(chunks_.size()) - 1;
      short_position_ = std::find(chunks_.begin(), chunks_.end(), last) - chunks_.begin();
    }
    return;
  }
  order_.resize(static_cast<size_t>(options_.dataset_size));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (options_.shuffle) {
    fisher_yates(order_, std::mt19937_64(options_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch)));
  }
}

int64_t DistributedSampler::chunk_sequence_row(int64_t position) const {
  const int64_t n = options_.dataset_size;
  const int64_t chunk = options_.chunk_rows;
  int64_t g = position % n;  // kPad wraps to the start of the sequence
  // Every chunk is `chunk` rows long except the last one, wherever it was permuted to.
  if (short_position_ >= 0 && g >= short_position_ * chunk) {
    const int64_t short_length = n % chunk;
    if (g < short_position_ * chunk + short_length) return chunks_[static_cast<size_t>(short_position_)] * chunk + (g - short_position_ * chunk);
    g += chunk - short_length;
  }
  return chunks_[static_cast<size_t>(g / chunk)] * chunk + g % chunk;
}

std::vector<int64_t> DistributedSampler::window_order(int64_t w) const {
  const int64_t b = options_.batch_size;
  const int64_t shard = steps_ * b;
  const int64_t begin = w * window_steps_ * b;
  const int64_t end = std::min(shard, begin + window_steps_ * b);
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(end - begin));
  for (int64_t p = begin; p < end; ++p) rows.push_back(chunk_sequence_row(options_.rank * shard + p));
  if (options_.shuffle) {
    const uint64_t stream = 1 + (static_cast<uint64_t>(options_.rank) << 32) + static_cast<uint64_t>(w);
    fisher_yates(rows, epoch_seed(options_.seed, epoch_, stream));
  }
  return rows;
}

std::vector<int64_t> DistributedSampler::window_rows(int64_t w) const {
  const int64_t windows = (steps_ + window_steps_ - 1) / window_steps_;
  HPCML_CHECK(w >= 0 && w < windows, "sampler: window ", w, " outside the epoch's ", windows, " windows");
  std::vector<int64_t> rows = chunked() ? window_order(w) : batch(w);
  std::sort(rows.begin(), rows.end());
  return rows;
}

std::vector<int64_t> DistributedSampler::batch(int64_t step) const {
  HPCML_CHECK(step >= 0 && step < steps_, "sampler: step ", step, " outside the epoch's ", steps_, " steps");
  const int64_t b = options_.batch_size;
  if (chunked()) {
    const int64_t w = step / window_steps_;
    const std::vector<int64_t> rows = window_order(w);
    const auto first = rows.begin() + (step - w * window_steps_) * b;
    return {first, first + b};
  }
  const int64_t w = options_.world_size;
  const int64_t base = step * b * w;
  std::vector<int64_t> out(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t position = options_.slicing == RankSlicing::kContiguous ? base + options_.rank * b + i
                                                                          : base + i * w + options_.rank;
    out[static_cast<size_t>(i)] = order_[static_cast<size_t>(position % options_.dataset_size)];  // kPad wraps
  }
  return out;
}

}  // namespace hpcml::io
