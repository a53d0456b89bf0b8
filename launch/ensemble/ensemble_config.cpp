#include "launch/ensemble/ensemble_config.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <regex>

#include "core/error.hpp"
#include "launch/base_config.hpp"
#include "launch/run_config.hpp"
#include "launch/train/pack.hpp"

namespace hpcml::launch::ensemble {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string yaml_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

// ensemble.variations: {name: {dotted.key: value, ...} or empty}, in the order written.
std::vector<Variation> read_variations(const YAML::Node& node, const std::string& source) {
  std::vector<Variation> out;
  if (!node.IsDefined() || node.IsNull()) return {{"nominal", {}}};
  HPCML_CHECK_AS(ConfigError, node.IsMap() && node.size() > 0, "config error in ", source,
                 ": key 'ensemble.variations': expected a mapping of named variations (name: {dotted.key: value}), "
                 "found ", config::detail::describe_node(node));
  static const std::regex kName("[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}");
  for (const auto& item : node) {
    Variation v;
    v.name = item.first.Scalar();
    HPCML_CHECK_AS(ConfigError, std::regex_match(v.name, kName) && v.name != "bootstrap", "config error in ", source,
                   ": key 'ensemble.variations': expected a variation name of letters, digits, _ . - (at most 64, "
                   "not 'bootstrap'), found '", v.name, "'");
    const YAML::Node& body = item.second;
    HPCML_CHECK_AS(ConfigError, body.IsNull() || body.IsMap(), "config error in ", source,
                   ": key 'ensemble.variations.", v.name, "': expected a mapping of dotted training keys to values "
                   "(or {} for none), found ", config::detail::describe_node(body));
    if (body.IsMap()) {
      for (const auto& o : body) v.overrides.emplace_back(o.first.Scalar(), yaml_text(o.second));
    }
    out.push_back(std::move(v));
  }
  return out;
}

// The variation's training document: the base with its overrides.
config::Document variation_document(const EnsembleConfig& c, const Variation& v) {
  config::Document doc = fresh_copy(c.base);
  for (const auto& [key, value] : v.overrides) {
    HPCML_CHECK_AS(ConfigError, key.rfind("run.", 0) != 0 && key.rfind("ensemble", 0) != 0,
                   "config error: key 'ensemble.variations.", v.name, ".", key,
                   "': a variation overrides training keys; run.* and ensemble.* are the ensemble's own");
    config::apply_override(doc, key + "=" + value, "ensemble.variations." + v.name + "." + key);
  }
  return doc;
}

void check_packing(const EnsembleConfig& c) {
  const auto& e = c.ensemble;
  HPCML_CHECK_AS(ConfigError, c.base_config.train.pack == 1,
                 "config error: key 'train.pack': expected 1 in an ensemble's base config (ensemble.pack packs "
                 "members), found ", c.base_config.train.pack);
  if (e.pack == 1) return;
  HPCML_CHECK_AS(ConfigError, !e.bootstrap, "config error: key 'ensemble.bootstrap': packed members share one "
                 "feed, so they cannot train on resamples of their own; expected false with ensemble.pack ",
                 e.pack, ", or set ensemble.pack: 1");
  for (size_t v = 0; v < c.variations.size(); ++v) {
    TrainConfig t = member_config(c, v, 0);
    t.train.pack = e.pack;
    check_pack(t, /*training=*/true);
  }
}

}  // namespace

EnsembleConfig read_ensemble_config(const config::Document& environment, const config::Document& file) {
  EnsembleConfig c;
  c.environment = environment;
  auto [training, node] = split_driver_config(file, "ensemble", "members, variations, dir, ...");
  c.variations = read_variations(node["variations"], file.source);
  node.remove("variations");
  config::Reader reader(node, "ensemble", file);
  c.ensemble.describe(reader);
  reader.finish();
  HPCML_CHECK_AS(ConfigError, !c.ensemble.dir.empty(),
                 "config error: key 'ensemble.dir': expected a directory, found ''");
  c.base = base_training_document(file, training, c.ensemble.base, "ensemble");
  read_layers(environment, c.base, c.base_config);
  for (size_t v = 0; v < c.variations.size(); ++v) member_config(c, v, 0);  // each variation's own checks
  check_packing(c);
  return c;
}

std::string member_dir(const std::string& dir, const std::string& variation, int64_t k) {
  return (fs::path(dir) / variation / ("member-" + std::to_string(k))).string();
}

std::string bootstrap_file(const std::string& dir, const std::string& variation, int64_t k) {
  return (fs::path(dir) / variation / "bootstrap" / ("member-" + std::to_string(k) + ".h5")).string();
}

TrainConfig variation_config(const EnsembleConfig& c, size_t v) {
  TrainConfig t;
  read_layers(c.environment, variation_document(c, c.variations.at(v)), t);
  return t;
}

TrainConfig member_config(const EnsembleConfig& c, size_t v, int64_t k) {
  const Variation& variation = c.variations.at(v);
  TrainConfig t = variation_config(c, v);
  const int64_t offset = c.ensemble.seed + k + (c.ensemble.seeds == "per_variation" ? int64_t(v) << 20 : 0);
  HPCML_CHECK_AS(ConfigError, t.model.seed + offset < (int64_t{1} << 31) && t.train.seed + offset < (int64_t{1} << 31),
                 "config error: key 'ensemble.seed': member ", k, " of variation ", variation.name,
                 " would have a seed past 2^31 - 1 (model.seed ", t.model.seed, ", train.seed ", t.train.seed,
                 ", offset ", offset, ")");
  t.model.seed = static_cast<int>(t.model.seed + offset);
  t.train.seed = static_cast<int>(t.train.seed + offset);
  t.run.dir = member_dir(c.ensemble.dir, variation.name, k);
  t.run.resume = "auto";
  t.run.overwrite = false;
  if (c.ensemble.bootstrap) {
    HPCML_CHECK_AS(ConfigError, t.data.name == "hdf5", "config error: key 'ensemble.bootstrap': resamples rows of "
                   "HDF5 training files; expected data.name hdf5, found ", t.data.name, " (variation ", variation.name,
                   ")");
    t.data.files = {bootstrap_file(c.ensemble.dir, variation.name, k)};
  }
  return t;
}

std::string task_id(const EnsembleConfig& c, const TaskMembers& t) {
  const std::string& v = c.variations.at(t.variation).name;
  return c.ensemble.pack > 1 ? fmt::format("{}/pack-{}", v, t.first) : fmt::format("{}/member-{}", v, t.first);
}

std::vector<TaskMembers> all_tasks(const EnsembleConfig& c) {
  std::vector<TaskMembers> out;
  const int64_t m = c.ensemble.members, p = c.ensemble.pack;
  for (size_t v = 0; v < c.variations.size(); ++v) {
    for (int64_t first = 0; first < m; first += p) out.push_back({v, first, std::min(p, m - first)});
  }
  return out;
}

json identity(const EnsembleConfig& c) {
  json variations = json::array();
  for (const auto& v : c.variations) {
    json o = json::object();
    for (const auto& [key, value] : v.overrides) o[key] = value;
    variations.push_back({{"name", v.name}, {"overrides", o}});
  }
  const auto& e = c.ensemble;
  return {{"base", base_identity(c.base_config)}, {"variations", variations}, {"seed", e.seed},
          {"seeds", e.seeds},               {"bootstrap", e.bootstrap},  {"pack", e.pack}};
}

}  // namespace hpcml::launch::ensemble
