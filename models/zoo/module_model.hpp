/// @file
/// Adapts a torch::nn module holder to the Model interface (internal to models/zoo).
/// Includes <torch/torch.h>: include it only from zoo TUs.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "models/model.hpp"

namespace hpcml::models::detail {

/// A zoo model: a root torch::nn module `Impl` (with `at::Tensor forward(const at::Tensor&)`)
/// whose parameter and buffer names are those of the Python twin's state_dict().
template <typename Impl>
class ModuleModel final : public Model {
 public:
  ModuleModel(std::string name, std::shared_ptr<Impl> module) : name_(std::move(name)), module_(std::move(module)) {}
  std::string name() const override { return name_; }
  at::Tensor forward(const at::Tensor& inputs) override { return module_->forward(inputs); }
  std::vector<NamedTensor> named_parameters() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : module_->named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
    return out;
  }
  std::vector<NamedTensor> named_buffers() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : module_->named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
    return out;
  }
  void set_training(bool on) override { module_->train(on); }

 private:
  std::string name_;
  std::shared_ptr<Impl> module_;
};

}  // namespace hpcml::models::detail
