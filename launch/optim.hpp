/// @file
/// Adam and AdamW with the update fused into one pass per parameter.
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

#include <vector>

namespace hpcml::launch {

/// torch::optim::Adam with a fused per-parameter update (same state and archive).
class FusedAdam : public torch::optim::Adam {
 public:
  FusedAdam(std::vector<at::Tensor> params, torch::optim::AdamOptions options)
      : torch::optim::Adam(std::move(params), options) {}
  at::Tensor step(LossClosure closure = nullptr) override;
};

/// torch::optim::AdamW (decoupled weight decay) with a fused per-parameter update.
class FusedAdamW : public torch::optim::AdamW {
 public:
  FusedAdamW(std::vector<at::Tensor> params, torch::optim::AdamWOptions options)
      : torch::optim::AdamW(std::move(params), options) {}
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace hpcml::launch
