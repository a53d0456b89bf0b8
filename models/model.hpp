/// @file
/// The model interface the Trainer drives, and the models available today.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hpcml::collectives {
class Backend;
}

namespace hpcml::models {

using NamedTensor = std::pair<std::string, at::Tensor>;

/// The input tensors of one batch, by the model's input names ("x"; "particles", "mask").
/// Each is (batch, ...).
using Inputs = std::map<std::string, at::Tensor>;

/// A trainable model: named inputs (batch, ...) -> outputs (batch, ...): logits of a
/// classifier, or the regressed value. Parameters are listed in registration order
/// (the GradientReducer buckets them in reverse). Not thread-safe.
class Model {
 public:
  virtual ~Model() = default;
  virtual std::string name() const = 0;
  /// The names forward() reads, in order. One-input models: {"x"}.
  virtual std::vector<std::string> input_names() const { return {"x"}; }
  virtual at::Tensor forward(const Inputs& inputs) = 0;
  /// A one-input model's forward: forward({{input_names()[0], x}}).
  at::Tensor forward(const at::Tensor& x);
  virtual std::vector<NamedTensor> named_parameters() const = 0;
  virtual std::vector<NamedTensor> named_buffers() const = 0;
  /// Training mode (dropout, batch-norm statistics) on or off.
  virtual void set_training(bool on) = 0;
  /// Moves every parameter and buffer to `device` in place (the tensors keep their
  /// identity, as torch.nn.Module.to does), so references taken before stay valid.
  /// Inputs must then be on `device` too.
  virtual void to(const c10::Device& device);
  /// SyncBatchNorm: training-mode batch-norm statistics over every rank of `group`
  /// (see models::BatchNormImpl). Returns the number of batch-norm layers now
  /// synchronised: 0 for models without hpcml batch norms (the MLP, TorchScript).
  virtual int synchronize_batch_norm(const std::shared_ptr<collectives::Backend>& group) {
    (void)group;
    return 0;
  }
};

/// Mean cross-entropy of logits against integer class targets.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets);
/// Number of correct arg-max predictions.
int64_t correct(const at::Tensor& logits, const at::Tensor& targets);

/// A multilayer perceptron: Linear + ReLU per hidden size, then Linear to `classes`.
/// Its input "x" (batch, ...) is flattened to (batch, inputs).
/// Parameters named "0.weight", "0.bias", "2.weight", ... as in torch.nn.Sequential.
/// Initialised from torch's generator after torch::manual_seed(seed).
std::unique_ptr<Model> make_mlp(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, uint64_t seed);

/// The input `name` of `inputs`; throws hpcml::ConfigError naming the model, the
/// missing input and the inputs given.
const at::Tensor& input(const Inputs& inputs, const std::string& name, const std::string& model);

/// A TorchScript module saved by Python (torch.jit.script(...).save(path)). Its
/// forward's tensor arguments are its inputs, by argument name; it returns one
/// tensor. Throws hpcml::IoError naming the file when it cannot be loaded.
std::unique_ptr<Model> load_torchscript(const std::string& path);

/// Total elements of the trainable parameters.
int64_t parameter_count(const Model& model);

}  // namespace hpcml::models
