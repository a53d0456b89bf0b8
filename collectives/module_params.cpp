// The only collectives TU that includes the full LibTorch C++ API.
#include "collectives/module_params.hpp"

#include <torch/script.h>
#include <torch/torch.h>

namespace hpcml::collectives {

std::vector<NamedTensor> named_parameters(const torch::nn::Module& module) {
  std::vector<NamedTensor> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<NamedTensor> named_buffers(const torch::nn::Module& module) {
  std::vector<NamedTensor> out;
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<NamedTensor> named_parameters(const torch::jit::Module& module) {
  std::vector<NamedTensor> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out.emplace_back(item.name, item.value);
  return out;
}

std::vector<NamedTensor> named_buffers(const torch::jit::Module& module) {
  std::vector<NamedTensor> out;
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out.emplace_back(item.name, item.value);
  return out;
}

}  // namespace hpcml::collectives
