#include "models/registry.hpp"

#include "core/error.hpp"

namespace hpcml::models {

namespace {

struct Registered {
  ZooEntry entry;
  std::unique_ptr<Model> (*factory)(uint64_t seed);
};

const std::vector<Registered>& registered() {
  static const std::vector<Registered> kModels = {
      {{"deepcalo",
        "DeepCalo-style CNN (ATLAS electron energy): 5x5 conv block, 4 blocks of max-pool + 2x(3x3 conv, BN, "
        "leaky ReLU), FC 256-64-1; pools are 2x2 with ceil_mode (56x11 -> 28x6 -> 14x3 -> 7x2 -> 4x1)",
        "hpcml.calo.showers", "images", {4, 56, 11}, "energy", "regression", "configs/deepcalo.yaml"},
       &detail::make_deepcalo},
      {{"facile", "FACILE (CMS HCAL channel energy): BatchNorm on 15 inputs, dense 30-20-10-5-3 with ReLU, then 1",
        "hpcml.calo.channels", "inputs", {15}, "energy", "regression", "configs/facile.yaml"},
       &detail::make_facile},
  };
  return kModels;
}

const Registered& find(const std::string& name) {
  std::string names;
  for (const auto& r : registered()) {
    if (r.entry.name == name) return r;
    names += (names.empty() ? "" : ", ") + r.entry.name;
  }
  HPCML_THROW(ConfigError, "model.name: expected one of [", names, "], found '", name, "'");
}

}  // namespace

std::vector<ZooEntry> zoo() {
  std::vector<ZooEntry> out;
  for (const auto& r : registered()) out.push_back(r.entry);
  return out;
}

const ZooEntry& zoo_entry(const std::string& name) { return find(name).entry; }

std::unique_ptr<Model> make(const std::string& name, uint64_t seed) { return find(name).factory(seed); }

}  // namespace hpcml::models
