/// @file
/// The model zoo: the named models hpcml builds itself, with what each reads and predicts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model.hpp"

namespace hpcml::models {

/// One zoo model: its name and what the Trainer needs to feed it.
struct ZooEntry {
  std::string name;                 ///< model.name in a config ("facile")
  std::string description;          ///< one line
  std::string input_schema;         ///< dataset schema the input comes from ("hpcml.calo.channels")
  std::string input_field;          ///< dataset field fed to forward() ("inputs")
  std::vector<int64_t> input_shape; ///< per-sample shape; forward() takes (batch, input_shape...)
  std::string target_field;         ///< dataset field the output is compared with ("energy")
  std::string task;                 ///< "regression" or "classification"
  std::string default_config;       ///< path from the source root ("configs/facile.yaml")
};

/// Every zoo model, in a fixed order (by name).
std::vector<ZooEntry> zoo();

/// The entry named `name`. Throws hpcml::ConfigError
/// "model.name: expected one of [...], found 'x'" for an unknown name.
const ZooEntry& zoo_entry(const std::string& name);

/// Builds the zoo model `name` with fresh weights: torch::manual_seed(seed), then
/// construction, so the same seed gives the same weights (and the same weights as
/// the Python twin in models/twins/ loaded from a dump). The model is in training
/// mode. Throws hpcml::ConfigError for an unknown name (as zoo_entry).
std::unique_ptr<Model> make(const std::string& name, uint64_t seed);

namespace detail {
/// The zoo models' constructors (models/zoo/*.cpp); each seeds torch first.
std::unique_ptr<Model> make_facile(uint64_t seed);
std::unique_ptr<Model> make_deepcalo(uint64_t seed);
}  // namespace detail

}  // namespace hpcml::models
