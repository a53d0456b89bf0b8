// `hpcml bench pack`: K members of one model trained packed (one models::PackedModel, one
// batched product per layer) against the same K trained one after another in one process,
// full training steps (forward, loss, backward, fused Adam), member-steps per second,
// alternated in one run (docs/benchmarks.md#packed-members-hpcml-bench-pack-issue-28).
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "launch/bench/stats.hpp"
#include "launch/cli/command.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/pack.hpp"
#include "models/packed.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::cli {

namespace {

struct PackBenchOptions {
  std::string model = "facile";
  std::vector<int> members{32};
  std::vector<int> batches{256};
  int at_members = 32;
  int at_batch = 256;
  int steps = 20;
  int reps = 5;
  int threads = 1;
  std::string product = "baddbmm";
  std::string json_path;
};

using Clock = std::chrono::steady_clock;
using bench::median;

// The MLP benchmark workload (docs/benchmarks.md, bench ddp): 256-1024-1024-10, 1.33M parameters.
constexpr int64_t kMlpInputs = 256;
constexpr int64_t kMlpClasses = 10;

std::unique_ptr<models::Model> make_member(const std::string& model, uint64_t seed) {
  if (model == "mlp") return models::make_mlp(kMlpInputs, {1024, 1024}, kMlpClasses, seed);
  return models::make(model, seed);
}

// One workload point: K members' data (x (B, K, F), y (B, K)) and their models.
struct Point {
  int members, batch;
  bool regression;
  at::Tensor x, y;
};

Point make_point(const std::string& model, int members, int batch) {
  Point p{members, batch, model != "mlp", {}, {}};
  const int64_t features = model == "mlp" ? kMlpInputs : models::zoo_entry(model).inputs.front().shape.front();
  torch::manual_seed(0);
  p.x = torch::randn({batch, members, features});
  p.y = p.regression ? torch::rand({batch, members}) * 100 + 1
                     : torch::randint(0, kMlpClasses, {batch, members}, at::kLong);
  return p;
}

std::vector<at::Tensor> parameters_of(const models::Model& m) {
  std::vector<at::Tensor> out;
  for (const auto& [n, t] : m.named_parameters()) out.push_back(t);
  return out;
}

// Timed seconds of `steps` steps of `step` after `warmup` untimed ones.
template <typename Step>
double timed(int warmup, int steps, Step&& step) {
  for (int i = 0; i < warmup; ++i) step();
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Member-steps per second of the K members packed.
double packed_rate(const PackBenchOptions& o, const Point& p) {
  std::vector<std::unique_ptr<models::Model>> members;
  for (int k = 0; k < p.members; ++k) members.push_back(make_member(o.model, static_cast<uint64_t>(k)));
  models::PackedModel pack(members);
  pack.set_product(o.product == "baddbmm" ? models::PackedModel::Product::kBaddbmm
                                          : models::PackedModel::Product::kBmm);
  auto params = parameters_of(pack);
  FusedAdam optimizer(params, torch::optim::AdamOptions(1e-3));
  const models::Inputs inputs{{"x", p.x}};
  const double seconds = timed(1, o.steps, [&] {
    for (auto& t : params) t.mutable_grad().reset();
    const at::Tensor out = pack.forward(inputs);
    pack_losses("auto", p.regression, out, p.y).sum().backward();
    optimizer.step();
  });
  return static_cast<double>(p.members) * o.steps / seconds;
}

// Member-steps per second of the same K members trained one after another.
double sequential_rate(const PackBenchOptions& o, const Point& p) {
  double seconds = 0;
  for (int k = 0; k < p.members; ++k) {
    auto model = make_member(o.model, static_cast<uint64_t>(k));
    auto params = parameters_of(*model);
    FusedAdam optimizer(params, torch::optim::AdamOptions(1e-3));
    const models::Inputs inputs{{"x", p.x.select(1, k).contiguous()}};
    const at::Tensor y = p.y.select(1, k).contiguous();
    seconds += timed(1, o.steps, [&] {
      for (auto& t : params) t.mutable_grad().reset();
      const at::Tensor out = model->forward(inputs);
      task_loss("auto", p.regression, out, y).backward();
      optimizer.step();
    });
  }
  return static_cast<double>(p.members) * o.steps / seconds;
}

nlohmann::json measure(const PackBenchOptions& o, int members, int batch) {
  const Point p = make_point(o.model, members, batch);
  std::vector<double> packed, sequential, ratio;
  for (int rep = 0; rep < o.reps; ++rep) {
    packed.push_back(packed_rate(o, p));
    sequential.push_back(sequential_rate(o, p));
    ratio.push_back(packed.back() / sequential.back());
  }
  std::printf("  %-6s K %3d batch %5d: packed %9.0f member-steps/s, one after another %9.0f: %.2fx\n", o.model.c_str(),
              members, batch, median(packed), median(sequential), median(ratio));
  std::fflush(stdout);
  return {{"model", o.model},
          {"members", members},
          {"batch", batch},
          {"packed_member_steps_per_s", median(packed)},
          {"sequential_member_steps_per_s", median(sequential)},
          {"packed_over_sequential", median(ratio)},
          {"per_rep", {{"packed", packed}, {"sequential", sequential}, {"ratio", ratio}}}};
}

int run_bench_pack(Context& c, const PackBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, models::packable(o.model), "bench pack: --model: expected one of [facile, mlp], found ",
                 o.model);
  if (c.env.rank != 0) return 0;
  at::set_num_threads(o.threads);
  std::printf(
      "bench pack %s: %d thread(s), %d steps per member x %d alternating reps; packed (one model, %s per "
      "layer) vs one after another\n",
      o.model.c_str(), o.threads, o.steps, o.reps, o.product.c_str());
  nlohmann::json rows = nlohmann::json::array();
  // Two lines through (at_members, at_batch): over batch sizes, then over member counts.
  for (int b : o.batches) rows.push_back(measure(o, o.at_members, b));
  for (int k : o.members) {
    if (k != o.at_members || std::find(o.batches.begin(), o.batches.end(), o.at_batch) == o.batches.end()) {
      rows.push_back(measure(o, k, o.at_batch));
    }
  }
  const nlohmann::json out = {{"model", o.model},       {"product", o.product}, {"threads", o.threads},
                              {"steps", o.steps},       {"reps", o.reps},       {"at_members", o.at_members},
                              {"at_batch", o.at_batch}, {"rows", rows}};
  std::printf("%s\n", out.dump().c_str());
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_pack_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "pack",
      "Packed members (train.pack): K members of one model trained as one packed model against the same K trained "
      "one after another in one process (forward, loss, backward, fused Adam), member-steps/s, alternated; over "
      "--batch at --at-members members, then over --members at --at-batch; rank 0");
  add_common_options(sub, common);
  auto o = std::make_shared<PackBenchOptions>();
  sub->add_option("--model", o->model, "facile, or mlp (the MLP workload 256-1024-1024-10 of bench ddp)")
      ->capture_default_str()
      ->check(CLI::IsMember({"facile", "mlp"}));
  sub->add_option("--members", o->members, "Member counts of the second line (at --at-batch)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, limits::kMaxMembers));
  sub->add_option("--batch", o->batches, "Batch sizes of the first line (at --at-members)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, limits::kMaxBatch));
  sub->add_option("--at-members", o->at_members, "Members of the batch line")
      ->capture_default_str()
      ->check(CLI::Range(1, limits::kMaxMembers));
  sub->add_option("--at-batch", o->at_batch, "Batch of the members line")
      ->capture_default_str()
      ->check(CLI::Range(1, limits::kMaxBatch));
  sub->add_option("--steps", o->steps, "Timed steps per member per measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--reps", o->reps, "Alternating repetitions (median of ratios)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  sub->add_option("--threads", o->threads, "Intra-op threads")->capture_default_str()->check(CLI::Range(1, 1024));
  sub->add_option("--product", o->product, "The packed Linear's product: baddbmm, or bmm then a bias add")
      ->capture_default_str()
      ->check(CLI::IsMember({"baddbmm", "bmm"}));
  sub->add_option("--json", o->json_path, "Also write the result as JSON to this file");
  sub->callback([&selected, o] { selected = [o](Context& c) { return run_bench_pack(c, *o); }; });
}

}  // namespace hpcml::launch::cli
