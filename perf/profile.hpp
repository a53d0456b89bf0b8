/// @file
/// The training profile `hpcml bench scaling` writes (PROFILE.json) and `hpcml project train`
/// reads: what one rank's step costs, and the gradient buckets.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "perf/step.hpp"

namespace hpcml::perf {

/// PROFILE.json:
/// @code
/// {"model": "particlenet-lite", "batch_per_rank": 128, "threads_per_rank": 1,
///  "compute_per_sample_s": 0.00123, "optimizer_per_step_s": 0.0021, "data_per_sample_s": 0.00001,
///  "parameter_bytes": [4096, 64], "buckets_bytes": [1048000, 3200000],
///  "reducer": {"first_bucket_bytes": 1048576, "bucket_cap_bytes": 26214400, "direct_min_bytes": 262144,
///              "overlap": false}}
/// @endcode
/// buckets_bytes (the real reducer's allreduces, in the order they run) wins over
/// parameter_bytes (bucketed here as the reducer would); one of them is required. model,
/// threads_per_rank and reducer are optional (reducer's keys default to ReducerOptions'; overlap
/// to true); so are backward_fraction (in (0, 1]) and step_compute_s (positive seconds, each
/// timed step's forward + backward). Other keys are ignored, so the harness can add some.
struct Profile {
  std::string model;
  double batch_per_rank = 0;
  int threads_per_rank = 1;
  double compute_per_sample_s = 0;
  double optimizer_per_step_s = 0;
  double data_per_sample_s = 0;
  std::vector<std::int64_t> parameter_bytes;
  std::vector<std::int64_t> buckets_bytes;
  BucketOptions buckets;
  bool overlap = true;
  double backward_fraction = 0;        ///< backward's share of compute; 0: not in the profile
  std::vector<double> step_compute_s;  ///< single steps' compute, seconds (optional): the straggler term
};

/// Reads and checks every key; throws ConfigError
/// "<what>: key 'compute_per_sample_s': expected a positive number, found \"abc\"".
Profile profile_from_json(const nlohmann::json& doc, const std::string& what);

/// The step inputs of a profile (reductions from buckets_bytes, else from parameter_bytes).
StepInputs step_inputs(const Profile& profile);

}  // namespace hpcml::perf
