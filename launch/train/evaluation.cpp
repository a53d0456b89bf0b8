// Validation metrics, the flow's calibration, and `hpcml eval` (see evaluation.hpp, trainer.hpp).
#include "launch/train/evaluation.hpp"


#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <sstream>

#include "collectives/gradient_reducer.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"
#include "core/signals.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"
#include "hpcml/build_config.hpp"
#include "io/datagen/datagen.hpp"
#include "io/h5_dataset.hpp"
#include "io/h5_tensors.hpp"
#include "io/predictions.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/optim.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/setup.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

Scores validation_scores(models::Model& model, Feed& feed, const TrainConfig& c) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  Scores scores(feed.regression(), binary_task(c, feed), density_task(c));
  const c10::Device device = model_device(model);
  feed.for_each_validation([&](const Example& batch) {
    const Example e = batch.to_device(device);
    const auto output = forward_in_precision(model, e.inputs, c);
    const double loss = task_loss(c.train.loss, feed.regression(), output, e.target).item<double>();
    scores.add(output.cpu(), batch.target, loss);  // the sums live on the CPU
  });
  model.set_training(true);
  return scores;
}

// The metrics as JSON fields, "val_"-prefixed or not, in a fixed order.
nlohmann::json metrics_json(const Scores& scores, const std::string& prefix) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : scores.metrics()) out[prefix + key] = value;
  return out;
}

std::string metrics_text(const Scores& scores) {
  std::string text;
  for (const auto& [key, value] : scores.metrics()) {
    if (key == "samples") continue;
    text += (text.empty() ? "" : ", ") + key + " " + fmt::format("{:.5g}", value);
  }
  return text;
}

// Simulation-based calibration of a density model over the validation set (every rank
// its share; the sums allreduced): coverage of the central 50% / 90% intervals with
// the 99% binomial band, the P–P curve, KS p-values, and the chirp-mass interval width
// relative to the prior's. Rank 0 prints a table; the JSON goes into summary.json.
nlohmann::json flow_calibration(Context& ctx, models::Model& model, Feed& feed, const TrainConfig& c) {
  auto& world = *ctx.world;
  auto& nsf = dynamic_cast<models::flows::NsfModel&>(model);
  auto& flow = nsf.flow();
  models::flows::CalibrationOptions o;
  o.samples = c.model.flow.posterior_samples;
  const auto gw = models::flows::gw_options_from_file(io::expand_files(c.data.validation_files).front());
  o.prior_width = gw.chirp_mass_max - gw.chirp_mass_min;
  models::flows::Calibration calibration(flow.options().theta_dim, o);
  // Each rank's own stream: the statistics do not depend on which rank drew them.
  at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(c.train.seed) * 7919u + 17u +
                                                            static_cast<uint64_t>(world.rank()));
  const auto start = Clock::now();
  flow.train(false);
  feed.for_each_validation([&](const Example& e) {
    const auto [theta, strain] = nsf.flow_inputs(e.inputs.at("theta"), e.inputs.at("strain"));
    calibration.add(flow, theta, strain, generator);
  });
  world.allreduce(calibration.sums());
  const auto r = calibration.result();
  const double n = r.events;
  // The 99% band of a binomial fraction around p (normal approximation, z = 2.5758).
  auto band = [&](double p) {
    const double half = 2.5758 * std::sqrt(p * (1 - p) / std::max(1.0, n));
    return std::vector<double>{p - half, p + half};
  };
  const auto band50 = band(0.5), band90 = band(0.9);
  std::vector<std::string> names = models::flows::kGwParameterNames;
  names.resize(static_cast<size_t>(flow.options().theta_dim));
  nlohmann::json out = {{"events", n}, {"posterior_samples", o.samples}, {"band_50", band50}, {"band_90", band90}};
  bool within = true;
  double min_p = 1.0;
  for (size_t d = 0; d < names.size(); ++d) {
    const std::string name = names[d].empty() ? "theta" + std::to_string(d) : names[d];
    out["coverage_50"][name] = r.coverage_50[d];
    out["coverage_90"][name] = r.coverage_90[d];
    out["ks_p"][name] = r.ks_p[d];
    out["pp"][name] = r.pp[d];
    within = within && r.coverage_50[d] >= band50[0] && r.coverage_50[d] <= band50[1] &&
             r.coverage_90[d] >= band90[0] && r.coverage_90[d] <= band90[1];
    min_p = std::min(min_p, r.ks_p[d]);
  }
  out["coverage_within_band"] = within;
  out["ks_min_p"] = min_p;
  out["chirp_mass_width_90_over_prior"] = r.median_width_90;
  out["chirp_mass_width_50_over_prior"] = r.median_width_50;
  out["informative"] = r.median_width_90 <= 0.25;
  if (world.rank() == 0) {
    std::printf("calibration on %.0f held-out events, %lld posterior draws each (%.1f s); 99%% bands: 50%% "
                "[%.3f, %.3f], 90%% [%.3f, %.3f]\n",
                n, static_cast<long long>(o.samples), ms_between(start, Clock::now()) / 1000.0, band50[0], band50[1],
                band90[0], band90[1]);
    std::printf("  %-12s %8s %8s %8s   P-P at 0.1 0.2 ... 0.9\n", "parameter", "cov50", "cov90", "KS p");
    for (size_t d = 0; d < names.size(); ++d) {
      std::string pp;
      for (int k = 1; k <= 9; ++k) pp += fmt::format(" {:.3f}", r.pp[d][static_cast<size_t>(k * o.bins / 10)]);
      std::printf("  %-12s %8.3f %8.3f %8.3f  %s\n", names[d].c_str(), r.coverage_50[d], r.coverage_90[d], r.ks_p[d],
                  pp.c_str());
    }
    std::printf("coverage within the 99%% band: %s; KS min p %.3g; median chirp-mass 90%% width / prior width %.3f "
                "(50%%: %.3f)\n",
                within ? "yes" : "no", min_p, r.median_width_90, r.median_width_50);
  }
  return out;
}


int evaluate(Context& ctx, const TrainConfig& config, const std::string& checkpoint_path) {
  TrainConfig c = with_model_defaults(config);
  Activity activity("evaluating model '" + c.model.name + "'");
  HPCML_CHECK_AS(ConfigError, c.data.name == "synthetic" || !c.data.validation_files.empty(),
                 "config error: key 'data.validation_files': expected the files to evaluate on, found none");
  if (c.data.name == "hdf5" && c.data.files.empty()) c.data.files = c.data.validation_files;
  auto& world = *ctx.world;
  const std::string path = checkpoint_path.empty() ? agreed_newest_checkpoint(world, c.run.dir) : checkpoint_path;
  HPCML_CHECK_AS(ConfigError, !path.empty(), "eval: no checkpoint in '", c.run.dir,
                 "/checkpoints' (run.dir); give one with --checkpoint");
  Setup setup = set_up(c, ctx);
  auto& model = setup.model;
  load_checkpoint_weights(path, *model);
  model->to(ctx.device.device);
  Scores scores = validation_scores(*model, *setup.feed, setup.config);
  world.allreduce(scores.sums());
  HPCML_CHECK_AS(ConfigError, scores.samples() > 0, "eval: the evaluation set is empty");
  nlohmann::json calibration;
  if (density_task(setup.config)) {
    model->to(c10::kCPU);  // the calibration draws posteriors with a CPU generator
    calibration = flow_calibration(ctx, *model, *setup.feed, setup.config);
  }
  if (world.rank() != 0) return 0;
  nlohmann::json result = {{"checkpoint", path}, {"model", model->name()}};
  result.update(metrics_json(scores, ""));
  if (!calibration.is_null()) result["calibration"] = calibration;
  result["parameters_sha256"] = parameters_digest(model->named_parameters());
  std::printf("eval %s (%s) on %.0f samples: %s\n", model->name().c_str(), path.c_str(), scores.samples(),
              metrics_text(scores).c_str());
  // Into run.dir/summary.json under "eval", keeping what training wrote.
  const fs::path summary_path = fs::path(c.run.dir) / "summary.json";
  nlohmann::json summary = nlohmann::json::object();
  if (fs::exists(summary_path)) {
    std::ifstream in(summary_path);
    summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (summary.is_discarded()) summary = nlohmann::json::object();
  }
  summary["eval"] = result;
  fs::create_directories(c.run.dir);
  write_file_atomically(summary_path.string(), summary.dump(2) + "\n");
  std::printf("wrote %s\n", summary_path.string().c_str());
  return 0;
}


}  // namespace hpcml::launch
