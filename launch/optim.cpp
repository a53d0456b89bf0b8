#include "launch/optim.hpp"

#include <ATen/ATen.h>
#include <c10/util/string_utils.h>

#include <cmath>
#include <memory>
#include <string>

namespace hpcml::launch {

namespace {

// One Adam update over n values, in float32, in torch 1.13's order:
//   m = m*b1 + (1-b1)*g;  v = v*b2 + (1-b2)*g*g;
//   p = p - step_size * m / (sqrt(v)/sqrt(bc2) + eps)
// with g = grad + weight_decay*p for L2 decay (Adam), or p scaled by (1 - lr*wd)
// first for decoupled decay (AdamW).
struct Coefficients {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float sqrt_bias_correction2, eps, neg_step_size;
  float l2_decay;         // Adam: added to the gradient times p; 0 for none
  float decoupled_scale;  // AdamW: p *= this first; 1 for none
};

void adam_update(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                 int64_t n, const Coefficients& c) {
  if (c.decoupled_scale != 1.0f) {
    for (int64_t i = 0; i < n; ++i) p[i] *= c.decoupled_scale;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float grad = c.l2_decay != 0.0f ? g[i] + c.l2_decay * p[i] : g[i];
    m[i] = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    v[i] = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    const float denom = std::sqrt(v[i]) / c.sqrt_bias_correction2 + c.eps;
    p[i] = p[i] + c.neg_step_size * (m[i] / denom);
  }
}

bool fusable(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided &&
         t.is_contiguous();
}

// Whether every parameter with a gradient can take the fused path.
bool all_fusable(const std::vector<torch::optim::OptimizerParamGroup>& groups) {
  for (const auto& group : groups) {
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!fusable(p) || !fusable(p.grad())) return false;
    }
  }
  return true;
}

// The fused step for Adam (decoupled = false) and AdamW (decoupled = true). State is
// torch's own (created as torch creates it, keyed as torch keys it), so save/load
// and a later torch step see the same optimizer.
template <typename Options, typename State>
void fused_step(std::vector<torch::optim::OptimizerParamGroup>& groups,
                ska::flat_hash_map<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>& states,
                bool decoupled) {
  at::NoGradGuard no_grad;
  for (auto& group : groups) {
    const auto& options = static_cast<const Options&>(group.options());
    const double beta1 = std::get<0>(options.betas());
    const double beta2 = std::get<1>(options.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto found = states.find(key);
      if (found == states.end()) {
        auto fresh = std::make_unique<State>();
        fresh->step(0);
        fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
        found = states.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<State&>(*found->second);
      state.step(state.step() + 1);
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      Coefficients c;
      c.beta1 = static_cast<float>(beta1);
      c.one_minus_beta1 = static_cast<float>(1 - beta1);
      c.beta2 = static_cast<float>(beta2);
      c.one_minus_beta2 = static_cast<float>(1 - beta2);
      c.sqrt_bias_correction2 = static_cast<float>(std::sqrt(bias_correction2));
      c.eps = static_cast<float>(options.eps());
      c.neg_step_size = static_cast<float>(-options.lr() / bias_correction1);
      c.l2_decay = decoupled ? 0.0f : static_cast<float>(options.weight_decay());
      c.decoupled_scale = decoupled ? static_cast<float>(1 - options.lr() * options.weight_decay()) : 1.0f;
      adam_update(p.data_ptr<float>(), p.grad().data_ptr<float>(), state.exp_avg().template data_ptr<float>(),
                  state.exp_avg_sq().template data_ptr<float>(), p.numel(), c);
    }
  }
}

// True when the fused step applies: no amsgrad, and fusable tensors only.
template <typename Options>
bool can_fuse(const std::vector<torch::optim::OptimizerParamGroup>& groups, const torch::optim::OptimizerOptions& defaults) {
  bool amsgrad = static_cast<const Options&>(defaults).amsgrad();
  for (const auto& group : groups) amsgrad = amsgrad || static_cast<const Options&>(group.options()).amsgrad();
  return !amsgrad && all_fusable(groups);
}

at::Tensor run_closure(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

}  // namespace

at::Tensor FusedAdam::step(LossClosure closure) {
  if (!can_fuse<torch::optim::AdamOptions>(param_groups_, defaults())) return torch::optim::Adam::step(closure);
  at::Tensor loss = run_closure(closure);
  fused_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(param_groups_, state_, false);
  return loss;
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  if (!can_fuse<torch::optim::AdamWOptions>(param_groups_, defaults())) return torch::optim::AdamW::step(closure);
  at::Tensor loss = run_closure(closure);
  fused_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(param_groups_, state_, true);
  return loss;
}

}  // namespace hpcml::launch
