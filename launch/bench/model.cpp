// `hpcml bench model <name>`: full training steps (forward, MSE loss, backward, Adam)
// of a zoo model at one thread, against its Python twin under plain eager PyTorch
// (bench/model_twin_step.py) at the same batch and threads, alternated in one run.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "hpcml/build_config.hpp"
#include "launch/bench/stats.hpp"
#include "launch/cli/command.hpp"
#include "launch/train/optim.hpp"
#include "launch/tracking/tracking.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::cli {

namespace {

struct ModelBenchOptions {
  std::string name;
  int batch = 256;
  int steps = 300;
  int warmup = 20;
  int reps = 5;
  int threads = 1;
  std::string python = "/usr/bin/python3";
  std::string twin_script = std::string(HPCML_SOURCE_DIR) + "/bench/model_twin_step.py";
  std::string json_path;
};

using Clock = std::chrono::steady_clock;

using bench::median;

// hpcml's side: samples/s of `steps` training steps.
double hpcml_samples_per_s(const ModelBenchOptions& o) {
  const auto& entry = models::zoo_entry(o.name);
  auto model = models::make(o.name, 0);
  std::vector<at::Tensor> params;
  for (const auto& [n, p] : model->named_parameters()) params.push_back(p);
  FusedAdam optimizer(params, torch::optim::AdamOptions(1e-3));  // the Trainer's Adam
  const models::Inputs x = models::example_inputs(o.name, o.batch, /*seed=*/0);
  torch::manual_seed(0);
  const bool regression = entry.task == "regression";
  const at::Tensor y = regression ? torch::rand({o.batch, 1}) * 100 + 1 : torch::randint(0, 2, {o.batch}, at::kLong);
  auto step = [&] {
    for (auto& p : params) p.mutable_grad().reset();  // what optimizer.zero_grad(set_to_none) does
    const at::Tensor out = model->forward(x);
    const at::Tensor loss = regression ? torch::mse_loss(out, y) : torch::nn::functional::cross_entropy(out, y);
    loss.backward();
    optimizer.step();
  };
  for (int i = 0; i < o.warmup; ++i) step();
  const auto start = Clock::now();
  for (int i = 0; i < o.steps; ++i) step();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return static_cast<double>(o.steps) * o.batch / seconds;
}

// The twin's side, in a fresh Python process.
double twin_samples_per_s(const ModelBenchOptions& o) {
  const std::string cmd = o.python + " " + o.twin_script + " --model " + o.name + " --batch " +
                          std::to_string(o.batch) + " --steps " + std::to_string(o.steps) + " --warmup " +
                          std::to_string(o.warmup) + " --threads " + std::to_string(o.threads) + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  HPCML_CHECK_AS(IoError, pipe != nullptr, "bench model: cannot run '", cmd, "'");
  std::string output;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
  const int rc = pclose(pipe);
  HPCML_CHECK_AS(IoError, rc == 0, "bench model: the Python twin failed (", o.twin_script, "): ", output);
  const auto line = output.substr(output.rfind('{'));
  return nlohmann::json::parse(line).at("samples_per_s").get<double>();
}

int run_bench_model(Context& c, const ModelBenchOptions& o) {
  if (o.name == "tracking") {  // the tracking pipeline's own benchmark (launch/tracking/tracking.cpp)
    TrackingBenchOptions t;
    t.threads = o.threads;
    t.reps = o.reps;
    t.json_path = o.json_path;
    return run_tracking_bench(c, t);
  }
  HPCML_CHECK_AS(ConfigError, o.batch >= 1 && o.steps >= 1 && o.reps >= 1 && o.threads >= 1,
                 "bench model: --batch, --steps, --reps and --threads must be >= 1");
  models::zoo_entry(o.name);  // an unknown name is a one-line error
  if (c.env.rank != 0) return 0;
  at::set_num_threads(o.threads);
  std::vector<double> mine, twin, ratio;
  for (int rep = 0; rep < o.reps; ++rep) {
    mine.push_back(hpcml_samples_per_s(o));
    twin.push_back(twin_samples_per_s(o));
    ratio.push_back(mine.back() / twin.back());
  }
  const nlohmann::json out = {{"model", o.name},
                              {"batch", o.batch},
                              {"threads", o.threads},
                              {"steps", o.steps},
                              {"reps", o.reps},
                              {"hpcml_samples_per_s", median(mine)},
                              {"twin_samples_per_s", median(twin)},
                              {"hpcml_over_twin", median(ratio)},
                              {"per_rep", {{"hpcml", mine}, {"twin", twin}, {"ratio", ratio}}}};
  std::printf("bench model %s: batch %d, %d thread(s), %d steps x %d alternating reps\n", o.name.c_str(), o.batch,
              o.threads, o.steps, o.reps);
  std::printf("  hpcml %.0f samples/s, Python twin (eager PyTorch) %.0f samples/s: %.2fx (median of per-rep ratios)\n",
              median(mine), median(twin), median(ratio));
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_model_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "model",
      "Training-step throughput of a zoo model (forward, MSE or cross-entropy loss, backward, Adam) against its Python "
      "twin "
      "under plain eager PyTorch (bench/model_twin_step.py), same batch and threads, alternated; rank 0");
  add_common_options(sub, common);
  auto o = std::make_shared<ModelBenchOptions>();
  sub->add_option("name", o->name, "Zoo model (hpcml models), or tracking (the tracking pipeline: docs/tracking.md)")
      ->required();
  sub->add_option("--batch", o->batch, "Samples per step")
      ->capture_default_str()
      ->check(CLI::Range(1, limits::kMaxBatch));
  sub->add_option("--steps", o->steps, "Timed steps per measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--warmup", o->warmup, "Untimed steps first")->capture_default_str()->check(CLI::Range(0, 1000000));
  sub->add_option("--reps", o->reps, "Alternating repetitions (median of ratios)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  sub->add_option("--threads", o->threads, "Intra-op threads, both sides")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  sub->add_option("--python", o->python, "Python with torch for the twin")->capture_default_str();
  sub->add_option("--twin-script", o->twin_script, "The twin's step script")->capture_default_str();
  sub->add_option("--json", o->json_path, "Also write the result as JSON to this file");
  sub->callback([&selected, o] { selected = [o](Context& c) { return run_bench_model(c, *o); }; });
}

}  // namespace hpcml::launch::cli
