#include "launch/train/optim.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>

#include "collectives/gradient_reducer.hpp"
#include "collectives/wire.hpp"
#include "core/error.hpp"

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

template <typename W>
void adam_update(float* __restrict p, const void* grad, float* __restrict m, float* __restrict v, int64_t n,
                 const Coefficients& c) {
  const auto* g = static_cast<const typename W::Store*>(grad);
  if (c.decoupled_scale != 1.0f) {
    for (int64_t i = 0; i < n; ++i) p[i] *= c.decoupled_scale;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float gi = W::widen(g[i]);
    const float grad = c.l2_decay != 0.0f ? gi + c.l2_decay * p[i] : gi;
    m[i] = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    v[i] = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    const float denom = std::sqrt(v[i]) / c.sqrt_bias_correction2 + c.eps;
    p[i] = p[i] + c.neg_step_size * (m[i] / denom);
  }
}

// torch::optim keeps a parameter's state under a key that changed type between
// LibTorch versions: the TensorImpl address as a string (1.13), the address itself
// (2.x). Both deduced from torch's own map type, so no version test is needed.
using OptimizerStates = std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using OptimizerStateKey = OptimizerStates::key_type;
template <typename Key = OptimizerStateKey>
Key state_key(const at::Tensor& param) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream address;  // what 1.13's c10::guts::to_string makes of a pointer
    address << param.unsafeGetTensorImpl();
    return address.str();
  } else {
    return param.unsafeGetTensorImpl();
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

// One parameter's fused Adam (decoupled = false) or AdamW (decoupled = true) step with
// `grad` (param.numel() values of `dtype`) as its gradient. State is torch's own
// (created as torch creates it, keyed as torch keys it), so save/load and a later
// torch step see the same optimizer.
template <typename Options, typename State>
void adam_param_step(const Options& options,
                     OptimizerStates& states,
                     const at::Tensor& p, const void* grad, at::ScalarType dtype, bool decoupled) {
  at::NoGradGuard no_grad;
  const double beta1 = std::get<0>(options.betas());
  const double beta2 = std::get<1>(options.betas());
  const OptimizerStateKey key = state_key(p);
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
  float* m = state.exp_avg().template data_ptr<float>();
  float* v = state.exp_avg_sq().template data_ptr<float>();
  collectives::wire::visit(dtype, "FusedAdam", [&](auto w) {
    adam_update<decltype(w)>(p.data_ptr<float>(), grad, m, v, p.numel(), c);
  });
}

template <typename Options, typename State>
void fused_step(std::vector<torch::optim::OptimizerParamGroup>& groups,
                OptimizerStates& states,
                bool decoupled) {
  for (auto& group : groups) {
    const auto& options = static_cast<const Options&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      adam_param_step<Options, State>(options, states, p, p.grad().data_ptr<float>(), at::kFloat, decoupled);
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

// One SGD update over n values, as torch 1.13's SGD::step does it with tensor ops:
//   d = g (+ wd*p);  buf = d on the first step, else buf*m + (1-dampening)*d;
//   d = nesterov ? d + m*buf : buf;  p = p - lr*d
// Each a + alpha*b is one fused multiply-add, as ATen's add kernels compute it
// (vec::fmadd); buf*m is rounded on its own, as buf.mul_(m) is.
struct SgdCoefficients {
  float weight_decay, momentum, one_minus_dampening, neg_lr;
};
enum Momentum { kNoMomentum, kFirstStep, kMomentumStep };

template <typename W, bool kDecay, Momentum kMomentum, bool kNesterov>
[[gnu::always_inline]] inline void sgd_body(float* __restrict p, float* __restrict buf, const void* grad, int64_t n,
                                            const SgdCoefficients& c) {
  const auto* g = static_cast<const typename W::Store*>(grad);
  for (int64_t i = 0; i < n; ++i) {
    float d = W::widen(g[i]);
    if (kDecay) d = __builtin_fmaf(p[i], c.weight_decay, d);
    if (kMomentum == kFirstStep) buf[i] = d;
    if (kMomentum == kMomentumStep) buf[i] = __builtin_fmaf(d, c.one_minus_dampening, buf[i] * c.momentum);
    if (kMomentum != kNoMomentum) d = kNesterov ? __builtin_fmaf(buf[i], c.momentum, d) : buf[i];
    p[i] = __builtin_fmaf(d, c.neg_lr, p[i]);
  }
}

using SgdKernel = void (*)(float*, float*, const void*, int64_t, const SgdCoefficients&);

template <typename W, bool kDecay, Momentum kMomentum, bool kNesterov>
void sgd_baseline(float* p, float* buf, const void* grad, int64_t n, const SgdCoefficients& c) {
  sgd_body<W, kDecay, kMomentum, kNesterov>(p, buf, grad, n, c);
}

template <typename W, bool kDecay, Momentum kMomentum, bool kNesterov>
[[gnu::target("avx2,fma")]] void sgd_avx2(float* p, float* buf, const void* grad, int64_t n,
                                          const SgdCoefficients& c) {
  sgd_body<W, kDecay, kMomentum, kNesterov>(p, buf, grad, n, c);
}

template <typename W, bool kDecay, Momentum kMomentum>
SgdKernel sgd_kernel_nesterov(bool nesterov) {
  const bool avx2 = collectives::wire::use_avx2();
  if (nesterov) return avx2 ? sgd_avx2<W, kDecay, kMomentum, true> : sgd_baseline<W, kDecay, kMomentum, true>;
  return avx2 ? sgd_avx2<W, kDecay, kMomentum, false> : sgd_baseline<W, kDecay, kMomentum, false>;
}

template <typename W, bool kDecay>
SgdKernel sgd_kernel_momentum(Momentum momentum, bool nesterov) {
  switch (momentum) {
    case kNoMomentum: return sgd_kernel_nesterov<W, kDecay, kNoMomentum>(false);
    case kFirstStep: return sgd_kernel_nesterov<W, kDecay, kFirstStep>(nesterov);
    default: return sgd_kernel_nesterov<W, kDecay, kMomentumStep>(nesterov);
  }
}

template <typename W>
SgdKernel sgd_kernel_decay(bool decay, Momentum momentum, bool nesterov) {
  return decay ? sgd_kernel_momentum<W, true>(momentum, nesterov) : sgd_kernel_momentum<W, false>(momentum, nesterov);
}

SgdKernel sgd_kernel(at::ScalarType dtype, bool decay, Momentum momentum, bool nesterov) {
  return collectives::wire::visit(
      dtype, "FusedSgd", [&](auto w) { return sgd_kernel_decay<decltype(w)>(decay, momentum, nesterov); });
}

}  // namespace

size_t ParameterStepper::group_of(const at::Tensor& param, const std::vector<torch::optim::OptimizerParamGroup>& groups,
                                  const char* who) {
  HPCML_CHECK(fusable(param), who, ": parameters must be contiguous float32 CPU tensors");
  auto found = group_of_.find(param.unsafeGetTensorImpl());
  if (found == group_of_.end()) {  // first use, or groups were added
    group_of_.clear();
    for (size_t g = 0; g < groups.size(); ++g) {
      for (const auto& p : groups[g].params()) group_of_[p.unsafeGetTensorImpl()] = g;
    }
    found = group_of_.find(param.unsafeGetTensorImpl());
    HPCML_CHECK(found != group_of_.end(), who, ": update() of a tensor that is not one of its parameters");
  }
  return found->second;
}

std::function<void(const std::vector<collectives::AveragedGrad>&)> bucket_update(ParameterStepper& stepper) {
  return [&stepper](const std::vector<collectives::AveragedGrad>& bucket) {
    for (const auto& g : bucket) {
      if (g.begin == 0 && g.end == g.param->numel()) stepper.update(*g.param, g.data, g.dtype);
      else stepper.update_range(*g.param, g.data, g.dtype, g.begin, g.end);
    }
  };
}

void ParameterStepper::update_range(const at::Tensor&, const void*, at::ScalarType, int64_t, int64_t) {
  HPCML_THROW(Error, "this optimizer keeps per-element state and cannot update part of a parameter ",
              "(updates_ranges() is false)");
}

at::Tensor FusedSgd::step(LossClosure closure) {
  if (!all_fusable(param_groups_)) return torch::optim::SGD::step(closure);
  at::Tensor loss = run_closure(closure);
  for (auto& group : param_groups_) {
    for (auto& p : group.params()) {
      if (p.grad().defined()) update(p, p.grad().data_ptr<float>(), at::kFloat);
    }
  }
  return loss;
}

void FusedSgd::update(const at::Tensor& param, const void* grad, at::ScalarType dtype) {
  update_elements(param, grad, dtype, 0, param.numel());
}

bool FusedSgd::updates_ranges() const {
  for (const auto& group : param_groups_) {
    if (static_cast<const torch::optim::SGDOptions&>(group.options()).momentum() != 0) return false;
  }
  return true;
}

void FusedSgd::update_range(const at::Tensor& param, const void* grad, at::ScalarType dtype, int64_t begin,
                            int64_t end) {
  HPCML_CHECK(updates_ranges(), "FusedSgd: update_range needs SGD without momentum (the momentum buffer is ",
              "per element)");
  HPCML_CHECK(0 <= begin && begin <= end && end <= param.numel(), "FusedSgd: update_range [", begin, ", ", end,
              ") outside a parameter of ", param.numel(), " values");
  update_elements(param, grad, dtype, begin, end);
}

void FusedSgd::update_elements(const at::Tensor& param, const void* grad, at::ScalarType dtype, int64_t begin,
                               int64_t end) {
  const auto& options =
      static_cast<const torch::optim::SGDOptions&>(param_groups_[group_of(param, param_groups_, "FusedSgd")].options());
  SgdCoefficients c;
  c.weight_decay = static_cast<float>(options.weight_decay());
  c.momentum = static_cast<float>(options.momentum());
  c.one_minus_dampening = static_cast<float>(1 - options.dampening());
  c.neg_lr = static_cast<float>(-1 * options.lr());
  Momentum momentum = kNoMomentum;
  float* buf = nullptr;
  if (options.momentum() != 0) {
    // torch's state, keyed as torch keys it: save/load and torch's own step see it.
    const OptimizerStateKey key = state_key(param);
    auto state = state_.find(key);
    momentum = kMomentumStep;
    if (state == state_.end()) {
      auto fresh = std::make_unique<torch::optim::SGDParamState>();
      fresh->momentum_buffer(at::empty_like(param, at::MemoryFormat::Contiguous));
      state = state_.emplace(key, std::move(fresh)).first;
      momentum = kFirstStep;
    }
    auto& held = static_cast<torch::optim::SGDParamState&>(*state->second);
    HPCML_CHECK(held.momentum_buffer().numel() == param.numel(), "FusedSgd: momentum buffer of ",
                held.momentum_buffer().numel(), " values for a parameter of ", param.numel());
    if (!fusable(held.momentum_buffer())) {
      held.momentum_buffer(held.momentum_buffer().to(at::kFloat).contiguous());  // e.g. as loaded
    }
    buf = held.momentum_buffer().data_ptr<float>() + begin;
  }
  at::NoGradGuard no_grad;
  const auto* g = static_cast<const char*>(grad) + begin * static_cast<int64_t>(c10::elementSize(dtype));
  sgd_kernel(dtype, options.weight_decay() != 0, momentum, options.nesterov())(
      param.data_ptr<float>() + begin, buf, g, end - begin, c);
}

at::Tensor FusedAdam::step(LossClosure closure) {
  if (!can_fuse<torch::optim::AdamOptions>(param_groups_, defaults())) return torch::optim::Adam::step(closure);
  at::Tensor loss = run_closure(closure);
  fused_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(param_groups_, state_, false);
  return loss;
}

void FusedAdam::update(const at::Tensor& param, const void* grad, at::ScalarType dtype) {
  const auto& options =
      static_cast<const torch::optim::AdamOptions&>(param_groups_[group_of(param, param_groups_, "FusedAdam")].options());
  HPCML_CHECK(!options.amsgrad(), "FusedAdam: update() does not take amsgrad (step() runs torch's own for it)");
  adam_param_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(options, state_, param, grad, dtype, false);
}

void FusedAdamW::update(const at::Tensor& param, const void* grad, at::ScalarType dtype) {
  const auto& options = static_cast<const torch::optim::AdamWOptions&>(
      param_groups_[group_of(param, param_groups_, "FusedAdamW")].options());
  HPCML_CHECK(!options.amsgrad(), "FusedAdamW: update() does not take amsgrad (step() runs torch's own for it)");
  adam_param_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(options, state_, param, grad, dtype, true);
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  if (!can_fuse<torch::optim::AdamWOptions>(param_groups_, defaults())) return torch::optim::AdamW::step(closure);
  at::Tensor loss = run_closure(closure);
  fused_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(param_groups_, state_, true);
  return loss;
}

namespace {

// Member k's slice of an Adam or AdamW state (the same fields).
template <typename State>
std::unique_ptr<torch::optim::OptimizerParamState> adam_member_state(const State& s, int64_t k) {
  auto out = std::make_unique<State>();
  out->step(s.step());
  out->exp_avg(s.exp_avg()[k].clone());
  out->exp_avg_sq(s.exp_avg_sq()[k].clone());
  if (s.max_exp_avg_sq().defined()) out->max_exp_avg_sq(s.max_exp_avg_sq()[k].clone());
  return out;
}

}  // namespace

void copy_member_state(torch::optim::Optimizer& from, const at::Tensor& from_param, torch::optim::Optimizer& to,
                       const at::Tensor& to_param, int64_t k) {
  const auto it = from.state().find(state_key(from_param));
  if (it == from.state().end()) return;
  std::unique_ptr<torch::optim::OptimizerParamState> out;
  if (const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(it->second.get())) {
    auto state = std::make_unique<torch::optim::SGDParamState>();
    if (sgd->momentum_buffer().defined()) state->momentum_buffer(sgd->momentum_buffer()[k].clone());
    out = std::move(state);
  } else if (const auto* adamw = dynamic_cast<const torch::optim::AdamWParamState*>(it->second.get())) {
    out = adam_member_state(*adamw, k);
  } else if (const auto* adam = dynamic_cast<const torch::optim::AdamParamState*>(it->second.get())) {
    out = adam_member_state(*adam, k);
  } else {
    HPCML_THROW(Error, "copy_member_state: expected SGD, Adam or AdamW state, found another optimizer's");
  }
  to.state()[state_key(to_param)] = std::move(out);
}

}  // namespace hpcml::launch
