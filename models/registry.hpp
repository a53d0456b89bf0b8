/// @file
/// The model zoo: the named models hpcml builds itself, with what each reads and predicts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model.hpp"

namespace hpcml::models {

/// One input of a zoo model and the dataset field it is read from by default.
struct InputSpec {
  std::string name;            ///< the model's input name ("x", "particles", "mask")
  std::string field;           ///< default dataset field (data.inputs overrides): "inputs", "constituents/values"
  std::vector<int64_t> shape;  ///< per-sample shape; -1: the padded length of a ragged collection
};

/// One zoo model: its name and what the Trainer needs to feed it.
struct ZooEntry {
  std::string name;                 ///< model.name in a config ("facile")
  std::string description;          ///< one line
  std::string input_schema;         ///< dataset schema the inputs come from ("hpcml.calo.channels")
  std::vector<InputSpec> inputs;    ///< in forward's order
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

/// A batch of random inputs shaped as zoo model `name` reads them (seeded by `seed`):
/// normal values for fixed fields; for the jet taggers, `particles` (batch, 100, 4)
/// four-momenta of 20-100 real particles per jet around a common axis, zero-padded,
/// and their `mask`. For tests (the twins) and benchmarks.
Inputs example_inputs(const std::string& name, int64_t batch, uint64_t seed);

namespace detail {
/// The zoo models' constructors (models/zoo/*.cpp); each seeds torch first.
std::unique_ptr<Model> make_facile(uint64_t seed);
std::unique_ptr<Model> make_deepcalo(uint64_t seed);
std::unique_ptr<Model> make_particlenet(uint64_t seed);
std::unique_ptr<Model> make_particlenet_lite(uint64_t seed);
Inputs jet_example_inputs(int64_t batch, uint64_t seed);
}  // namespace detail

}  // namespace hpcml::models
