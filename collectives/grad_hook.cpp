#include "collectives/grad_hook.hpp"

#include <cstdint>
#include <map>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>

#include "collectives/torch_compat.hpp"
#include "core/error.hpp"

#if HPCML_TORCH_AT_LEAST(2, 1)
#define HPCML_TORCH_POST_ACCUMULATE_HOOK 1
#include <torch/csrc/autograd/function_hook.h>
#else
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#endif

namespace hpcml::collectives {

#ifdef HPCML_TORCH_POST_ACCUMULATE_HOOK
// LibTorch >= 2.1: the public post-accumulate-grad hook. A tensor holds one such
// hook object, and setting another replaces it, so every registration here goes
// through one MultiHook per parameter that calls each callback in registration
// order (as 1.13's accumulator post hooks do) and keeps a hook someone else set.
namespace {
class MultiHook final : public torch::autograd::PostAccumulateGradHook {
 public:
  explicit MultiHook(std::unique_ptr<torch::autograd::PostAccumulateGradHook> previous)
      : previous_(std::move(previous)) {}
  void operator()(const torch::autograd::Variable& tensor) override {
    if (previous_) (*previous_)(tensor);
    for (auto& [id, fn] : callbacks_) fn();
  }
  std::uint64_t add(std::function<void()> fn) {
    callbacks_.emplace(++last_id_, std::move(fn));
    return last_id_;
  }
  void remove(std::uint64_t id) { callbacks_.erase(id); }

 private:
  std::unique_ptr<torch::autograd::PostAccumulateGradHook> previous_;
  std::map<std::uint64_t, std::function<void()>> callbacks_;  // by id: registration order
  std::uint64_t last_id_ = 0;
};

MultiHook& multi_hook(const at::Tensor& param) {
  auto& slot = torch::autograd::impl::post_acc_grad_hooks(param);
  if (auto* mine = dynamic_cast<MultiHook*>(slot.get())) return *mine;
  auto hook = std::make_unique<MultiHook>(std::move(slot));
  MultiHook& installed = *hook;
  torch::autograd::impl::set_post_acc_grad_hooks(param, std::move(hook));
  return installed;
}
}  // namespace

struct GradReadyHook::State {
  at::Tensor param;
  std::uint64_t id = 0;
};

GradReadyHook on_grad_ready(const at::Tensor& param, std::function<void()> fn) {
  HPCML_CHECK(param.is_leaf() && param.requires_grad(), "grad-ready hook: parameter of shape ", param.sizes(),
              " is not a leaf tensor that requires grad");
  const std::uint64_t id = multi_hook(param).add(std::move(fn));
  GradReadyHook hook;
  hook.state_ = std::make_unique<GradReadyHook::State>(GradReadyHook::State{param, id});
  return hook;
}

GradReadyHook::~GradReadyHook() {
  if (!state_) return;
  if (auto* mine = dynamic_cast<MultiHook*>(torch::autograd::impl::post_acc_grad_hooks(state_->param).get())) {
    mine->remove(state_->id);
  }
}
#else
// LibTorch 1.13: a post hook on the grad accumulator (AccumulateGrad) node. The
// node must stay alive for the hook to fire, so the handle holds it.
struct GradReadyHook::State {
  std::shared_ptr<torch::autograd::Node> accumulator;
  uintptr_t key = 0;
};

GradReadyHook on_grad_ready(const at::Tensor& param, std::function<void()> fn) {
  HPCML_CHECK(param.is_leaf() && param.requires_grad(), "grad-ready hook: parameter of shape ", param.sizes(),
              " is not a leaf tensor that requires grad");
  auto accumulator = torch::autograd::impl::grad_accumulator(param);
  HPCML_CHECK(accumulator != nullptr, "grad-ready hook: no grad accumulator for parameter of shape ", param.sizes());
  const uintptr_t key = accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
      [fn = std::move(fn)](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
        fn();
        return outputs;
      }));
  GradReadyHook hook;
  hook.state_ = std::make_unique<GradReadyHook::State>(GradReadyHook::State{std::move(accumulator), key});
  return hook;
}

GradReadyHook::~GradReadyHook() {
  if (state_) state_->accumulator->del_post_hook(state_->key);
}
#endif

GradReadyHook::GradReadyHook(GradReadyHook&&) noexcept = default;
GradReadyHook& GradReadyHook::operator=(GradReadyHook&&) noexcept = default;

}  // namespace hpcml::collectives
