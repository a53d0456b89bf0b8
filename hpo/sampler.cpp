#include "hpo/sampler.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "hpo/detail/math.hpp"

namespace hpcml::hpo {
namespace {

constexpr std::size_t kMaxGridPoints = 1000000;

void enumerate(const SearchSpace& space, std::size_t i, Params& current, std::vector<Params>& out,
               const std::vector<std::vector<Value>>& values, const std::string& prefix) {
  if (i == space.params().size()) {
    HPCML_CHECK_AS(ConfigError, out.size() < kMaxGridPoints, "config error: key '", prefix,
                   "': expected a grid of at most ", kMaxGridPoints, " points, found more");
    out.push_back(current);
    return;
  }
  const ParamSpec& p = space.params()[i];
  if (!space.is_active(p, current)) {
    enumerate(space, i + 1, current, out, values, prefix);
    return;
  }
  for (const Value& v : values[i]) {
    current[p.key] = v;
    enumerate(space, i + 1, current, out, values, prefix);
  }
  current.erase(p.key);
}

}  // namespace

Direction parse_direction(const std::string& text, const std::string& key) {
  if (text == "minimize") return Direction::kMinimize;
  if (text == "maximize") return Direction::kMaximize;
  HPCML_THROW(ConfigError, "config error: key '", key, "': expected one of [minimize, maximize], found '", text, "'");
}

bool is_better(double a, double b, Direction direction) {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return direction == Direction::kMinimize ? a < b : a > b;
}

std::vector<Value> GridSampler::values_of(const ParamSpec& p) {
  std::vector<Value> out;
  if (p.is_categorical()) {
    for (const auto& c : p.choices) out.emplace_back(c);
    return out;
  }
  const auto at = [&](int i) {
    const double f = static_cast<double>(i) / (p.grid_points - 1);
    if (i == p.grid_points - 1) return p.high;  // the ends exactly, not exp(log(x))
    if (i == 0) return p.low;
    return p.log ? std::exp(std::log(p.low) + f * (std::log(p.high) - std::log(p.low))) : p.low + f * (p.high - p.low);
  };
  if (p.is_int()) {
    if (p.grid_points == 0) {
      for (auto v = static_cast<std::int64_t>(p.low); v <= static_cast<std::int64_t>(p.high); ++v) out.emplace_back(v);
      return out;
    }
    for (int i = 0; i < p.grid_points; ++i) {
      const Value v = static_cast<std::int64_t>(std::llround(at(i)));
      if (out.empty() || out.back() != v) out.push_back(v);
    }
    return out;
  }
  for (int i = 0; i < p.grid_points; ++i) out.emplace_back(at(i));
  return out;
}

GridSampler::GridSampler(SearchSpace space, const std::string& prefix) : space_(std::move(space)) {
  std::vector<std::vector<Value>> values;
  for (const auto& p : space_.params()) {
    HPCML_CHECK_AS(ConfigError, p.is_categorical() || p.grid_points > 0 || (p.is_int() && p.high - p.low < 1e6),
                   "config error: key '", prefix, ".", p.key, "': expected grid_points for ",
                   p.is_int() ? "an int range over 1000000 values" : "a float parameter",
                   " with the grid sampler, found none");
    values.push_back(values_of(p));
  }
  Params current;
  enumerate(space_, 0, current, points_, values, prefix);
}

std::optional<Params> GridSampler::ask(const std::vector<TrialRecord>& history, Rng& /*rng*/) const {
  for (const auto& point : points_) {
    const bool taken =
        std::any_of(history.begin(), history.end(), [&](const TrialRecord& t) { return t.params == point; });
    if (!taken) return point;
  }
  return std::nullopt;
}

Value sample_uniform(const ParamSpec& p, Rng& rng) {
  if (p.is_categorical()) return p.choices[detail::uniform_index(rng, p.choices.size())];
  const double u = detail::uniform01(rng);
  if (p.is_int()) {
    const auto low = static_cast<std::int64_t>(p.low);
    const auto high = static_cast<std::int64_t>(p.high);
    if (!p.log)
      return low + static_cast<std::int64_t>(detail::uniform_index(rng, static_cast<std::size_t>(high - low + 1)));
    const double lo = std::log(p.low - 0.5);
    const double hi = std::log(p.high + 0.5);
    return std::clamp<std::int64_t>(std::llround(std::exp(lo + u * (hi - lo))), low, high);
  }
  if (p.log) return std::clamp(std::exp(std::log(p.low) + u * (std::log(p.high) - std::log(p.low))), p.low, p.high);
  return p.low + u * (p.high - p.low);
}

Params RandomSampler::sample(const SearchSpace& space, Rng& rng) {
  Params out;
  for (const auto& p : space.params()) {
    if (space.is_active(p, out)) out[p.key] = sample_uniform(p, rng);
  }
  return out;
}

std::optional<Params> RandomSampler::ask(const std::vector<TrialRecord>& /*history*/, Rng& rng) const {
  return sample(space_, rng);
}

}  // namespace hpcml::hpo
