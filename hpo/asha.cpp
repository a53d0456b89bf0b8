#include "hpo/asha.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace hpcml::hpo {

Asha::Asha(Direction direction, AshaOptions options) : direction_(direction), options_(options) {
  HPCML_CHECK_AS(ConfigError, options_.grace_period > 0,
                 "config error: key 'hpo.scheduler.grace_period': expected > 0, found ", options_.grace_period);
  HPCML_CHECK_AS(ConfigError, options_.reduction_factor >= 2,
                 "config error: key 'hpo.scheduler.reduction_factor': expected >= 2, found ",
                 options_.reduction_factor);
  HPCML_CHECK_AS(ConfigError, options_.max_resource >= options_.grace_period,
                 "config error: key 'hpo.scheduler.max_resource': expected >= grace_period (", options_.grace_period,
                 "), found ", options_.max_resource);
  for (std::int64_t r = options_.grace_period; r < options_.max_resource; r *= options_.reduction_factor) {
    rungs_.push_back(r);
    if (r > std::numeric_limits<std::int64_t>::max() / options_.reduction_factor) break;
  }
  arrival_.resize(rungs_.size());
  reported_.resize(rungs_.size());
  promoted_.resize(rungs_.size());
}

bool Asha::better(double a, double b) const { return direction_ == Direction::kMinimize ? a < b : a > b; }

std::size_t Asha::add(std::int64_t trial, std::int64_t rung_resource, double value) {
  const auto it = std::find(rungs_.begin(), rungs_.end(), rung_resource);
  HPCML_CHECK(it != rungs_.end(), "asha: trial ", trial, " reported at resource ", rung_resource,
              ", which is not a rung (grace_period ", options_.grace_period, " * ", options_.reduction_factor,
              "^k below ", options_.max_resource, ")");
  HPCML_CHECK(!stopped_.count(trial), "asha: trial ", trial, " reported at resource ", rung_resource,
              " after it was told to stop");
  const auto k = static_cast<std::size_t>(it - rungs_.begin());
  // A NaN is the worst value of the rung.
  const double worst = direction_ == Direction::kMinimize ? std::numeric_limits<double>::infinity()
                                                          : -std::numeric_limits<double>::infinity();
  const double v = std::isnan(value) ? worst : value;
  HPCML_CHECK(reported_[k].insert(trial).second, "asha: trial ", trial, " reported twice at resource ",
              rung_resource);
  arrival_[k].push_back({trial, v});
  return k;
}

AshaDecision Asha::report(std::int64_t trial, std::int64_t rung_resource, double value) {
  const std::size_t k = add(trial, rung_resource, value);
  std::vector<double> values = values_at(k);
  std::sort(values.begin(), values.end(), [this](double a, double b) { return better(a, b); });
  const auto eta = static_cast<std::size_t>(options_.reduction_factor);
  const std::size_t m = std::max<std::size_t>(1, values.size() / eta);
  const double cutoff = values[m - 1];
  const double v = arrival_[k].back().value;
  const bool keep = !std::isnan(value) && !better(cutoff, v);
  if (!keep) stopped_.insert(trial);
  return keep ? AshaDecision::kContinue : AshaDecision::kStop;
}

void Asha::record(std::int64_t trial, std::int64_t rung_resource, double value) {
  add(trial, rung_resource, value);
  if (std::isnan(value)) stopped_.insert(trial);
}

std::optional<AshaPromotion> Asha::promote() {
  const auto eta = static_cast<std::size_t>(options_.reduction_factor);
  for (std::size_t k = rungs_.size(); k-- > 0;) {
    const std::size_t m = arrival_[k].size() / eta;
    if (m == 0) continue;
    std::vector<Report> ranked = arrival_[k];  // best first; stable: ties by arrival
    std::stable_sort(ranked.begin(), ranked.end(),
                     [this](const Report& a, const Report& b) { return better(a.value, b.value); });
    for (std::size_t i = 0; i < m; ++i) {
      const std::int64_t trial = ranked[i].trial;
      if (promoted_[k].count(trial) || stopped_.count(trial)) continue;
      promoted_[k].insert(trial);
      const std::int64_t to = k + 1 < rungs_.size() ? rungs_[k + 1] : options_.max_resource;
      return AshaPromotion{trial, rungs_[k], to};
    }
  }
  return std::nullopt;
}

std::vector<double> Asha::values_at(std::size_t k) const {
  HPCML_CHECK(k < arrival_.size(), "asha: rung ", k, " does not exist (", arrival_.size(), " rungs)");
  std::vector<double> values;
  for (const auto& r : arrival_[k]) values.push_back(r.value);
  return values;
}

}  // namespace hpcml::hpo
