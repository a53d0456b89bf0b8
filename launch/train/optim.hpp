/// @file
/// SGD, Adam and AdamW with the update fused into one pass per parameter, each also
/// able to step one parameter from a gradient held elsewhere (ParameterStepper).
///
/// torch::optim::Adam issues about ten tensor operations per parameter per step
/// (mul_, add_, mul_, addcmul_, sqrt, div, add_, addcdiv_, ...). For small models
/// (FACILE: 16 tensors, 1,417 values) their dispatch costs more than the arithmetic
/// (../shared/ENVIRONMENT.md, "Small-model training overhead"). FusedAdam keeps
/// torch's state, options, checkpoint format and formula, but updates each
/// parameter in one loop over its values: m, v and the parameter are read and
/// written once, with no dispatch and no temporaries.
///
/// The formula is torch 1.13's, evaluated in float32 in the same order, so the
/// result equals torch::optim::Adam's to within float rounding (the fused loop may
/// round a multiply-add differently); tests/unit/optim_test.cpp checks it. Parameters
/// that are not dense contiguous float32 CPU tensors, and amsgrad, go through
/// torch's own step instead.
#pragma once

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <functional>
#include <unordered_map>
#include <vector>

namespace hpcml::collectives {
struct AveragedGrad;
}

namespace hpcml::launch {

/// An optimizer whose step can run one parameter at a time, with a gradient held
/// anywhere, float32 or 16-bit: the gradient reducer's bucket update
/// (collectives::GradientReducer::set_bucket_update) then runs it on each bucket as
/// soon as that bucket's average is final (optimizer.step_in_reduction).
class ParameterStepper {
 public:
  virtual ~ParameterStepper() = default;
  /// One parameter's step with `grad` as its gradient: param.numel() values of
  /// `dtype` (at::kFloat, at::kBFloat16 or at::kHalf), widened exactly to float32;
  /// the same arithmetic as the optimizer's step(). `param` must be one of its
  /// parameters, a contiguous float32 CPU tensor.
  virtual void update(const at::Tensor& param, const void* grad, at::ScalarType dtype) = 0;
  /// Whether the update keeps no per-element state for any parameter, so that it can
  /// step any range of a parameter's elements on its own (update_range): then ranks
  /// that share one copy of the parameters can each update a part
  /// (GradientReducer::set_bucket_update with share_parameters).
  virtual bool updates_ranges() const { return false; }
  /// update() on elements [begin, end) only; `grad` still points at element 0.
  virtual void update_range(const at::Tensor& param, const void* grad, at::ScalarType dtype, int64_t begin,
                            int64_t end);

 protected:
  /// The index of `param`'s group (an error naming `who` if it is in none).
  size_t group_of(const at::Tensor& param, const std::vector<torch::optim::OptimizerParamGroup>& groups,
                  const char* who);

 private:
  std::unordered_map<const c10::TensorImpl*, size_t> group_of_;  // built lazily
};

/// The gradient reducer's bucket update (GradientReducer::set_bucket_update) that
/// steps `stepper` on every parameter of the bucket; `stepper` must outlive its use.
std::function<void(const std::vector<collectives::AveragedGrad>&)> bucket_update(ParameterStepper& stepper);

/// Packed members (launch/train/pack.hpp): copies member `k` of `from`'s state for the
/// stacked parameter `from_param` (every state tensor holds the members along its leading
/// axis) into `to`'s state for `to_param`, member k's own parameter: SGD's momentum buffer,
/// Adam's and AdamW's step count and moments. Nothing when `from` holds no state for it yet.
/// Throws for another optimizer's state.
void copy_member_state(torch::optim::Optimizer& from, const at::Tensor& from_param, torch::optim::Optimizer& to,
                       const at::Tensor& to_param, int64_t k);

/// torch::optim::SGD (momentum, dampening, Nesterov, weight decay) with a fused
/// per-parameter update: one loop reads the gradient, the momentum buffer and the
/// parameter once. Same state, options and archive as torch's. With AVX2 and FMA
/// (the loops torch 1.13 runs on such CPUs) the results are bit-identical to
/// torch::optim::SGD's: its multiply-adds are fused the same way; without them they
/// may differ by a rounding. tests/unit/optim_test.cpp checks it.
class FusedSgd : public torch::optim::SGD, public ParameterStepper {
 public:
  FusedSgd(std::vector<at::Tensor> params, torch::optim::SGDOptions options)
      : torch::optim::SGD(std::move(params), options) {}
  at::Tensor step(LossClosure closure = nullptr) override;
  void update(const at::Tensor& param, const void* grad, at::ScalarType dtype) override;
  /// True without momentum (weight decay and plain SGD keep no state).
  bool updates_ranges() const override;
  void update_range(const at::Tensor& param, const void* grad, at::ScalarType dtype, int64_t begin,
                    int64_t end) override;

 private:
  void update_elements(const at::Tensor& param, const void* grad, at::ScalarType dtype, int64_t begin, int64_t end);
};

/// torch::optim::Adam with a fused per-parameter update (same state and archive).
/// update() does not take amsgrad.
class FusedAdam : public torch::optim::Adam, public ParameterStepper {
 public:
  FusedAdam(std::vector<at::Tensor> params, torch::optim::AdamOptions options)
      : torch::optim::Adam(std::move(params), options) {}
  at::Tensor step(LossClosure closure = nullptr) override;
  void update(const at::Tensor& param, const void* grad, at::ScalarType dtype) override;
};

/// torch::optim::AdamW (decoupled weight decay) with a fused per-parameter update.
class FusedAdamW : public torch::optim::AdamW, public ParameterStepper {
 public:
  FusedAdamW(std::vector<at::Tensor> params, torch::optim::AdamWOptions options)
      : torch::optim::AdamW(std::move(params), options) {}
  at::Tensor step(LossClosure closure = nullptr) override;
  void update(const at::Tensor& param, const void* grad, at::ScalarType dtype) override;
};

}  // namespace hpcml::launch
