// Packed members (see packed.hpp, docs/models.md#packed-members).
#include "models/packed.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <map>

#include "core/error.hpp"

namespace hpcml::models {

namespace {

// FACILE's BatchNorm1d (models/zoo/facile.cpp): torch's defaults.
constexpr double kBatchNormMomentum = 0.1;
constexpr double kBatchNormEps = 1e-5;

std::string prefix_of(const std::string& name) {
  const auto dot = name.rfind('.');
  return dot == std::string::npos ? std::string() : name.substr(0, dot);
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// The member tensors named `name`, stacked along a new leading axis (a fresh leaf).
at::Tensor stacked(const std::vector<std::unique_ptr<Model>>& members, const std::string& name, bool parameter) {
  std::vector<at::Tensor> parts;
  for (const auto& m : members) {
    const auto named = parameter ? m->named_parameters() : m->named_buffers();
    const auto it = std::find_if(named.begin(), named.end(), [&](const NamedTensor& t) { return t.first == name; });
    HPCML_CHECK_AS(ConfigError, it != named.end(), "pack: member '", m->name(), "' has no tensor '", name,
                   "'; expected members of one architecture");
    parts.push_back(it->second.detach());
  }
  const at::Tensor shape = parts.front();
  for (const auto& p : parts) {
    HPCML_CHECK_AS(ConfigError, p.sizes() == shape.sizes(), "pack: tensor '", name, "' has shape ", p.sizes(),
                   " in one member and ", shape.sizes(), " in another; expected members of one architecture");
  }
  at::Tensor out = at::stack(parts, 0).contiguous();
  if (parameter) out.set_requires_grad(true);
  return out;
}

}  // namespace

std::vector<std::string> packable_models() { return {"facile", "mlp"}; }

bool packable(const std::string& model_name) {
  const auto names = packable_models();
  return std::find(names.begin(), names.end(), model_name) != names.end();
}

PackedModel::PackedModel(const std::vector<std::unique_ptr<Model>>& members)
    : members_(static_cast<int64_t>(members.size())) {
  HPCML_CHECK_AS(ConfigError, !members.empty(), "pack: expected at least one member, found none");
  const Model& first = *members.front();
  name_ = first.name();
  HPCML_CHECK_AS(ConfigError, packable(name_), "config error: key 'train.pack': model ", name_,
                 " cannot be packed; expected one of [", joined(packable_models()),
                 "] (docs/models.md#packed-members)");
  for (const auto& m : members) {
    HPCML_CHECK_AS(ConfigError, m->name() == name_, "pack: expected members of one model, found ", name_, " and ",
                   m->name());
  }
  // Layers in the order of the parameters: a prefix with a running mean is a batch norm,
  // one with a 2-D weight a Linear; a ReLU follows every Linear but the last.
  std::map<std::string, at::Tensor> by_name;
  for (const auto& [name, t] : first.named_parameters()) {
    params_.emplace_back(name, stacked(members, name, /*parameter=*/true));
    by_name[name] = params_.back().second;
  }
  for (const auto& [name, t] : first.named_buffers()) {
    buffers_.emplace_back(name, stacked(members, name, /*parameter=*/false));
    by_name[name] = buffers_.back().second;
  }
  std::vector<std::string> prefixes;
  for (const auto& [name, t] : first.named_parameters()) {
    const std::string p = prefix_of(name);
    if (prefixes.empty() || prefixes.back() != p) prefixes.push_back(p);
  }
  for (const auto& p : prefixes) {
    Layer layer;
    layer.weight = by_name.at(p + ".weight");
    layer.bias = by_name.at(p + ".bias");
    if (by_name.count(p + ".running_mean")) {
      layer.kind = Kind::kBatchNorm;
      layer.running_mean = by_name.at(p + ".running_mean");
      layer.running_var = by_name.at(p + ".running_var");
      layer.num_batches_tracked = by_name.at(p + ".num_batches_tracked");
    } else {
      HPCML_CHECK_AS(ConfigError, layer.weight.dim() == 3, "pack: layer '", p, "' of ", name_,
                     " is neither a Linear nor a batch norm");
      layer.kind = Kind::kLinear;
    }
    layers_.push_back(layer);
  }
  size_t last_linear = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i].kind == Kind::kLinear) last_linear = i;
  }
  std::vector<Layer> with_relu;
  for (size_t i = 0; i < layers_.size(); ++i) {
    with_relu.push_back(layers_[i]);
    if (layers_[i].kind == Kind::kLinear && i != last_linear) {
      Layer relu;
      relu.kind = Kind::kRelu;
      with_relu.push_back(relu);
    }
  }
  layers_ = std::move(with_relu);
}

// h (K, C, B): each member's C channels over its own B rows. As one batch norm of a
// (1, K*C, B) input, channel j of member k is channel k*C + j, with its own statistics over
// the B rows and its own running buffers (views of the stacked (K, C) buffers, updated in place).
at::Tensor PackedModel::batch_norm(const Layer& layer, const at::Tensor& h) const {
  const int64_t k = h.size(0), c = h.size(1), b = h.size(2);
  if (training_) {
    at::NoGradGuard no_grad;
    layer.num_batches_tracked.add_(1);
  }
  const at::Tensor y = at::batch_norm(h.reshape({1, k * c, b}), layer.weight.view({k * c}), layer.bias.view({k * c}),
                                      layer.running_mean.view({k * c}), layer.running_var.view({k * c}), training_,
                                      kBatchNormMomentum, kBatchNormEps, /*cudnn_enabled=*/false);
  return y.view({k, c, b});
}

// Feature-major activations (K, features, B): a Linear is W_k h_k + b_k, so the weight's
// gradient (grad_k h_k^T) comes out of the batched product already in the weight's (K, out,
// in) layout. Batch-major (h W^T) would hand back a transposed gradient that autograd copies
// into the weight's layout every step: for the MLP workload 43M values per step.
at::Tensor PackedModel::forward(const Inputs& inputs) {
  const at::Tensor& x = input(inputs, "x", name_);
  HPCML_CHECK_AS(ConfigError, x.dim() >= 2 && x.size(1) == members_, "pack of ", members_, " ", name_,
                 " members: expected an input (batch, ", members_, ", ...), found shape ", x.sizes());
  at::Tensor h = x.reshape({x.size(0), members_, -1}).permute({1, 2, 0}).contiguous();  // (K, F, B)
  for (const Layer& layer : layers_) {
    switch (layer.kind) {
      case Kind::kLinear:
        h = product_ == Product::kBaddbmm ? at::baddbmm(layer.bias.unsqueeze(2), layer.weight, h)
                                          : at::bmm(layer.weight, h) + layer.bias.unsqueeze(2);
        break;
      case Kind::kRelu:
        h = at::relu(h);
        break;
      case Kind::kBatchNorm:
        h = batch_norm(layer, h);
        break;
    }
  }
  return h.permute({2, 0, 1});  // (B, K, outputs)
}

std::vector<NamedTensor> PackedModel::member_parameters(int64_t k) const {
  std::vector<NamedTensor> out;
  for (const auto& [name, t] : params_) out.emplace_back(name, t.detach()[k]);
  return out;
}

std::vector<NamedTensor> PackedModel::member_buffers(int64_t k) const {
  std::vector<NamedTensor> out;
  for (const auto& [name, t] : buffers_) out.emplace_back(name, t[k]);
  return out;
}

}  // namespace hpcml::models
