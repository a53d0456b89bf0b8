// FACILE: the small dense network that regresses CMS HCAL channel energy
// (Python twin: models/twins/facile.py; see docs/models.md#facile).
#include "models/registry.hpp"
#include "models/zoo/module_model.hpp"

namespace hpcml::models::detail {

namespace {

constexpr int64_t kInputs = 15;

/// state_dict names: net.0.* (BatchNorm1d(15)), net.1/3/5/7/9/11.* (Linear).
struct FacileImpl : torch::nn::Module {
  FacileImpl() {
    net->push_back(BatchNorm(kInputs));
    int64_t width = kInputs;
    for (int64_t h : {30, 20, 10, 5, 3}) {
      net->push_back(torch::nn::Linear(width, h));
      net->push_back(torch::nn::ReLU());
      width = h;
    }
    net->push_back(torch::nn::Linear(width, 1));
    register_module("net", net);
  }
  at::Tensor forward(const at::Tensor& x) { return net->forward(x); }

  torch::nn::Sequential net;
};

}  // namespace

std::unique_ptr<Model> make_facile(uint64_t seed) {
  torch::manual_seed(seed);
  return std::make_unique<ModuleModel<FacileImpl>>("facile", std::make_shared<FacileImpl>());
}

}  // namespace hpcml::models::detail
