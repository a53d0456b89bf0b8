/// @file
/// Named parameters and buffers of LibTorch modules, for the GradientReducer.
#pragma once

#include <vector>

#include "collectives/gradient_reducer.hpp"

namespace torch {
namespace nn {
class Module;
}
namespace jit {
struct Module;
}
}  // namespace torch

namespace hpcml::collectives {

/// Parameters in registration order, with dotted names ("fc1.weight").
std::vector<NamedTensor> named_parameters(const torch::nn::Module& module);
std::vector<NamedTensor> named_buffers(const torch::nn::Module& module);
/// The same for a TorchScript module (torch::jit::load).
std::vector<NamedTensor> named_parameters(const torch::jit::Module& module);
std::vector<NamedTensor> named_buffers(const torch::jit::Module& module);

}  // namespace hpcml::collectives
