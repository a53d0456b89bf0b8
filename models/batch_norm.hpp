/// @file
/// hpcml's batch normalisation: torch's BatchNorm1d/2d, optionally synchronised
/// across ranks (SyncBatchNorm). Includes <torch/torch.h>: zoo TUs only.
#pragma once

#include <torch/torch.h>

#include "collectives/backend.hpp"

namespace hpcml::models {

/// Batch normalisation over dimension 1 (channels) of an (N, C) or (N, C, ...) input:
/// torch::nn::BatchNorm1d/2d (affine, running statistics, the same state_dict names:
/// weight, bias, running_mean, running_var, num_batches_tracked), which it matches
/// bit for bit while not synchronised.
///
/// After synchronize(group), training-mode statistics are those of the whole global
/// batch: every rank's per-channel sum, sum of squares and count are allreduced on
/// `group` (use a communicator of its own, e.g. world->split(0, rank, "sync_batch_norm"),
/// so these blocking allreduces never interleave with the gradient reducer's), and
/// backward allreduces the matching gradient terms. Ranks may hold different batch
/// sizes (zero included); the running variance uses the global count. Every rank of
/// `group` must run the same layers in the same order. Eval mode uses the running
/// statistics and never communicates.
class BatchNormImpl : public torch::nn::Module {
 public:
  explicit BatchNormImpl(int64_t features, double eps = 1e-5, double momentum = 0.1);
  at::Tensor forward(const at::Tensor& x);
  /// Synchronise statistics over `group` (nullptr: this rank's batch only, the default).
  void synchronize(collectives::BackendPtr group) { group_ = std::move(group); }
  bool synchronized() const { return group_ != nullptr; }

  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  at::Tensor forward_synchronized(const at::Tensor& x);
  int64_t features_;
  double eps_;
  double momentum_;
  collectives::BackendPtr group_;
};
TORCH_MODULE(BatchNorm);

/// Synchronises every BatchNorm inside `module` over `group`; returns how many.
int synchronize_batch_norms(torch::nn::Module& module, const collectives::BackendPtr& group);

}  // namespace hpcml::models
