/// @file
/// Adapts a torch::nn module holder to the Model interface (internal to models/zoo).
/// Includes <torch/torch.h>: include it only from zoo TUs.
#pragma once

#include <torch/torch.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "models/batch_norm.hpp"
#include "models/model.hpp"

namespace hpcml::models::detail {

template <typename Impl, typename = void>
struct TakesInputs : std::false_type {};
template <typename Impl>
struct TakesInputs<Impl, std::void_t<decltype(std::declval<Impl&>().forward(std::declval<const Inputs&>()))>>
    : std::true_type {};

/// A zoo model: a root torch::nn module `Impl` whose parameter and buffer names are
/// those of the Python twin's state_dict(). Impl has `at::Tensor forward(const at::Tensor&)`
/// (one input, named "x") or `at::Tensor forward(const Inputs&)` (the names in `inputs`).
template <typename Impl>
class ModuleModel final : public Model {
 public:
  ModuleModel(std::string name, std::shared_ptr<Impl> module, std::vector<std::string> inputs = {"x"})
      : name_(std::move(name)), module_(std::move(module)), inputs_(std::move(inputs)) {}
  std::string name() const override { return name_; }
  std::vector<std::string> input_names() const override { return inputs_; }
  using Model::forward;
  at::Tensor forward(const Inputs& inputs) override {
    if constexpr (TakesInputs<Impl>::value) {
      for (const auto& n : inputs_) input(inputs, n, name_);  // every input present, or a clear error
      return module_->forward(inputs);
    } else {
      return module_->forward(input(inputs, inputs_.front(), name_));
    }
  }
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
  int synchronize_batch_norm(const std::shared_ptr<collectives::Backend>& group) override {
    return synchronize_batch_norms(*module_, group);
  }

 private:
  std::string name_;
  std::shared_ptr<Impl> module_;
  std::vector<std::string> inputs_;
};

}  // namespace hpcml::models::detail
