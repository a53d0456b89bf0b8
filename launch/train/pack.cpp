// Packed members in training (see pack.hpp, docs/training.md#packed-members).
#include "launch/train/pack.hpp"

#include <ATen/ATen.h>
#include <torch/optim/optimizer.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "hpcml/build_config.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/setup.hpp"
#include "models/packed.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

TrainConfig member_config(const TrainConfig& c, int k) {
  TrainConfig m = c;
  m.train.pack = 1;
  m.model.seed = c.model.seed + k;
  m.train.seed = c.train.seed + k;
  m.run.dir = member_dir(c.run.dir, k);
  m.run.resume = "no";
  m.run.overwrite = false;
  return m;
}

std::string member_dir(const std::string& run_dir, int k) {
  return (fs::path(run_dir) / ("member-" + std::to_string(k))).string();
}

void check_pack(const TrainConfig& c, bool training) {
  if (c.train.pack <= 1) return;
  std::string names;
  for (const auto& n : models::packable_models()) names += (names.empty() ? "" : ", ") + n;
  HPCML_CHECK_AS(ConfigError, models::packable(c.model.name), "config error: key 'train.pack': model ", c.model.name,
                 " cannot be packed (its layers are not Linear, ReLU and batch norm in sequence); "
                 "expected model.name one of [",
                 names, "] with train.pack ", c.train.pack, ", found ", c.model.name,
                 " (docs/models.md#packed-members)");
  HPCML_CHECK_AS(ConfigError, c.train.clip_grad_norm == 0,
                 "config error: key 'train.clip_grad_norm': a pack (train.pack ", c.train.pack,
                 ") clips no gradients (one norm over all members would couple them); expected 0, found ",
                 c.train.clip_grad_norm);
  HPCML_CHECK_AS(ConfigError, !c.model.sync_batch_norm,
                 "config error: key 'model.sync_batch_norm': a pack (train.pack ", c.train.pack,
                 ") keeps each member's batch statistics on its rank; expected false, found true");
  HPCML_CHECK_AS(ConfigError, training, "config error: key 'train.pack': this is the config of a pack of ",
                 c.train.pack, " members; evaluate or run one member's unpacked run instead: -c ",
                 member_dir(c.run.dir, 0),
                 "/config.yaml (written when the pack's training completes), or set train.pack=1");
}

std::unique_ptr<models::Model> make_pack_model(const TrainConfig& c, const Feed& feed) {
  std::vector<std::unique_ptr<models::Model>> members;
  for (int k = 0; k < c.train.pack; ++k) members.push_back(build_model(member_config(c, k), feed));
  return std::make_unique<models::PackedModel>(members);
}

namespace {

class PackFeed final : public Feed {
 public:
  explicit PackFeed(std::vector<std::unique_ptr<Feed>> members) : members_(std::move(members)) {}
  int64_t steps_per_epoch() const override { return members_.front()->steps_per_epoch(); }
  Example batch(int64_t epoch, int64_t step) override {
    std::vector<at::Tensor> inputs, targets;
    for (auto& m : members_) {
      Example e = m->batch(epoch, step);
      inputs.push_back(models::input(e.inputs, "x", "pack"));
      targets.push_back(e.target);
    }
    return {{{"x", at::stack(inputs, 1)}}, at::stack(targets, 1)};
  }
  void for_each_validation(const std::function<void(const Example&)>& fn) override {
    members_.front()->for_each_validation(fn);
  }
  int64_t validation_size() const override { return members_.front()->validation_size(); }
  std::vector<int64_t> input_shape() const override { return members_.front()->input_shape(); }
  bool regression() const override { return members_.front()->regression(); }
  void check_inputs(const std::string& model, const std::vector<models::InputSpec>& specs) const override {
    members_.front()->check_inputs(model, specs);
  }

 private:
  std::vector<std::unique_ptr<Feed>> members_;
};

// Member k as a model for the checkpoint writer: copies of its tensors (never run).
class MemberView final : public models::Model {
 public:
  MemberView(std::string name, std::vector<models::NamedTensor> params, std::vector<models::NamedTensor> buffers)
      : name_(std::move(name)), params_(std::move(params)), buffers_(std::move(buffers)) {
    for (auto& [n, t] : params_) {
      t = t.detach().clone();
      t.set_requires_grad(true);
    }
    for (auto& [n, t] : buffers_) t = t.clone();
  }
  std::string name() const override { return name_; }
  at::Tensor forward(const models::Inputs&) override {
    HPCML_THROW(Error, "an unpacked member's view is not run; load its checkpoint into a model");
  }
  using Model::forward;
  std::vector<models::NamedTensor> named_parameters() const override { return params_; }
  std::vector<models::NamedTensor> named_buffers() const override { return buffers_; }
  void set_training(bool) override {}

 private:
  std::string name_;
  std::vector<models::NamedTensor> params_, buffers_;
};

}  // namespace

std::unique_ptr<Feed> make_pack_feed(const TrainConfig& c, const Context& ctx) {
  std::vector<std::unique_ptr<Feed>> members;
  for (int k = 0; k < c.train.pack; ++k) members.push_back(make_feed(member_config(c, k), ctx));
  return std::make_unique<PackFeed>(std::move(members));
}

at::Tensor pack_losses(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target) {
  const std::string name = loss == "auto" ? (regression ? "mse" : "cross_entropy") : loss;
  if (name == "cross_entropy") {
    HPCML_CHECK_AS(ConfigError, !regression,
                   "config error: key 'train.loss': cross_entropy needs an integer "
                   "(class) target, found a floating-point one");
    // (batch, K, classes) -> (batch, classes, K): one cross-entropy per (row, member).
    return at::cross_entropy_loss(output.permute({0, 2, 1}), target, {}, at::Reduction::None).mean(0);
  }
  HPCML_CHECK_AS(ConfigError, regression && (name == "mse" || name == "relative_mse"),
                 "config error: key "
                 "'train.loss': a pack of regressors takes mse or relative_mse, found ",
                 name);
  HPCML_CHECK_AS(ConfigError, output.numel() == target.numel(), "regression: the pack gives ",
                 output.numel() / std::max<int64_t>(1, target.numel()), " outputs per sample and member, expected 1");
  const at::Tensor error = output.reshape(target.sizes()) - target;
  return (name == "relative_mse" ? error / target : error).pow(2).mean(0);
}

at::Tensor pack_metric_sums(bool regression, const at::Tensor& output, const at::Tensor& target) {
  at::NoGradGuard no_grad;
  if (!regression) return output.argmax(2).eq(target).sum(0).to(at::kDouble);
  return ((output.reshape(target.sizes()) - target) / target).pow(2).sum(0).to(at::kDouble);
}

void add_member_sums(std::vector<double>& sums, const at::Tensor& losses, const at::Tensor& metric_sums) {
  const at::Tensor l = losses.detach().to(at::kDouble).contiguous(), m = metric_sums.to(at::kDouble).contiguous();
  const double* lp = l.data_ptr<double>();
  const double* mp = m.data_ptr<double>();
  for (int64_t k = 0; k < l.numel(); ++k) {
    sums[2 * k] += lp[k];
    sums[2 * k + 1] += mp[k];
  }
}

nlohmann::json member_metrics_json(const at::Tensor& sums, double samples, bool regression) {
  const at::Tensor s = sums.to(at::kDouble).contiguous();
  const double* p = s.data_ptr<double>();
  nlohmann::json out = nlohmann::json::array();
  for (int64_t k = 0; k < s.numel() / 2; ++k) {
    out.push_back({{"loss", samples > 0 ? p[2 * k] / samples : 0.0},
                   {metric_name(regression), metric_value(regression, p[2 * k + 1], samples)}});
  }
  return out;
}

std::vector<Scores> pack_validation_scores(models::Model& pack, Feed& feed, const TrainConfig& c) {
  at::NoGradGuard no_grad;
  const int k_members = c.train.pack;
  std::vector<Scores> scores;
  for (int k = 0; k < k_members; ++k) scores.emplace_back(feed.regression(), binary_task(c, feed), false);
  pack.set_training(false);
  const c10::Device device = model_device(pack);
  feed.for_each_validation([&](const Example& batch) {
    const Example e = batch.to_device(device);
    const at::Tensor& x = models::input(e.inputs, "x", pack.name());
    std::vector<int64_t> shape = x.sizes().vec();
    shape.insert(shape.begin() + 1, k_members);
    const at::Tensor output = forward_in_precision(pack, {{"x", x.unsqueeze(1).expand(shape)}}, c);
    for (int k = 0; k < k_members; ++k) {
      const at::Tensor member = output.select(1, k);
      const double loss = task_loss(c.train.loss, feed.regression(), member, e.target).item<double>();
      scores[k].add(member.cpu(), batch.target, loss);
    }
  });
  pack.set_training(true);
  return scores;
}

Scores pooled_scores(std::vector<Scores>& members) {
  Scores out = members.front();
  out.sums() = members.front().sums().clone();
  for (size_t k = 1; k < members.size(); ++k) out.sums() += members[k].sums();
  return out;
}

void write_member_runs(const Context& ctx, const TrainConfig& c, const models::Model& pack,
                       torch::optim::Optimizer& optimizer, int64_t step) {
  const auto& packed = dynamic_cast<const models::PackedModel&>(pack);
  const auto pack_params = packed.named_parameters();
  for (int k = 0; k < c.train.pack; ++k) {
    const TrainConfig m = member_config(c, k);
    MemberView member(packed.name(), packed.member_parameters(k), packed.member_buffers(k));
    std::vector<at::Tensor> params;
    for (const auto& [name, t] : member.named_parameters()) params.push_back(t);
    auto member_optimizer = build_optimizer(m, params);
    for (size_t i = 0; i < params.size(); ++i) {
      copy_member_state(optimizer, pack_params[i].second, *member_optimizer, params[i], k);
    }
    fs::create_directories(checkpoint_dir(m.run.dir));
    const std::string yaml = config::to_yaml(m);
    save_checkpoint(checkpoint_path(m.run.dir, step), step, ctx, member, *member_optimizer, yaml, {});
    write_file_atomically((fs::path(m.run.dir) / "config.yaml").string(), yaml);
    const nlohmann::json summary = {{"steps", step},
                                    {"model", member.name()},
                                    {"parameters", models::parameter_count(member)},
                                    {"parameters_sha256", parameters_digest(member.named_parameters())},
                                    {"pack", {{"run", c.run.dir}, {"member", k}, {"members", c.train.pack}}},
                                    {"hpcml_version", HPCML_VERSION},
                                    {"git_revision", HPCML_GIT_REVISION}};
    write_file_atomically((fs::path(m.run.dir) / "summary.json").string(), summary.dump(2) + "\n");
  }
  HPCML_LOG_INFO("unpacked {} members into {}/member-<k>/ (config.yaml, checkpoints/step-{}.pt)", c.train.pack,
                 c.run.dir, step);
}

}  // namespace hpcml::launch
