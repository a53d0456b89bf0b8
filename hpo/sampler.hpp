/// @file
/// Samplers: given the trials of a study so far, propose the next point of the space.
///
/// `grid` enumerates the product of every parameter's values, `random` draws uniformly (in log
/// space for log parameters), `tpe` is the Tree-structured Parzen Estimator (hpo/tpe.hpp).
/// Every sampler is deterministic given the history and the state of the Rng it is handed.
/// Samplers hold no per-study state: the history passed to ask() is the whole truth (the
/// driver rebuilds it from its journal), so a resumed study samples as the original would.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hpo/space.hpp"

namespace hpcml::hpo {

/// Whether smaller or larger metric values are better.
enum class Direction { kMinimize, kMaximize };

/// "minimize" or "maximize" to a Direction; ConfigError naming `key` otherwise.
Direction parse_direction(const std::string& text, const std::string& key = "hpo.direction");

/// Whether `a` is strictly better than `b` in `direction` (NaN is never better, and worse than any number).
bool is_better(double a, double b, Direction direction);

/// Where a trial stands. kRunning trials were asked for and have no final value yet.
enum class TrialState { kRunning, kComplete, kPruned, kFailed };

/// One trial as the samplers see it.
struct TrialRecord {
  std::int64_t number = 0;  ///< order of asking (older trials weigh less in TPE beyond 25)
  TrialState state = TrialState::kRunning;
  Params params;
  /// kComplete: the final metric. kPruned: the value it reported at its last rung (may be empty).
  std::optional<double> value;
  /// kPruned: the resource (epochs, steps) of that last rung report.
  double resource = 0;
};

/// The interface of all samplers.
class Sampler {
 public:
  virtual ~Sampler() = default;
  /// "grid", "random" or "tpe".
  virtual const char* name() const = 0;
  /// The next point to evaluate given every trial so far (all states, pending ones included),
  /// or nullopt when the sampler has nothing left to propose (only grid does).
  /// @param[in] history every trial of the study, in any order.
  /// @param[in,out] rng advanced by the draws.
  virtual std::optional<Params> ask(const std::vector<TrialRecord>& history, Rng& rng) const = 0;
};

/// Every combination of parameter values, in a fixed order: parameters in SearchSpace order,
/// the first varying slowest; categorical parameters take their choices in the order written,
/// int parameters every integer of [low, high] (or `grid_points` of them), uniform and
/// loguniform parameters `grid_points` values evenly spaced (in log space for log) from low to
/// high inclusive. An inactive conditional parameter does not multiply the points where it is
/// inactive. ask() returns the first point that no trial of the history (in any state, failed
/// included: a failed point is not retried) has taken.
class GridSampler : public Sampler {
 public:
  /// @throws hpcml::ConfigError naming a float parameter without grid_points, or an int
  ///   range or product over 1,000,000 points.
  explicit GridSampler(SearchSpace space, const std::string& prefix = "hpo.space");
  const char* name() const override { return "grid"; }
  std::optional<Params> ask(const std::vector<TrialRecord>& history, Rng& rng) const override;
  /// All points, in order.
  const std::vector<Params>& points() const { return points_; }
  /// The values the grid uses for one (numeric or categorical) parameter.
  static std::vector<Value> values_of(const ParamSpec& spec);

 private:
  SearchSpace space_;
  std::vector<Params> points_;
};

/// Independent uniform draws: uniform on [low, high), loguniform uniform in log space,
/// int uniform over the integers (log: uniform in log space over [low-0.5, high+0.5], then
/// rounded, as Optuna does), categorical uniform over the choices. Conditional parameters are
/// drawn only when active.
class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(SearchSpace space) : space_(std::move(space)) {}
  const char* name() const override { return "random"; }
  std::optional<Params> ask(const std::vector<TrialRecord>& history, Rng& rng) const override;
  /// One independent draw of the whole space.
  static Params sample(const SearchSpace& space, Rng& rng);

 private:
  SearchSpace space_;
};

/// Draws one value of `spec` uniformly (as RandomSampler).
Value sample_uniform(const ParamSpec& spec, Rng& rng);

}  // namespace hpcml::hpo
