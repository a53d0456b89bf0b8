/// @file
/// What the drivers whose config is a training config plus a section of their own share
/// (`hpcml hpo`'s `hpo`, `hpcml ensemble`'s `ensemble`): the base training keys, and copies
/// of them to apply overrides to.
#pragma once

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <string>

#include "core/config.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch {

/// A driver config split: its training keys and its own section, deep copies of `file`'s.
struct DriverDocument {
  YAML::Node training;  ///< the root without the section
  YAML::Node section;   ///< the section (a mapping)
};

/// Splits `file` into its training keys and its mapping `section`. @throws ConfigError
/// "config error in <file>: key '<section>': expected a mapping (<what>), found ...".
DriverDocument split_driver_config(const config::Document& file, const std::string& section, const std::string& what);

/// The base training config of a driver config `file`: `training` (the file's root without
/// the driver's section), applied over the training config file `base` when one is given
/// (relative to `file`'s directory; mappings merge key by key). Keys set with --set keep their
/// source, except the section's own. @throws ConfigError naming '<section>.base'.
config::Document base_training_document(const config::Document& file, const YAML::Node& training,
                                        const std::string& base, const std::string& section);

/// A deep copy of `doc` that shares no YAML node with it, to apply overrides to. (Assigning a
/// clone to a copied Document's root would not do: yaml-cpp's Node::operator= on a node that
/// refers to another writes through to it, so the overrides would land in the original.)
config::Document fresh_copy(const config::Document& doc);

/// `base` as a driver's identity keeps it (study.json, ensemble.json): its YAML without the
/// runtime, log and run sections, which may change between runs of one study or ensemble.
std::string base_identity(TrainConfig base);

/// Checks the identity file `kept` (read from `path`) of the directory `dir` (the config key
/// `dir_key`) against this config's `identity`, key by key. `what` names what the directory
/// holds ("a study", "an ensemble").
/// @throws IoError when `kept` is not an object with an "identity" (the file is someone
///   else's); ConfigError naming `dir_key` and the first key that differs.
void check_identity(const nlohmann::json& kept, const nlohmann::json& identity, const std::string& path,
                    const std::string& dir_key, const std::string& dir, const std::string& what);

}  // namespace hpcml::launch
