#include "hpo/space.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/config.hpp"
#include "core/error.hpp"

namespace hpcml::hpo {
namespace {

constexpr const char* kKeys[] = {"type", "low", "high", "log", "choices", "when", "grid_points"};

// Short text of a JSON value for messages: strings unquoted, numbers in shortest form.
std::string describe(const nlohmann::json& v) {
  if (v.is_string()) return "'" + v.get<std::string>() + "'";
  if (v.is_number_float()) return config::detail::format_double(v.get<double>());
  if (v.is_object()) return "a mapping";
  if (v.is_null()) return "nothing";
  return v.dump();
}

[[noreturn]] void fail(const std::string& key, const std::string& expected, const std::string& found) {
  HPCML_THROW(ConfigError, "config error: key '", key, "': expected ", expected, ", found ", found);
}

double number(const nlohmann::json& entry, const std::string& name, const std::string& key) {
  if (!entry.contains(name)) fail(key + "." + name, "a number", "nothing");
  const auto& v = entry.at(name);
  if (!v.is_number()) fail(key + "." + name, "a number", describe(v));
  const double d = v.get<double>();
  if (!std::isfinite(d)) fail(key + "." + name, "a finite number", describe(v));
  return d;
}

// A scalar choice or condition value as the string the parameter will hold.
std::string scalar_text(const nlohmann::json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_float()) return config::detail::format_double(v.get<double>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  fail(key, "a scalar", describe(v));
}

ParamType parse_type(const nlohmann::json& entry, const std::string& key) {
  if (!entry.contains("type")) fail(key + ".type", "one of [uniform, loguniform, int, categorical]", "nothing");
  const auto& t = entry.at("type");
  const std::string s = t.is_string() ? t.get<std::string>() : "";
  if (s == "uniform") return ParamType::kUniform;
  if (s == "loguniform") return ParamType::kLogUniform;
  if (s == "int") return ParamType::kInt;
  if (s == "categorical") return ParamType::kCategorical;
  fail(key + ".type", "one of [uniform, loguniform, int, categorical]", describe(t));
}

void parse_bounds(const nlohmann::json& entry, const std::string& key, ParamSpec& p) {
  p.low = number(entry, "low", key);
  p.high = number(entry, "high", key);
  if (p.is_int()) {
    for (const char* name : {"low", "high"}) {
      const auto& v = entry.at(name);
      if (!v.is_number_integer()) fail(key + "." + name, "an integer", describe(v));
    }
    if (entry.contains("log")) {
      if (!entry.at("log").is_boolean()) fail(key + ".log", "a boolean", describe(entry.at("log")));
      p.log = entry.at("log").get<bool>();
    }
  } else if (entry.contains("log")) {
    fail(key + ".log", "no 'log' for a " + std::string(to_string(p.type)) + " parameter (use loguniform)",
         describe(entry.at("log")));
  }
  if (!(p.low < p.high)) {
    fail(key, "low < high", config::detail::format_double(p.low) + " >= " + config::detail::format_double(p.high));
  }
  if (p.type == ParamType::kLogUniform) p.log = true;
  if (p.log && p.low <= 0) fail(key + ".low", "> 0 on a log scale", config::detail::format_double(p.low));
  if (entry.contains("grid_points")) {
    const auto& g = entry.at("grid_points");
    if (!g.is_number_integer() || g.get<std::int64_t>() < 2) fail(key + ".grid_points", "an integer >= 2", describe(g));
    p.grid_points = static_cast<int>(std::min<std::int64_t>(g.get<std::int64_t>(), 1000000));
  }
}

void parse_choices(const nlohmann::json& entry, const std::string& key, ParamSpec& p) {
  for (const char* name : {"low", "high", "log", "grid_points"}) {
    if (entry.contains(name))
      fail(key + "." + name, "no '" + std::string(name) + "' for a categorical parameter", describe(entry.at(name)));
  }
  if (!entry.contains("choices")) fail(key + ".choices", "a non-empty list", "nothing");
  const auto& c = entry.at("choices");
  if (!c.is_array() || c.empty()) fail(key + ".choices", "a non-empty list", describe(c));
  std::set<std::string> seen;
  for (size_t i = 0; i < c.size(); ++i) {
    const std::string s = scalar_text(c[i], key + ".choices");
    if (!seen.insert(s).second) fail(key + ".choices", "distinct choices", "'" + s + "' twice");
    p.choices.push_back(s);
  }
}

void parse_condition(const nlohmann::json& entry, const std::string& key, ParamSpec& p) {
  if (!entry.contains("when")) return;
  const auto& w = entry.at("when");
  if (!w.is_object() || w.size() != 1) {
    fail(key + ".when", "a mapping of one parent key to its value(s), e.g. {optimizer.name: sgd}", describe(w));
  }
  Condition c;
  c.parent = w.begin().key();
  const auto& values = w.begin().value();
  if (values.is_array()) {
    if (values.empty()) fail(key + ".when." + c.parent, "a value or a non-empty list", "[]");
    for (const auto& v : values) c.values.push_back(scalar_text(v, key + ".when." + c.parent));
  } else {
    c.values.push_back(scalar_text(values, key + ".when." + c.parent));
  }
  p.condition = c;
}

ParamSpec parse_param(const std::string& name, const nlohmann::json& entry, const std::string& prefix) {
  const std::string key = prefix + "." + name;
  if (!entry.is_object()) fail(key, "a mapping with 'type'", describe(entry));
  for (auto it = entry.begin(); it != entry.end(); ++it) {
    if (std::find(std::begin(kKeys), std::end(kKeys), it.key()) == std::end(kKeys)) {
      HPCML_THROW(ConfigError, "config error: unknown key '", key, ".", it.key(),
                  "'; accepted keys: type, low, high, log, choices, when, grid_points");
    }
  }
  ParamSpec p;
  p.key = name;
  p.type = parse_type(entry, key);
  if (p.is_categorical()) {
    parse_choices(entry, key, p);
  } else {
    if (entry.contains("choices")) fail(key + ".choices", "no 'choices' for a numeric parameter", "a list");
    parse_bounds(entry, key, p);
  }
  parse_condition(entry, key, p);
  return p;
}

// Checks every condition's parent and orders parents first (keys sorted otherwise).
std::vector<ParamSpec> order_by_condition(std::vector<ParamSpec> params, const std::string& prefix) {
  std::map<std::string, const ParamSpec*> by_key;
  for (const auto& p : params) by_key[p.key] = &p;
  for (const auto& p : params) {
    if (!p.condition) continue;
    const std::string where = prefix + "." + p.key + ".when";
    const auto it = by_key.find(p.condition->parent);
    if (it == by_key.end()) fail(where, "a parameter of the space as parent", "'" + p.condition->parent + "'");
    if (!it->second->is_categorical()) {
      fail(where, "a categorical parent", "'" + p.condition->parent + "' of type " + to_string(it->second->type));
    }
    for (const auto& v : p.condition->values) {
      const auto& ch = it->second->choices;
      if (std::find(ch.begin(), ch.end(), v) == ch.end()) {
        fail(where + "." + p.condition->parent, "one of the parent's choices", "'" + v + "'");
      }
    }
  }
  // Depth = number of ancestors; a cycle shows as a chain longer than the space.
  std::map<std::string, size_t> depth;
  for (const auto& p : params) {
    size_t d = 0;
    const ParamSpec* q = &p;
    while (q->condition) {
      if (++d > params.size()) fail(prefix + "." + p.key + ".when", "no cycle of conditions", "a cycle");
      q = by_key.at(q->condition->parent);
    }
    depth[p.key] = d;
  }
  std::stable_sort(params.begin(), params.end(), [&](const ParamSpec& a, const ParamSpec& b) {
    return depth.at(a.key) < depth.at(b.key) || (depth.at(a.key) == depth.at(b.key) && a.key < b.key);
  });
  return params;
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    nlohmann::json out = nlohmann::json::object();
    for (const auto& item : node) out[item.first.as<std::string>()] = yaml_to_json(item.second);
    return out;
  }
  if (node.IsSequence()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& item : node) out.push_back(yaml_to_json(item));
    return out;
  }
  if (!node.IsDefined() || node.IsNull()) return nullptr;
  const std::string& s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted in the YAML: a string whatever it looks like
  std::int64_t i = 0;
  if (YAML::convert<std::int64_t>::decode(node, i)) return i;
  double d = 0;
  if (YAML::convert<double>::decode(node, d)) return d;
  if (s == "true" || s == "false") return s == "true";
  return s;
}

}  // namespace

std::string to_string(const Value& value) {
  if (const auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return config::detail::format_double(*d);
  return std::get<std::string>(value);
}

const char* to_string(ParamType type) {
  switch (type) {
    case ParamType::kUniform:
      return "uniform";
    case ParamType::kLogUniform:
      return "loguniform";
    case ParamType::kInt:
      return "int";
    case ParamType::kCategorical:
      return "categorical";
  }
  return "?";
}

SearchSpace SearchSpace::from_json(const nlohmann::json& node, const std::string& prefix) {
  if (!node.is_object() || node.empty()) {
    fail(prefix, "a non-empty mapping of dotted config keys to parameters", describe(node));
  }
  std::vector<ParamSpec> params;
  for (auto it = node.begin(); it != node.end(); ++it) params.push_back(parse_param(it.key(), it.value(), prefix));
  SearchSpace space;
  space.params_ = order_by_condition(std::move(params), prefix);
  return space;
}

SearchSpace SearchSpace::from_yaml(const YAML::Node& node, const std::string& prefix) {
  return from_json(yaml_to_json(node), prefix);
}

const ParamSpec& SearchSpace::param(const std::string& key) const {
  for (const auto& p : params_) {
    if (p.key == key) return p;
  }
  HPCML_THROW(Error, "hpo: no parameter '", key, "' in the search space");
}

bool SearchSpace::is_active(const ParamSpec& spec, const Params& assigned) const {
  if (!spec.condition) return true;
  const auto it = assigned.find(spec.condition->parent);
  if (it == assigned.end()) return false;  // the parent is itself inactive
  const auto* s = std::get_if<std::string>(&it->second);
  return s &&
         std::find(spec.condition->values.begin(), spec.condition->values.end(), *s) != spec.condition->values.end();
}

void SearchSpace::check(const Params& params) const {
  for (const auto& item : params) param(item.first);  // no unknown key
  for (const auto& p : params_) {
    const auto it = params.find(p.key);
    const bool active = is_active(p, params);
    if (!active) {
      HPCML_CHECK(it == params.end(), "hpo: parameter '", p.key, "' is set but inactive (its condition on '",
                  p.condition->parent, "' does not hold)");
      continue;
    }
    HPCML_CHECK(it != params.end(), "hpo: parameter '", p.key, "' is active but missing");
    const Value& v = it->second;
    if (p.is_categorical()) {
      const auto* s = std::get_if<std::string>(&v);
      HPCML_CHECK(s && std::find(p.choices.begin(), p.choices.end(), *s) != p.choices.end(), "hpo: parameter '", p.key,
                  "': expected one of its choices, found '", to_string(v), "'");
    } else if (p.is_int()) {
      const auto* i = std::get_if<std::int64_t>(&v);
      HPCML_CHECK(i && *i >= p.low && *i <= p.high, "hpo: parameter '", p.key, "': expected an integer in [",
                  to_string(p.low), ", ", to_string(p.high), "], found ", to_string(v));
    } else {
      const auto* d = std::get_if<double>(&v);
      HPCML_CHECK(d && *d >= p.low && *d <= p.high, "hpo: parameter '", p.key, "': expected a number in [",
                  to_string(p.low), ", ", to_string(p.high), "], found ", to_string(v));
    }
  }
}

nlohmann::json SearchSpace::to_json(const Params& params) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& item : params) {
    std::visit([&](const auto& v) { out[item.first] = v; }, item.second);
  }
  return out;
}

Params SearchSpace::params_from_json(const nlohmann::json& object) const {
  HPCML_CHECK(object.is_object(), "hpo: expected a JSON object of parameters, found ", object.dump());
  Params out;
  for (auto it = object.begin(); it != object.end(); ++it) {
    const ParamSpec& p = param(it.key());
    const auto& v = it.value();
    if (p.is_categorical() && v.is_string()) {
      out[p.key] = v.get<std::string>();
    } else if (p.is_int() && v.is_number_integer()) {
      out[p.key] = v.get<std::int64_t>();
    } else if (!p.is_categorical() && !p.is_int() && v.is_number()) {
      out[p.key] = v.get<double>();
    } else {
      HPCML_THROW(Error, "hpo: parameter '", p.key, "': expected a value of type ", to_string(p.type), ", found ",
                  v.dump());
    }
  }
  check(out);
  return out;
}

Params SearchSpace::params_from_yaml(const YAML::Node& node) const { return params_from_json(yaml_to_json(node)); }

}  // namespace hpcml::hpo
