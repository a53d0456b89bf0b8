#include "models/registry.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "core/error.hpp"
#include "models/flows/nsf_model.hpp"

namespace hpcml::models {

namespace {

// ParticleNet's inputs: the padded constituent four-momenta (E, px, py, pz) and their mask.
const std::vector<InputSpec> kJetInputs = {{"particles", "constituents/values", {-1, 4}},
                                           {"mask", "constituents/mask", {-1}}};

struct Registered {
  ZooEntry entry;
  std::unique_ptr<Model> (*factory)(uint64_t seed);
  Inputs (*example)(int64_t batch, uint64_t seed) = nullptr;  ///< nullptr: normal values per input shape
};

const std::vector<Registered>& registered() {
  static const std::vector<Registered> kModels = {
      {{"deepcalo",
        "DeepCalo-style CNN (ATLAS electron energy): 5x5 conv block, 4 blocks of max-pool + 2x(3x3 conv, BN, "
        "leaky ReLU), FC 256-64-1; pools are 2x2 with ceil_mode (56x11 -> 28x6 -> 14x3 -> 7x2 -> 4x1)",
        "hpcml.calo.showers", {{"x", "images", {4, 56, 11}}}, "energy", "regression", "configs/deepcalo.yaml"},
       &detail::make_deepcalo},
      {{"facile", "FACILE (CMS HCAL channel energy): BatchNorm on 15 inputs, dense 30-20-10-5-3 with ReLU, then 1",
        "hpcml.calo.channels", {{"x", "inputs", {15}}}, "energy", "regression", "configs/facile.yaml"},
       &detail::make_facile},
      {{"nsf-gw",
        "DINGO-style neural spline flow q(theta | strain) for GW posteriors: whitened strain -> SVD-initialised "
        "projection (64) -> MLP 256-128 -> context 32; 5 x [permutation, LU-linear, RQ-spline coupling (8 bins, "
        "tail bound 3, MLP 128x2)]; output log q (docs/flows.md)",
        "hpcml.gw", {{"theta", "parameters", {5}}, {"strain", "strain", {2048}}}, "parameters", "density",
        "configs/nsf-gw.yaml"},
       &flows::make_nsf_gw},
      {{"particlenet",
        "ParticleNet (jet tagging): 7 features from each constituent's four-momentum, input BN, EdgeConv blocks "
        "k=16 (64,64,64) (128,128,128) (256,256,256), mean pooling over real particles, FC 256 + dropout 0.1, 2 "
        "classes",
        "hpcml.jets", kJetInputs, "label", "classification", "configs/particlenet.yaml"},
       &detail::make_particlenet, &detail::jet_example_inputs},
      {{"particlenet-lite",
        "ParticleNet-Lite: as particlenet with k=7, EdgeConv blocks (32,32,32) (64,64,64), FC 128",
        "hpcml.jets", kJetInputs, "label", "classification", "configs/particlenet-lite.yaml"},
       &detail::make_particlenet_lite, &detail::jet_example_inputs},
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

Inputs example_inputs(const std::string& name, int64_t batch, uint64_t seed) {
  const Registered& r = find(name);
  if (r.example != nullptr) return r.example(batch, seed);
  auto gen = at::detail::createCPUGenerator(seed);
  Inputs inputs;
  for (const auto& spec : r.entry.inputs) {
    std::vector<int64_t> shape{batch};
    shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
    inputs.emplace(spec.name, at::randn(shape, gen));
  }
  return inputs;
}

}  // namespace hpcml::models
