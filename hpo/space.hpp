/// @file
/// The search space of a study: parameters keyed by a dotted config key, their types and
/// bounds, conditional parameters, and `Params`, one point of the space.
///
/// Pure data and checks: no training code, no MPI, no LibTorch. Parsed from the `hpo.space`
/// mapping of a config (YAML or JSON); every bad entry is one hpcml::ConfigError line naming
/// the key ("config error: key 'hpo.space.optimizer.lr': expected low < high, found 0.1 >= 0.01").
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

namespace hpcml::hpo {

/// The random engine of every sampler. Seeded by the caller; all draws go through
/// hpo's own transforms (not std::*_distribution, whose algorithms differ between standard
/// libraries), so a seed gives the same trials on every platform.
using Rng = std::mt19937_64;

/// One parameter value: `int` parameters are int64, `uniform`/`loguniform` double,
/// `categorical` the chosen string.
using Value = std::variant<std::int64_t, double, std::string>;

/// One point of the space: dotted config key -> value. Inactive conditional parameters are absent.
using Params = std::map<std::string, Value>;

/// A value as text: integers as written, doubles in shortest round-trip form, strings as is.
std::string to_string(const Value& value);

/// Parameter types, as written in the config (`type:`).
enum class ParamType { kUniform, kLogUniform, kInt, kCategorical };

/// "uniform", "loguniform", "int", "categorical".
const char* to_string(ParamType type);

/// A conditional parameter is active only when `parent` (a categorical parameter, itself
/// active) took one of `values`.
struct Condition {
  std::string parent;
  std::vector<std::string> values;
};

/// One parameter of the space.
struct ParamSpec {
  std::string key;  ///< dotted key of the base config, e.g. "optimizer.lr"
  ParamType type = ParamType::kUniform;
  double low = 0;                    ///< inclusive; an integer for kInt
  double high = 0;                   ///< inclusive for kInt; the upper bound of [low, high) otherwise
  bool log = false;                  ///< log scale: always for kLogUniform, `log: true` for kInt
  std::vector<std::string> choices;  ///< kCategorical only, in the order written
  std::optional<Condition> condition;
  int grid_points = 0;  ///< for the grid sampler: points over [low, high] (0: not given)

  bool is_categorical() const { return type == ParamType::kCategorical; }
  bool is_int() const { return type == ParamType::kInt; }
};

/// A validated search space. Parameters are kept sorted by key with every parent before the
/// parameters conditioned on it, so iteration order (and thus sampling and grid order) does not
/// depend on how the config was written.
class SearchSpace {
 public:
  /// Parses the mapping `node` of `key: {type: ..., ...}` entries. `prefix` names the mapping
  /// in errors ("hpo.space"). Accepted keys per parameter:
  ///   type (uniform | loguniform | int | categorical), low, high (numbers; integers for int),
  ///   log (int only), choices (categorical: a non-empty list of distinct scalars, kept as
  ///   strings), when ({parent_key: value or [values]}: the parent must be a categorical of
  ///   the space), grid_points (>= 2, numeric types, for the grid sampler).
  /// @throws hpcml::ConfigError naming the first bad key.
  static SearchSpace from_json(const nlohmann::json& node, const std::string& prefix = "hpo.space");
  /// As from_json, from a YAML mapping (scalars that read as numbers become numbers).
  static SearchSpace from_yaml(const YAML::Node& node, const std::string& prefix = "hpo.space");

  const std::vector<ParamSpec>& params() const { return params_; }
  /// The parameter `key`; hpcml::Error if there is none.
  const ParamSpec& param(const std::string& key) const;
  /// Whether `spec` is active given the values already chosen for its ancestors.
  bool is_active(const ParamSpec& spec, const Params& assigned) const;
  /// Checks that `params` is a point of this space: every active parameter present with the
  /// right type and within bounds, no inactive or unknown key.
  /// @throws hpcml::Error naming the key.
  void check(const Params& params) const;

  /// `params` as a JSON object (int64, double, string values).
  static nlohmann::json to_json(const Params& params);
  /// Reads a JSON object written by to_json back, typed by the space, and check()s it.
  Params params_from_json(const nlohmann::json& object) const;
  /// As params_from_json, from a YAML mapping (a point written in a config: `hpo.enqueue`).
  Params params_from_yaml(const YAML::Node& node) const;

 private:
  std::vector<ParamSpec> params_;
};

}  // namespace hpcml::hpo
