/// @file
/// The step time of data-parallel training at N ranks: compute as an input, the gradient
/// reducer's buckets, each bucket's ready time in backward, the buckets' allreduces one after
/// another on one channel, and strong or weak scaling against one rank.
/// docs/scaling.md#the-performance-model states every assumption.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "perf/allreduce.hpp"

namespace hpcml::perf {

/// The GradientReducer's bucket settings (collectives::ReducerOptions' defaults).
struct BucketOptions {
  std::int64_t first_bucket_bytes = std::int64_t{1} << 20;
  std::int64_t bucket_cap_bytes = std::int64_t{25} << 20;
  std::int64_t direct_min_bytes = std::int64_t{256} << 10;
};

/// One allreduce of a step, in the order the reducer runs them.
struct Reduction {
  std::int64_t bytes = 0;
  int bucket = 0;  ///< the bucket it belongs to; its ready time is the bucket's
};

/// The reductions of hpcml's GradientReducer (MPI transport, no compression) for parameters of
/// these sizes in registration order: buckets fill in reverse order, the first up to
/// first_bucket_bytes, later ones up to bucket_cap_bytes, a parameter that does not fit opening
/// the next bucket (one larger than the cap gets a bucket of its own). In each bucket, every
/// parameter of at least direct_min_bytes is allreduced on its own, in bucket order, then the
/// rest as one flat buffer. Throws ConfigError for a size <= 0 or an empty list.
std::vector<Reduction> bucket_parameters(const std::vector<std::int64_t>& parameter_bytes,
                                         const BucketOptions& options = {});

/// One reduction per given size, each its own bucket (a profile's measured buckets_bytes).
std::vector<Reduction> reductions_from_buckets(const std::vector<std::int64_t>& bucket_bytes);

/// What a step costs on one rank, from a profile.
struct StepInputs {
  double compute_per_sample_s = 0;     ///< forward + backward per sample (an input: measured or given)
  double batch_per_rank = 1;           ///< samples per rank per step
  double optimizer_per_step_s = 0;     ///< the optimizer step
  double data_per_sample_s = 0;        ///< data wait per sample, not hidden by prefetch
  double backward_fraction = 2.0 / 3;  ///< backward's share of compute (backward ~ 2x forward: an assumption)
  bool overlap = true;                 ///< bucket allreduces start during backward
  std::vector<Reduction> reductions;   ///< in the order they run
  /// Measured compute (forward + backward) of single steps at batch_per_rank, seconds; with
  /// two or more, N synchronised ranks wait each step for the slowest: straggler_factor().
  std::vector<double> step_compute_s;
};

/// E[max of `ranks` independent draws] / mean, drawing from the empirical distribution of
/// `samples` (with replacement): sum_i x_(i) [(i/m)^N - ((i-1)/m)^N] / mean, x sorted,
/// m = samples. 1 with fewer than two samples. It grows with N up to max/mean (the largest
/// step measured: the model cannot know a heavier tail than the profile saw).
double straggler_factor(const std::vector<double>& samples, int ranks);

/// When one reduction ran, relative to the start of backward.
struct ReductionTiming {
  std::int64_t bytes = 0;
  double ready_s = 0, start_s = 0, end_s = 0;
};

/// One rank count's step.
struct StepResult {
  int ranks = 1;
  int nodes = 1;
  double batch_per_rank = 0;
  double step_s = 0;     ///< data + compute + exposed communication + optimizer
  double compute_s = 0;  ///< forward + backward of the slowest rank (mean x straggler factor)
  double straggler_s = 0;  ///< of which the wait for the slowest rank (compute_s - the mean compute)
  double backward_s = 0;
  double comm_s = 0;          ///< sum of the allreduces' times
  double exposed_comm_s = 0;  ///< communication after backward ended
  double data_s = 0;
  double optimizer_s = 0;
  double samples_per_s = 0;  ///< ranks * batch_per_rank / step_s
  double efficiency = 1;     ///< samples_per_s / (ranks * samples_per_s at 1 rank)
  std::vector<ReductionTiming> timeline;
};

/// The step at `ranks` ranks: compute is the slowest rank's (straggler_factor); bucket k is ready at backward_s * (bytes through bucket k /
/// all bytes) (without overlap: at backward_s); reductions run one after another,
/// start_k = max(ready_k, end_{k-1}), end_k = start_k + allreduce_seconds(bytes_k);
/// exposed = max(0, end_last - backward_s). Efficiency is left at 1 (project_scaling sets it).
StepResult simulate_step(const StepInputs& inputs, int ranks, const Topology& topology, Algorithm algorithm);

enum class ScalingMode {
  kWeak,    ///< batch per rank fixed
  kStrong,  ///< global batch fixed: batch per rank = global / N
};
const char* to_string(ScalingMode mode);
ScalingMode parse_scaling_mode(const std::string& name, const std::string& what);

/// The step at each rank count, with efficiency against one rank (weak: inputs.batch_per_rank
/// at every N; strong: global_batch / N per rank, compute linear in the batch). Throws
/// ConfigError for a rank count < 1, or (strong) a global batch < N or <= 0.
std::vector<StepResult> project_scaling(const StepInputs& inputs, const std::vector<int>& ranks,
                                        const Topology& topology, Algorithm algorithm, ScalingMode mode,
                                        double global_batch);

}  // namespace hpcml::perf
