// The models layer's one TU with the full LibTorch C++ API.
#include "models/model.hpp"

#include <torch/script.h>
#include <torch/torch.h>

#include "core/error.hpp"

namespace hpcml::models {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits, targets);
}

int64_t correct(const at::Tensor& logits, const at::Tensor& targets) {
  return logits.argmax(1).eq(targets).sum().item<int64_t>();
}

int64_t parameter_count(const Model& model) {
  int64_t n = 0;
  for (const auto& [name, t] : model.named_parameters()) n += t.requires_grad() ? t.numel() : 0;
  return n;
}

namespace {

class Mlp final : public Model {
 public:
  Mlp(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, uint64_t seed) {
    torch::manual_seed(seed);
    int64_t width = inputs;
    for (int64_t h : hidden) {
      net_->push_back(torch::nn::Linear(width, h));
      net_->push_back(torch::nn::ReLU());
      width = h;
    }
    net_->push_back(torch::nn::Linear(width, classes));
  }
  std::string name() const override { return "mlp"; }
  at::Tensor forward(const at::Tensor& inputs) override { return net_->forward(inputs); }
  std::vector<NamedTensor> named_parameters() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : net_->named_parameters()) out.emplace_back(item.key(), item.value());
    return out;
  }
  std::vector<NamedTensor> named_buffers() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : net_->named_buffers()) out.emplace_back(item.key(), item.value());
    return out;
  }
  void set_training(bool on) override { net_->train(on); }

 private:
  torch::nn::Sequential net_;
};

class TorchScriptModel final : public Model {
 public:
  explicit TorchScriptModel(const std::string& path) : path_(path) {
    try {
      module_ = torch::jit::load(path);
    } catch (const c10::Error& e) {
      HPCML_THROW(IoError, "cannot load TorchScript model '", path, "': ", e.what_without_backtrace());
    }
  }
  std::string name() const override { return "torchscript:" + path_; }
  at::Tensor forward(const at::Tensor& inputs) override {
    auto out = module_.forward({inputs});
    HPCML_CHECK(out.isTensor(), "TorchScript model '", path_, "': forward must return one tensor, returned ",
                out.tagKind());
    return out.toTensor();
  }
  std::vector<NamedTensor> named_parameters() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : module_.named_parameters(/*recurse=*/true)) out.emplace_back(item.name, item.value);
    return out;
  }
  std::vector<NamedTensor> named_buffers() const override {
    std::vector<NamedTensor> out;
    for (const auto& item : module_.named_buffers(/*recurse=*/true)) out.emplace_back(item.name, item.value);
    return out;
  }
  void set_training(bool on) override { module_.train(on); }

 private:
  std::string path_;
  torch::jit::Module module_;
};

}  // namespace

std::unique_ptr<Model> make_mlp(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, uint64_t seed) {
  return std::make_unique<Mlp>(inputs, hidden, classes, seed);
}

std::unique_ptr<Model> load_torchscript(const std::string& path) { return std::make_unique<TorchScriptModel>(path); }

}  // namespace hpcml::models
