#include "io/sampler.hpp"

#include <numeric>
#include <random>

#include "core/error.hpp"

namespace hpcml::io {

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
  set_epoch(0);
}

void DistributedSampler::set_epoch(int64_t epoch) {
  if (epoch == epoch_) return;
  epoch_ = epoch;
  order_.resize(static_cast<size_t>(options_.dataset_size));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (options_.shuffle) {
    // Fisher-Yates with an explicit generator: std::shuffle's algorithm is not
    // specified, and the order must be the same for every build of hpcml.
    std::mt19937_64 gen(options_.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (size_t i = order_.size() - 1; i > 0; --i) {
      const size_t j = static_cast<size_t>(gen() % (i + 1));
      std::swap(order_[i], order_[j]);
    }
  }
}

std::vector<int64_t> DistributedSampler::batch(int64_t step) const {
  HPCML_CHECK(step >= 0 && step < steps_, "sampler: step ", step, " outside the epoch's ", steps_, " steps");
  const int64_t b = options_.batch_size;
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
