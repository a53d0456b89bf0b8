// DeepCalo: the mid-size CNN that regresses ATLAS electron energy from 4-layer
// calorimeter images (Python twin: models/twins/deepcalo.py; docs/models.md#deepcalo).
#include "models/registry.hpp"
#include "models/zoo/module_model.hpp"

namespace hpcml::models::detail {

namespace {

namespace nn = torch::nn;

constexpr int64_t kLayers = 4;  // calorimeter layers, fed as channels; images are 56 (eta) x 11 (phi)
/// Conv widths of blocks 1..5, chosen for ~1.8 M trainable parameters (the paper's count).
constexpr int64_t kWidths[5] = {32, 64, 128, 192, 208};
/// Spatial size after the four pools (see below): 4 x 1.
constexpr int64_t kFinalCells = 4 * 1;
constexpr double kSlope = 0.01;  // leaky ReLU negative slope (PyTorch's default)

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
  // No bias: the batch norm that follows has its own shift.
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(false));
}
nn::LeakyReLU leaky() { return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(kSlope)); }

/// state_dict names: block1.{0 conv,1 bn}; blockK.{1 conv,2 bn,4 conv,5 bn} for K = 2..5
/// (blockK.0 is the pool); head.{1,3,5} Linear (head.0 is the flatten).
struct DeepCaloImpl : nn::Module {
  DeepCaloImpl() {
    block1->push_back(conv(kLayers, kWidths[0], 5));
    block1->push_back(BatchNorm(kWidths[0]));
    block1->push_back(leaky());
    register_module("block1", block1);
    for (int k = 1; k < 5; ++k) {
      nn::Sequential block;
      // The 11-wide phi axis cannot be halved four times with floor pooling (11 -> 5 -> 2 -> 1 -> 0).
      // All four pools are 2x2, stride 2, with ceil_mode so a partial window at the edge is kept:
      // 56x11 -> 28x6 -> 14x3 -> 7x2 -> 4x1. Same on both axes, no special case.
      block->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2).stride(2).ceil_mode(true)));
      block->push_back(conv(kWidths[k - 1], kWidths[k], 3));
      block->push_back(BatchNorm(kWidths[k]));
      block->push_back(leaky());
      block->push_back(conv(kWidths[k], kWidths[k], 3));
      block->push_back(BatchNorm(kWidths[k]));
      block->push_back(leaky());
      blocks.push_back(register_module("block" + std::to_string(k + 1), block));
    }
    head->push_back(nn::Flatten());
    head->push_back(nn::Linear(kWidths[4] * kFinalCells, 256));
    head->push_back(leaky());
    head->push_back(nn::Linear(256, 64));
    head->push_back(leaky());
    head->push_back(nn::Linear(64, 1));
    register_module("head", head);
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = block1->forward(x);
    for (auto& block : blocks) y = block->forward(y);
    return head->forward(y);
  }

  nn::Sequential block1;
  std::vector<nn::Sequential> blocks;
  nn::Sequential head;
};

}  // namespace

std::unique_ptr<Model> make_deepcalo(uint64_t seed) {
  torch::manual_seed(seed);
  return std::make_unique<ModuleModel<DeepCaloImpl>>("deepcalo", std::make_shared<DeepCaloImpl>());
}

}  // namespace hpcml::models::detail
