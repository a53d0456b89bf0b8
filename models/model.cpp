// The models layer's one TU with the full LibTorch C++ API.
#include "models/model.hpp"

#include <torch/script.h>
#include <torch/torch.h>

#include "core/error.hpp"
#include "hpcml/build_config.hpp"

namespace hpcml::models {

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits, targets);
}

int64_t correct(const at::Tensor& logits, const at::Tensor& targets) {
  return logits.argmax(1).eq(targets).sum().item<int64_t>();
}

void Model::to(const c10::Device& device) {
  at::NoGradGuard no_grad;
  for (auto& [name, t] : named_parameters()) {
    if (t.device() != device) t.set_data(t.data().to(device));
  }
  for (auto& [name, t] : named_buffers()) {
    if (t.defined() && t.device() != device) t.set_data(t.data().to(device));
  }
}

at::Tensor Model::forward(const at::Tensor& x) {
  const auto names = input_names();
  HPCML_CHECK_AS(ConfigError, names.size() == 1, "model '", name(), "' takes ", names.size(),
                 " named inputs, found one unnamed tensor");
  return forward(Inputs{{names.front(), x}});
}

const at::Tensor& input(const Inputs& inputs, const std::string& name, const std::string& model) {
  const auto it = inputs.find(name);
  if (it != inputs.end()) return it->second;
  std::string given;
  for (const auto& [key, t] : inputs) given += (given.empty() ? "" : ", ") + key;
  HPCML_THROW(ConfigError, "model '", model, "': expected input '", name, "', found [", given, "]");
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
  using Model::forward;
  at::Tensor forward(const Inputs& inputs) override {
    const at::Tensor& x = input(inputs, "x", "mlp");
    return net_->forward(x.reshape({x.size(0), -1}));
  }
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
    } catch (const std::exception& e) {
      // c10::Error, or torch::jit::ErrorReport for an unknown operator (1.13). Their
      // messages run over many lines (suggestions, source excerpts): keep the first, and
      // say when the file likely comes from a newer PyTorch.
      const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
      std::string first = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
      first.erase(0, first.find_first_not_of(" \n"));
      first = first.substr(0, first.find('\n'));
      const bool newer = first.find("Unknown builtin op") != std::string::npos ||
                         first.find("Unknown type name") != std::string::npos ||
                         first.find("version") != std::string::npos;
      HPCML_THROW(IoError, "cannot load TorchScript model '", path, "': ", first,
                  newer ? std::string(" (this hpcml is built against LibTorch ") + HPCML_TORCH_VERSION +
                              "; a model scripted by a newer PyTorch may use what it lacks: build hpcml against that "
                              "PyTorch, docs/building.md)"
                        : std::string());
    }
    const auto method = module_.find_method("forward");
    HPCML_CHECK_AS(IoError, method.has_value(), "TorchScript model '", path, "': expected a forward method, found none");
    const auto& arguments = method->function().getSchema().arguments();
    for (size_t i = 1; i < arguments.size(); ++i) {  // 0 is self
      HPCML_CHECK_AS(IoError, arguments[i].type()->kind() == c10::TypeKind::TensorType, "TorchScript model '", path,
                     "': forward argument '", arguments[i].name(), "': expected a Tensor, found ",
                     arguments[i].type()->str());
      inputs_.push_back(arguments[i].name());
    }
    HPCML_CHECK_AS(IoError, !inputs_.empty(), "TorchScript model '", path,
                   "': expected forward to take at least one tensor, found none");
  }
  std::string name() const override { return "torchscript:" + path_; }
  std::vector<std::string> input_names() const override { return inputs_; }
  using Model::forward;
  at::Tensor forward(const Inputs& inputs) override {
    std::vector<c10::IValue> args;
    for (const auto& n : inputs_) args.emplace_back(input(inputs, n, name()));
    auto out = module_.forward(args);
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
  std::vector<std::string> inputs_;  // forward's argument names
};

}  // namespace

std::unique_ptr<Model> make_mlp(int64_t inputs, const std::vector<int64_t>& hidden, int64_t classes, uint64_t seed) {
  return std::make_unique<Mlp>(inputs, hidden, classes, seed);
}

std::unique_ptr<Model> load_torchscript(const std::string& path) { return std::make_unique<TorchScriptModel>(path); }

}  // namespace hpcml::models
