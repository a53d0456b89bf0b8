#include "launch/ensemble/infer.hpp"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <variant>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "io/h5_dataset.hpp"
#include "io/table.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/setup.hpp"

namespace hpcml::launch::ensemble {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Member {
  int64_t k = 0;
  std::string dir;
  double log_prior = 0;  // log(n_0 / n_1) of its training set (two classes), else 0
};

// Rank 0's reading of <dir>/summary.json, on every rank.
json agreed_summary(collectives::Backend& world, const std::string& dir) {
  std::string text, error;
  if (world.rank() == 0) {
    const fs::path path = fs::path(dir) / "summary.json";
    std::ifstream in(path);
    const json s = in ? json::parse(in, nullptr, /*allow_exceptions=*/false) : json();
    if (!s.is_object() || !s.contains("members")) {
      error = fmt::format("config error: key 'run.dir': '{}' is an ensemble without a readable summary.json (run "
                          "hpcml ensemble there first)", dir);
    }
    text = s.dump();
  }
  error = world.broadcast_string(error);
  HPCML_CHECK_AS(ConfigError, error.empty(), error);
  return json::parse(world.broadcast_string(text));
}

TrainConfig read_run_config(const std::string& dir) {
  TrainConfig t;
  config::read_into(config::load((fs::path(dir) / "config.yaml").string()), t);
  return t;
}

// log(n_0 / n_1) over the training files of the run in `dir` (0 unless two classes in HDF5).
double log_class_prior(const std::string& dir, std::map<std::string, double>& cache) {
  const TrainConfig t = read_run_config(dir);
  if (t.data.name != "hdf5" || t.data.target.empty() || t.data.classes != 2) return 0;
  std::string key = t.data.target;
  for (const auto& f : t.data.files) key += "\n" + f;
  const auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  int64_t n[2] = {0, 0};
  for (const auto& file : io::expand_files(t.data.files)) {
    const auto column = io::read_columns(file, {t.data.target}).at(0);
    std::visit(
        [&](const auto& values) {
          for (const auto v : values) {
            if (v == 0 || v == 1) ++n[static_cast<int>(v)];
          }
        },
        column.data);
  }
  HPCML_CHECK_AS(IoError, n[0] > 0 && n[1] > 0, "ensemble member '", dir, "': its training files hold ", n[0],
                 " events of class 0 and ", n[1], " of class 1; a likelihood ratio needs both");
  return cache[key] = std::log(static_cast<double>(n[0]) / static_cast<double>(n[1]));
}

// FNV-1a over the members' parameter digests: the ensemble's weights in one string.
std::string combined_digest(const std::vector<std::string>& digests) {
  uint64_t h = 1469598103934665603ULL;
  for (const auto& d : digests) {
    for (const unsigned char ch : d + ";") h = (h ^ ch) * 1099511628211ULL;
  }
  return fmt::format("ensemble-{}-members-fnv1a64-{:016x}", digests.size(), h);
}

// Each member's output, stacked: (rows, members, ...); logits or the regressed value.
at::Tensor stack_outputs(std::vector<std::unique_ptr<models::Model>>& members, const models::Inputs& inputs,
                         const TrainConfig& c) {
  std::vector<at::Tensor> outs;
  for (auto& m : members) {
    const at::Tensor o = forward_in_precision(*m, inputs, c);  // train.precision
    outs.push_back(o.reshape({o.size(0), -1}).to(at::kDouble));
  }
  return at::stack(outs, 1);
}

// The variation's members as one campaign model (collective).
CampaignModel members_model(Context& ctx, const TrainConfig& c, const std::vector<Member>& members) {
  Setup setup = set_up(c, ctx);
  CampaignModel m;
  m.config = setup.config;
  m.name = setup.model->name();
  const bool regression = c.infer.task != "auto" ? c.infer.task == "regression" : setup.feed->regression();
  m.task = regression ? "regression" : "classification";
  const bool binary = !regression && m.config.data.classes == 2;
  auto models = std::make_shared<std::vector<std::unique_ptr<models::Model>>>();
  std::vector<std::string> digests;
  std::vector<double> priors;
  for (const auto& member : members) {
    models->push_back(models->empty() ? std::move(setup.model) : build_model(m.config, *setup.feed));
    const std::string checkpoint = agreed_newest_checkpoint(*ctx.world, member.dir);
    HPCML_CHECK_AS(ConfigError, !checkpoint.empty(), "ensemble member '", member.dir, "' is recorded complete but "
                   "has no checkpoint in ", member.dir, "/checkpoints");
    load_checkpoint_weights(checkpoint, *models->back());
    models->back()->to(ctx.device.device);
    models->back()->set_training(false);
    digests.push_back(parameters_digest(models->back()->named_parameters()));
    priors.push_back(member.log_prior);
  }
  m.digest = combined_digest(digests);
  m.checkpoint = fmt::format("{} member(s): {} ... {}", members.size(), members.front().dir, members.back().dir);
  const std::string value = regression ? "prediction" : "scores";
  const bool keep = c.infer.members;
  m.values = {value + "_mean", value + "_variance"};
  if (binary) m.values.insert(m.values.end(), {"log_r_mean", "log_r_variance"});
  if (keep) m.values.push_back(value + "_members");
  if (keep && binary) m.values.push_back("log_r_members");
  const at::Tensor prior = at::tensor(priors, at::kDouble).to(ctx.device.device);
  // The campaign hands the inputs on the device; the columns stay there, and it brings a
  // unit's columns back at once.
  m.forward = [models, regression, binary, keep, prior, config = m.config](const models::Inputs& inputs) {
    const at::Tensor raw = stack_outputs(*models, inputs, config);  // (rows, M, C)
    const at::Tensor out = regression ? raw : at::softmax(raw, -1);
    std::vector<at::Tensor> cols = {out.mean(1).to(at::kFloat), out.var(1, /*unbiased=*/false).to(at::kFloat)};
    at::Tensor log_r;
    if (binary) {
      log_r = raw.select(2, 1) - raw.select(2, 0) + prior;  // (rows, M)
      cols.push_back(log_r.mean(1));
      cols.push_back(log_r.var(1, /*unbiased=*/false));
    }
    if (keep) cols.push_back(regression && out.size(2) == 1 ? out.squeeze(2).to(at::kFloat) : out.to(at::kFloat));
    if (keep && binary) cols.push_back(log_r);
    return cols;
  };
  return m;
}

// The variation's complete members from the summary, sorted by member number.
std::vector<Member> complete_members(const json& summary, const std::string& variation) {
  std::map<int64_t, Member> found;
  for (const auto& m : summary.at("members")) {
    if (m.value("variation", "") != variation || m.value("state", "") != "complete") continue;
    const int64_t k = m.at("member").get<int64_t>();
    found[k] = {k, m.at("dir").get<std::string>(), 0};
  }
  std::vector<Member> out;
  for (auto& [k, member] : found) out.push_back(std::move(member));
  return out;
}

}  // namespace

bool is_ensemble_dir(const std::string& dir) {
  return !dir.empty() && fs::is_regular_file(fs::path(dir) / "ensemble.json");
}

int run_ensemble_infer(Context& ctx, const TrainConfig& config, const CampaignFlags& flags) {
  auto& world = *ctx.world;
  const json summary = agreed_summary(world, config.run.dir);
  std::vector<std::string> variations;
  for (const auto& m : summary.at("members")) {
    const std::string v = m.value("variation", "");
    if (std::find(variations.begin(), variations.end(), v) == variations.end()) variations.push_back(v);
  }
  const fs::path out = config.infer.output_dir.empty() ? fs::path(config.run.dir) / "infer"
                                                       : fs::path(config.infer.output_dir);
  json record = {{"ensemble", config.run.dir}, {"variations", json::object()}};
  std::map<std::string, double> prior_cache;
  for (const auto& v : variations) {
    std::vector<Member> members = complete_members(summary, v);
    HPCML_CHECK_AS(ConfigError, !members.empty(), "config error: key 'run.dir': variation '", v, "' of the ensemble in ",
                   config.run.dir, " has no complete member (summary.json); nothing to run");
    std::string error;
    json priors = json::array();
    if (world.rank() == 0) {
      try {
        for (auto& m : members) priors.push_back(m.log_prior = log_class_prior(m.dir, prior_cache));
      } catch (const Error& e) {
        error = e.message();
      }
    }
    error = world.broadcast_string(error);
    HPCML_CHECK_AS(ConfigError, error.empty(), error);
    priors = json::parse(world.broadcast_string(priors.dump()));
    for (size_t i = 0; i < members.size(); ++i) members[i].log_prior = priors[i].get<double>();
    // The variation's campaign: its members' config (fields, model) with this config's infer,
    // runtime and log sections.
    TrainConfig c = read_run_config(members.front().dir);
    c.infer = config.infer;
    c.runtime = config.runtime;
    c.log = config.log;
    c.infer.output_dir = (out / v).string();
    c.infer.checkpoint.clear();
    const int rc = run_campaign(ctx, c, flags, [&members](Context& group, const TrainConfig& campaign) {
      return members_model(group, campaign, members);
    });
    json used = json::array();
    for (const auto& m : members) used.push_back({{"member", m.k}, {"dir", m.dir}, {"log_prior", m.log_prior}});
    record["variations"][v] = {{"output_dir", c.infer.output_dir}, {"members", used}};
    if (rc != 0) return rc;
  }
  if (world.rank() == 0) write_file_atomically((out / "ensemble-infer.json").string(), record.dump(2) + "\n");
  world.barrier();
  return 0;
}

}  // namespace hpcml::launch::ensemble
