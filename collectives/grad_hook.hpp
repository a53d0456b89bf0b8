/// @file
/// The one place LibTorch versions differ for gradient readiness.
///
/// "Gradient ready" means: backward has accumulated this step's gradient into
/// `param.grad()`. LibTorch 1.13 exposes that only as a post hook on the
/// parameter's internal grad accumulator; 2.1 added a public post-accumulate-grad
/// hook. `Tensor::register_hook` is not it: it fires before accumulation.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace hpcml::collectives {

/// Keeps a grad-ready hook registered; removes it when destroyed. Movable.
class GradReadyHook {
 public:
  GradReadyHook() = default;
  GradReadyHook(GradReadyHook&&) noexcept;
  GradReadyHook& operator=(GradReadyHook&&) noexcept;
  ~GradReadyHook();

 private:
  friend GradReadyHook on_grad_ready(const at::Tensor& param, std::function<void()> fn);
  struct State;
  std::unique_ptr<State> state_;
};

/// Calls `fn` on the backward thread each time backward has accumulated a gradient
/// into `param.grad()`. `param` must be a leaf that requires grad (throws
/// hpcml::Error otherwise). `fn` must not throw (an escaping exception would pass
/// through LibTorch's autograd engine); record failures and report them later.
GradReadyHook on_grad_ready(const at::Tensor& param, std::function<void()> fn);

}  // namespace hpcml::collectives
