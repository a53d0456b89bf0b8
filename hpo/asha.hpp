/// @file
/// Asynchronous successive halving (ASHA: Li et al., "A System for Massively Parallel
/// Hyperparameter Tuning", MLSys 2020), in two forms. Nothing waits for a rung to fill in
/// either; both decide against the reports a rung holds so far.
///  - Promotion (the paper's Algorithm 2): a trial pauses at each rung with its checkpoint.
///    Whenever a group frees up, the best paused trial in the top 1/eta of its rung's reports
///    is promoted to the next rung (highest rung first); only when none is, a new trial starts.
///    A trial that ranked below the cut when it reported may be promoted later, once the rung
///    holds enough reports.
///  - Stopping (Optuna's SuccessiveHalvingPruner and Ray Tune's ASHA scheduler): every trial
///    runs on, and at each rung it is told at once to continue or to stop for good.
#pragma once

#include <cstdint>
#include <optional>
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

/// What a trial does after a rung report (the stopping form).
enum class AshaDecision { kContinue, kStop };

/// A paused trial moved on to the next rung (the promotion form).
struct AshaPromotion {
  std::int64_t trial = 0;
  std::int64_t from = 0;  ///< the rung it reported at
  std::int64_t to = 0;    ///< the next rung, or max_resource after the last
};

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
  /// The promotion form: records `value` of `trial` at the rung with resource `rung_resource`;
  /// the trial pauses there. Same checks as report(); do not mix the two forms in one study.
  void record(std::int64_t trial, std::int64_t rung_resource, double value);
  /// The promotion form: the next trial to move on, or nullopt. From the highest rung down, the
  /// trials ranked within the m = floor(n / eta) best of the rung's n reports (ties: earlier
  /// report first) that were not promoted yet; the best of the first rung that has one is
  /// marked promoted and returned. A NaN report is never promoted.
  std::optional<AshaPromotion> promote();
  /// The values recorded at rung index `k`, in arrival order.
  std::vector<double> values_at(std::size_t k) const;

 private:
  Direction direction_;
  AshaOptions options_;
  std::vector<std::int64_t> rungs_;
  struct Report {
    std::int64_t trial;
    double value;  // a NaN recorded as the direction's worst value
  };
  std::size_t add(std::int64_t trial, std::int64_t rung_resource, double value);  // -> rung index
  bool better(double a, double b) const;

  std::vector<std::vector<Report>> arrival_;      // per rung: reports in arrival order
  std::vector<std::set<std::int64_t>> reported_;  // per rung: trials that reported there
  std::vector<std::set<std::int64_t>> promoted_;  // per rung: trials moved on from it
  std::set<std::int64_t> stopped_;
};

}  // namespace hpcml::hpo
