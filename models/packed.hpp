/// @file
/// Packed members: K models of one MLP-shaped architecture (the MLP, FACILE) trained as one
/// model, their parameters stacked along a leading member axis and each layer computed with
/// one batched matrix product (docs/models.md#packed-members).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model.hpp"

namespace hpcml::models {

/// Zoo and built-in models that pack: those made only of Linear, ReLU and BatchNorm1d
/// layers in sequence ("facile", "mlp").
std::vector<std::string> packable_models();
bool packable(const std::string& model_name);

/// K members as one model. Built from K ordinary models of one packable architecture
/// (each made with its own seed): every parameter and buffer is the members' tensors
/// stacked along a new leading axis, under the member's name ("net.1.weight" of shape
/// (K, 30, 15)), so member k's initial weights are exactly its own.
///
/// forward takes the input "x" as (batch, K, ...) (row b of member k is x[b][k]: each
/// member its own batch) and returns (batch, K, outputs). A Linear layer is one
/// at::baddbmm over the members; a ReLU is elementwise; a batch norm normalises each
/// member's channels with that member's batch statistics and updates that member's running
/// statistics (one at::batch_norm over K x C channels). Member k's gradient is therefore
/// the gradient of its own loss when the pack's loss is the sum of the members' losses,
/// and an elementwise optimizer (SGD, Adam, AdamW) steps every member as if alone.
class PackedModel final : public Model {
 public:
  /// How a Linear layer's product runs: one at::baddbmm (the bias folded in; the default), or
  /// at::bmm then one broadcast add of the bias. LibTorch 1.13 without MKL runs baddbmm as one
  /// addmm_ per member and bmm as one GEMM call per member; for FACILE's layers at K = 32 and
  /// batch 256, baddbmm is about 10% faster than bmm + add (bench pack --product compares).
  enum class Product { kBaddbmm, kBmm };
  /// Throws ConfigError naming the model when it does not pack or the members differ.
  explicit PackedModel(const std::vector<std::unique_ptr<Model>>& members);
  std::string name() const override { return name_; }
  at::Tensor forward(const Inputs& inputs) override;
  using Model::forward;
  std::vector<NamedTensor> named_parameters() const override { return params_; }
  std::vector<NamedTensor> named_buffers() const override { return buffers_; }
  void set_training(bool on) override { training_ = on; }
  int64_t members() const { return members_; }
  void set_product(Product product) { product_ = product; }
  /// Member k's parameters and buffers (views into the pack), named and ordered as an
  /// ordinary model's: copy them into a fresh member model to unpack it.
  std::vector<NamedTensor> member_parameters(int64_t k) const;
  std::vector<NamedTensor> member_buffers(int64_t k) const;

 private:
  enum class Kind { kLinear, kRelu, kBatchNorm };
  struct Layer {
    Kind kind;
    at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  };
  at::Tensor batch_norm(const Layer& layer, const at::Tensor& h) const;

  std::string name_;
  int64_t members_ = 0;
  bool training_ = true;
  Product product_ = Product::kBaddbmm;
  std::vector<NamedTensor> params_, buffers_;
  std::vector<Layer> layers_;
};

}  // namespace hpcml::models
