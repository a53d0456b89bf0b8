#include "collectives/grad_hook.hpp"

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
// LibTorch >= 2.1: the public post-accumulate-grad hook (the upstream build's
// line; its tests run in CI's second leg).
namespace {
class Hook final : public torch::autograd::PostAccumulateGradHook {
 public:
  explicit Hook(std::function<void()> fn) : fn_(std::move(fn)) {}
  void operator()(const torch::autograd::Variable&) override { fn_(); }

 private:
  std::function<void()> fn_;
};
}  // namespace

struct GradReadyHook::State {
  at::Tensor param;
};

GradReadyHook on_grad_ready(const at::Tensor& param, std::function<void()> fn) {
  HPCML_CHECK(param.is_leaf() && param.requires_grad(), "grad-ready hook: parameter of shape ", param.sizes(),
              " is not a leaf tensor that requires grad");
  torch::autograd::impl::set_post_acc_grad_hooks(param, std::make_unique<Hook>(std::move(fn)));
  GradReadyHook hook;
  hook.state_ = std::make_unique<GradReadyHook::State>(GradReadyHook::State{param});
  return hook;
}

GradReadyHook::~GradReadyHook() {
  if (state_) torch::autograd::impl::set_post_acc_grad_hooks(state_->param, nullptr);
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
