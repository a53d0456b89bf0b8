/// @file
/// Asynchronous successive halving (ASHA: Li et al., "A System for Massively Parallel
/// Hyperparameter Tuning", MLSys 2020), in the stopping form Optuna's SuccessiveHalvingPruner
/// and Ray Tune's ASHA scheduler use: every trial runs on, and at each rung it reports its
/// metric and is told to continue or stop. Decisions are taken the moment a report arrives,
/// against the reports the rung holds so far; nothing waits for a rung to fill.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "hpo/sampler.hpp"

namespace hpcml::hpo {

/// ASHA's settings; resources are epochs or steps, as the driver counts them.
struct AshaOptions {
  std::int64_t grace_period = 1;      ///< resource of the first rung (> 0)
  std::int64_t reduction_factor = 3;  ///< eta (>= 2)
  std::int64_t max_resource = 81;     ///< a trial's full budget (>= grace_period)
};

/// What a trial does after a rung report.
enum class AshaDecision { kContinue, kStop };

/// The rung bookkeeping of one study. Not thread-safe: the driver calls it from one place (rank
/// 0 of the study's coordinator) and broadcasts the decision.
///
/// Rule (Optuna's SuccessiveHalvingPruner, min_early_stopping_rate 0): rungs sit at
/// grace_period * eta^k for every k with a resource below max_resource. When a trial reports
/// value v at rung k, v joins the rung's n recorded values (this one included) and the trial
/// continues iff v is at least as good as the m-th best of them, m = max(1, floor(n / eta)):
/// the top 1/eta of the rung so far, and, while the rung holds fewer than eta reports, only the
/// best so far (so the very first report at a rung always continues). A NaN value stops the
/// trial and counts as the worst value of the rung.
class Asha {
 public:
  /// @throws hpcml::ConfigError naming 'hpo.scheduler.<key>' for a bad option.
  Asha(Direction direction, AshaOptions options);
  /// The resources at which trials report, ascending; empty when max_resource == grace_period.
  const std::vector<std::int64_t>& rungs() const { return rungs_; }
  /// Records `value` of `trial` at the rung with resource `rung_resource` and decides.
  /// Deterministic: replaying the same reports in the same order gives the same decisions.
  /// @throws hpcml::Error when the resource is not a rung, the trial already reported at this
  ///   rung, or it was told to stop before.
  AshaDecision report(std::int64_t trial, std::int64_t rung_resource, double value);
  /// The values recorded at rung index `k`, in arrival order.
  std::vector<double> values_at(std::size_t k) const;

 private:
  Direction direction_;
  AshaOptions options_;
  std::vector<std::int64_t> rungs_;
  std::vector<std::map<std::int64_t, double>> recorded_;  // per rung: trial -> value
  std::vector<std::vector<double>> arrival_;              // per rung: values in arrival order
  std::set<std::int64_t> stopped_;
};

}  // namespace hpcml::hpo
