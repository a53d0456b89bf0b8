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
  recorded_.resize(rungs_.size());
  arrival_.resize(rungs_.size());
}

AshaDecision Asha::report(std::int64_t trial, std::int64_t rung_resource, double value) {
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
  HPCML_CHECK(recorded_[k].emplace(trial, v).second, "asha: trial ", trial, " reported twice at resource ",
              rung_resource);
  arrival_[k].push_back(v);

  std::vector<double> values;
  for (const auto& item : recorded_[k]) values.push_back(item.second);
  if (direction_ == Direction::kMinimize) {
    std::sort(values.begin(), values.end());
  } else {
    std::sort(values.begin(), values.end(), std::greater<double>());
  }
  const auto eta = static_cast<std::size_t>(options_.reduction_factor);
  const std::size_t m = std::max<std::size_t>(1, values.size() / eta);
  const double cutoff = values[m - 1];
  const bool keep = !std::isnan(value) && (direction_ == Direction::kMinimize ? v <= cutoff : v >= cutoff);
  if (!keep) stopped_.insert(trial);
  return keep ? AshaDecision::kContinue : AshaDecision::kStop;
}

std::vector<double> Asha::values_at(std::size_t k) const {
  HPCML_CHECK(k < arrival_.size(), "asha: rung ", k, " does not exist (", arrival_.size(), " rungs)");
  return arrival_[k];
}

}  // namespace hpcml::hpo
