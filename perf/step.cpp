#include "perf/step.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace hpcml::perf {

std::vector<Reduction> bucket_parameters(const std::vector<std::int64_t>& parameter_bytes,
                                         const BucketOptions& options) {
  HPCML_CHECK_AS(ConfigError, !parameter_bytes.empty(), "parameter sizes: expected at least one parameter");
  HPCML_CHECK_AS(ConfigError, options.first_bucket_bytes > 0 && options.bucket_cap_bytes > 0,
                 "bucket sizes: expected first_bucket_bytes and bucket_cap_bytes > 0, found ",
                 options.first_bucket_bytes, " and ", options.bucket_cap_bytes);
  // The reducer's rule (collectives/gradient_reducer.cpp): reverse registration order; a new
  // bucket when the current one has something and the parameter would overflow its cap.
  std::vector<std::vector<std::int64_t>> buckets;
  std::int64_t cap = options.first_bucket_bytes;
  std::int64_t filled = 0;
  for (auto it = parameter_bytes.rbegin(); it != parameter_bytes.rend(); ++it) {
    HPCML_CHECK_AS(ConfigError, *it > 0, "parameter sizes: expected positive byte counts, found ", *it);
    if (buckets.empty() || (filled > 0 && filled + *it > cap)) {
      if (!buckets.empty()) cap = options.bucket_cap_bytes;
      buckets.emplace_back();
      filled = 0;
    }
    buckets.back().push_back(*it);
    filled += *it;
  }
  // Per bucket: the large ("direct") gradients one by one, then the flat buffer of the rest,
  // as GradientReducer::launch submits them.
  std::vector<Reduction> out;
  for (int b = 0; b < static_cast<int>(buckets.size()); ++b) {
    std::int64_t flat = 0;
    for (std::int64_t bytes : buckets[b]) {
      if (bytes >= options.direct_min_bytes) {
        out.push_back({bytes, b});
      } else {
        flat += bytes;
      }
    }
    if (flat > 0) out.push_back({flat, b});
  }
  return out;
}

std::vector<Reduction> reductions_from_buckets(const std::vector<std::int64_t>& bucket_bytes) {
  std::vector<Reduction> out;
  for (size_t i = 0; i < bucket_bytes.size(); ++i) out.push_back({bucket_bytes[i], static_cast<int>(i)});
  return out;
}

double straggler_factor(const std::vector<double>& samples, int ranks) {
  if (samples.size() < 2 || ranks <= 1) return 1.0;
  std::vector<double> x = samples;
  std::sort(x.begin(), x.end());
  const double m = static_cast<double>(x.size());
  double mean = 0, expected_max = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mean += x[i] / m;
    expected_max += x[i] * (std::pow((i + 1) / m, ranks) - std::pow(i / m, ranks));
  }
  return mean > 0 ? expected_max / mean : 1.0;
}

StepResult simulate_step(const StepInputs& in, int ranks, const Topology& topology, Algorithm algorithm) {
  StepResult r;
  r.ranks = ranks;
  r.nodes = node_count(ranks, topology);
  r.batch_per_rank = in.batch_per_rank;
  // Every rank waits each step for the slowest one's gradients: the step's compute is the
  // expected maximum over the ranks, not the mean (variable events: ragged jets, graphs).
  const double mean_compute = in.compute_per_sample_s * in.batch_per_rank;
  r.compute_s = mean_compute * straggler_factor(in.step_compute_s, ranks);
  r.straggler_s = r.compute_s - mean_compute;
  r.backward_s = r.compute_s * in.backward_fraction;
  r.data_s = in.data_per_sample_s * in.batch_per_rank;
  r.optimizer_s = in.optimizer_per_step_s;

  // Bytes through the end of each bucket: its gradients are final once backward has produced
  // that share of all gradient bytes (backward's time spread evenly over the bytes).
  std::vector<double> through;
  double total = 0;
  for (const auto& red : in.reductions) {
    total += static_cast<double>(red.bytes);
    if (red.bucket >= static_cast<int>(through.size())) through.resize(red.bucket + 1, 0);
  }
  for (const auto& red : in.reductions) through[red.bucket] += static_cast<double>(red.bytes);
  for (size_t b = 1; b < through.size(); ++b) through[b] += through[b - 1];

  double channel_free = 0;  // one communication channel: reductions run one after another
  for (const auto& red : in.reductions) {
    ReductionTiming t;
    t.bytes = red.bytes;
    t.ready_s = in.overlap && total > 0 ? r.backward_s * through[red.bucket] / total : r.backward_s;
    t.start_s = std::max(t.ready_s, channel_free);
    const double cost = allreduce_seconds(algorithm, static_cast<double>(red.bytes), ranks, topology);
    t.end_s = t.start_s + cost;
    channel_free = t.end_s;
    r.comm_s += cost;
    r.timeline.push_back(t);
  }
  r.exposed_comm_s = r.timeline.empty() ? 0 : std::max(0.0, channel_free - r.backward_s);
  r.step_s = r.data_s + r.compute_s + r.exposed_comm_s + r.optimizer_s;
  r.samples_per_s = r.step_s > 0 ? ranks * in.batch_per_rank / r.step_s : 0;
  return r;
}

const char* to_string(ScalingMode mode) { return mode == ScalingMode::kWeak ? "weak" : "strong"; }

ScalingMode parse_scaling_mode(const std::string& name, const std::string& what) {
  if (name == "weak") return ScalingMode::kWeak;
  if (name == "strong") return ScalingMode::kStrong;
  HPCML_THROW(ConfigError, what, ": expected one of [weak, strong], found '", name, "'");
}

std::vector<StepResult> project_scaling(const StepInputs& inputs, const std::vector<int>& ranks,
                                        const Topology& topology, Algorithm algorithm, ScalingMode mode,
                                        double global_batch) {
  const auto at = [&](int n) {
    HPCML_CHECK_AS(ConfigError, n >= 1, "ranks: expected positive rank counts, found ", n);
    StepInputs in = inputs;
    if (mode == ScalingMode::kStrong) {
      HPCML_CHECK_AS(ConfigError, global_batch >= n,
                     "strong scaling: expected a global batch >= the rank count, "
                     "found global batch ",
                     global_batch, " at ", n, " ranks");
      in.batch_per_rank = global_batch / n;
    }
    return simulate_step(in, n, topology, algorithm);
  };
  // One rank's throughput is the reference: the same global batch (strong) or the same batch
  // per rank (weak) on one rank, where nothing is communicated.
  const StepResult one = at(1);
  std::vector<StepResult> out;
  for (int n : ranks) {
    StepResult r = at(n);
    r.efficiency = one.samples_per_s > 0 ? r.samples_per_s / (n * one.samples_per_s) : 0;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace hpcml::perf
