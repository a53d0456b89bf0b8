/// @file
/// The model interface the Trainer drives, and the models available today.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hpcml::models {

using NamedTensor = std::pair<std::string, at::Tensor>;

/// A trainable classifier: inputs (batch, features...) -> logits (batch, classes).
/// Parameters are listed in registration order (the GradientReducer buckets them
/// in reverse). Not thread-safe.
class Model {
 public:
  virtual ~Model() = default;
  virtual std::string name() const = 0;
  virtual at::Tensor forward(const at::Tensor& inputs) = 0;
  virtual std::vector<NamedTensor> named_parameters() const = 0;
  virtual std::vector<NamedTensor> named_buffers() const = 0;
  /// Training mode (dropout, batch-norm statistics) on or off.
  virtual void set_training(bool on) = 0;
};

/// Mean cross-entropy of logits against integer class targets.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets);
/// Number of correct arg-max predictions.
int64_t correct(const at::Tensor& logits, const at::Tensor& targets);

/// A multilayer perceptron: Linear + ReLU per hidden size, then Linear to `classes`.
/// Parameters named "0.weight", "0.bias", "2.weight", ... as in torch.nn.Sequential.
/// Initialised from torch's generator after torch::manual_seed(seed).
std::unique_ptr<Model> make_mlp(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, uint64_t seed);

/// A TorchScript module saved by Python (torch.jit.script(...).save(path)); its
/// forward takes one tensor and returns logits. Throws hpcml::IoError naming the
/// file when it cannot be loaded.
std::unique_ptr<Model> load_torchscript(const std::string& path);

/// Total elements of the trainable parameters.
int64_t parameter_count(const Model& model);

}  // namespace hpcml::models
