#include "launch/base_config.hpp"

#include <filesystem>

#include "core/error.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

namespace {

// `over`'s keys onto `into`: mappings merge key by key, anything else replaces.
void merge_into(YAML::Node into, const YAML::Node& over) {
  for (const auto& item : over) {
    const std::string key = item.first.Scalar();
    YAML::Node target = into[key];
    if (target.IsDefined() && target.IsMap() && item.second.IsMap()) {
      merge_into(target, item.second);
    } else {
      into[key] = YAML::Clone(item.second);
    }
  }
}

}  // namespace

DriverDocument split_driver_config(const config::Document& file, const std::string& section, const std::string& what) {
  DriverDocument out;
  out.training = YAML::Clone(file.root);
  const YAML::Node node = out.training.IsMap() ? out.training[section] : YAML::Node();
  HPCML_CHECK_AS(ConfigError, node.IsDefined() && node.IsMap(), "config error in ", file.source, ": key '", section,
                 "': expected a mapping (", what, "), found ",
                 node.IsDefined() ? config::detail::describe_node(node) : "nothing");
  out.section = YAML::Clone(node);
  out.training.remove(section);
  return out;
}

config::Document base_training_document(const config::Document& file, const YAML::Node& training,
                                        const std::string& base, const std::string& section) {
  config::Document doc;
  if (base.empty()) {
    doc.root = training;
    doc.source = file.source;
  } else {
    fs::path path = base;
    if (path.is_relative() && fs::exists(file.source)) path = fs::path(file.source).parent_path() / path;
    HPCML_CHECK_AS(ConfigError, fs::is_regular_file(path), "config error in ", file.source, ": key '", section,
                   ".base': expected a training config file, found '", base, "' (",
                   fs::exists(path) ? "not a regular file" : "no such file: " + path.string(), ")");
    doc = config::load(path.string());
    merge_into(doc.root, training);
    doc.source = path.string() + " under " + file.source;
  }
  for (const auto& [key, source] : file.sources) {
    if (key.rfind(section + ".", 0) != 0) doc.sources[key] = source;
  }
  return doc;
}

std::string base_identity(TrainConfig base) {
  base.runtime = {};
  base.log = {};
  base.run = {};
  return config::to_yaml(base);
}

void check_identity(const nlohmann::json& kept, const nlohmann::json& identity, const std::string& path,
                    const std::string& dir_key, const std::string& dir, const std::string& what) {
  HPCML_CHECK_AS(IoError, kept.is_object() && kept.contains("identity"), "'", path, "' is not the identity file of ",
                 what, " (not JSON with an 'identity'); move the directory aside");
  for (const auto& [key, value] : identity.items()) {
    HPCML_CHECK_AS(ConfigError, kept["identity"].value(key, nlohmann::json()) == value, "config error: key '", dir_key,
                   "': '", dir, "' holds ", what, " whose '", key,
                   "' differs from this config's; resume it with its own config, or choose another ", dir_key);
  }
}

config::Document fresh_copy(const config::Document& doc) {
  config::Document copy;
  copy.root = YAML::Clone(doc.root);
  copy.source = doc.source;
  copy.sources = doc.sources;
  return copy;
}

}  // namespace hpcml::launch
