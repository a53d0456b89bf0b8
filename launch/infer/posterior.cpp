// `hpcml infer`: importance-sampled GW posteriors from the flow (see posterior.hpp).
#include "launch/infer/posterior.hpp"


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

namespace hpcml::launch {

namespace fs = std::filesystem;

int infer(Context& ctx, const TrainConfig& config, const InferOptions& options) {
  const TrainConfig c = with_model_defaults(config);
  Activity activity("drawing posterior samples of model '" + c.model.name + "' for '" + options.input + "'");
  HPCML_CHECK_AS(ConfigError, density_task(c), "config error: key 'model.name': infer needs a density model "
                 "(nsf-gw), found ", c.model.name);
  HPCML_CHECK_AS(ConfigError, options.samples >= 2, "infer: --samples: expected at least 2, found ", options.samples);
  auto& world = *ctx.world;
  const std::string path = options.checkpoint.empty() ? agreed_newest_checkpoint(world, c.run.dir) : options.checkpoint;
  HPCML_CHECK_AS(ConfigError, !path.empty(), "infer: no checkpoint in '", c.run.dir,
                 "/checkpoints' (run.dir); give one with --checkpoint");
  const std::string theta_field = flow_field(c, "theta"), strain_field = flow_field(c, "strain");
  // The strain (and, when present, the true parameters) of the input file.
  io::H5DatasetOptions data_options;
  data_options.files = {options.input};
  data_options.expect.fields.push_back({strain_field, io::layout::ElementKind::kFloat, 1});
  io::H5Dataset probe(data_options);
  const auto& info = probe.files().front();
  const bool has_theta = info.field(theta_field) != nullptr;
  if (has_theta) data_options.expect.fields.push_back({theta_field, io::layout::ElementKind::kFloat, 1});
  io::H5Dataset data(data_options);
  const int64_t rows = data.size();
  const int64_t count = options.events == 0 ? rows - options.first : options.events;
  HPCML_CHECK_AS(ConfigError, options.first >= 0 && count >= 1 && options.first + count <= rows, "infer: --first ",
                 options.first, " --events ", options.events, ": expected rows within the ", rows, " of ",
                 options.input);
  // Rank 0 gathers every event's draws: samples (5 floats) and log weights (a double)
  // per draw, and the flow's batch of draws with its strain context on each rank.
  const int64_t strain_length = info.field(strain_field)->shape.dims[1];
  limits::check_fits_in_memory(static_cast<double>(count) * options.samples * (5 * 4 + 8) * 2 +
                                   static_cast<double>(options.samples) * (strain_length + 64) * 4,
                               "infer's posterior draws", "--samples x --events");
  check_output_path(options.output, {options.input, path}, "-o/--output");
  models::flows::NsfModel model(flow_options(c, 5, strain_length));
  load_checkpoint_weights(path, model);
  model.set_training(false);
  const auto gw = models::flows::gw_options_from_file(options.input);
  HPCML_CHECK_AS(ConfigError, gw.length == strain_length, "infer: ", options.input, ": attribute gw.length ",
                 gw.length, " differs from the strain width ", strain_length);

  // Events first + r, first + r + N, ... on rank r; each from its own seeded generator.
  const int rank = world.rank(), n = world.size();
  std::vector<int64_t> mine;
  for (int64_t i = rank; i < count; i += n) mine.push_back(options.first + i);
  const int64_t draws = options.samples;
  at::Tensor samples = at::zeros({static_cast<int64_t>(mine.size()), draws, 5}, at::kFloat);
  at::Tensor log_weights = at::zeros({static_cast<int64_t>(mine.size()), draws}, at::kDouble);
  at::Tensor stats = at::zeros({static_cast<int64_t>(mine.size()), 4}, at::kDouble);  // row, ess, efficiency, log Z
  const auto start = Clock::now();
  for (size_t k = 0; k < mine.size(); ++k) {
    const auto block = data.read({mine[k]});
    at::Generator generator =
        at::detail::createCPUGenerator(io::datagen::derive_seed(options.seed, static_cast<uint64_t>(mine[k])));
    torch::NoGradGuard no_grad;
    const auto r = models::flows::gw_importance_sample(model.flow(), block.fixed.at(strain_field), draws, gw, generator);
    samples[static_cast<int64_t>(k)].copy_(r.samples);
    log_weights[static_cast<int64_t>(k)].copy_(r.log_weights);
    stats[static_cast<int64_t>(k)].copy_(
        at::tensor({static_cast<double>(mine[k]), r.ess, r.efficiency, r.log_evidence}, at::kDouble));
  }
  const double seconds = ms_between(start, Clock::now()) / 1000.0;
  // Gathered on rank 0 in row order: rank r's k-th event is row first + r + k N.
  const auto all_samples = world.allgather_varying(samples.reshape({-1}));
  const auto all_weights = world.allgather_varying(log_weights.reshape({-1}));
  const auto all_stats = world.allgather_varying(stats.reshape({-1}));
  if (rank != 0) return 0;
  at::Tensor out_samples = at::empty({count, draws, 5}, at::kFloat);
  at::Tensor out_log_weights = at::empty({count, draws}, at::kDouble);
  at::Tensor out_stats = at::empty({count, 4}, at::kDouble);
  for (int r = 0; r < n; ++r) {
    const auto s = all_samples[static_cast<size_t>(r)].reshape({-1, draws, 5});
    const auto w = all_weights[static_cast<size_t>(r)].reshape({-1, draws});
    const auto t = all_stats[static_cast<size_t>(r)].reshape({-1, 4});
    for (int64_t k = 0; k < t.size(0); ++k) {
      const int64_t i = r + k * n;
      out_samples[i].copy_(s[k]);
      out_log_weights[i].copy_(w[k]);
      out_stats[i].copy_(t[k]);
    }
  }
  const auto lse = at::logsumexp(out_log_weights, 1, /*keepdim=*/true);
  const auto out_weights = at::where(at::isfinite(lse), at::exp(out_log_weights - lse), at::zeros_like(out_log_weights));
  std::vector<io::Column> columns;
  columns.push_back(io::column_from_tensor("row", out_stats.select(1, 0).to(at::kLong)));
  columns.push_back(io::column_from_tensor("samples", out_samples, {"M_sun", "", "Mpc", "s", "rad"},
                                           models::flows::kGwParameterNames));
  columns.push_back(io::column_from_tensor("log_weights", out_log_weights));
  columns.push_back(io::column_from_tensor("weights", out_weights));
  columns.push_back(io::column_from_tensor("ess", out_stats.select(1, 1).contiguous()));
  columns.push_back(io::column_from_tensor("efficiency", out_stats.select(1, 2).contiguous()));
  columns.push_back(io::column_from_tensor("log_evidence", out_stats.select(1, 3).contiguous()));
  if (has_theta) {
    std::vector<int64_t> wanted(static_cast<size_t>(count));
    std::iota(wanted.begin(), wanted.end(), options.first);
    columns.push_back(io::column_from_tensor("parameters", data.read(wanted).fixed.at(theta_field).contiguous(),
                                             {"M_sun", "", "Mpc", "s", "rad"}, models::flows::kGwParameterNames));
  }
  io::Provenance provenance;
  provenance.model = model.name();
  provenance.checkpoint_digest = parameters_digest(model.named_parameters());
  provenance.config_yaml = config::to_yaml(c);
  provenance.input_file = options.input;
  provenance.first_row = options.first;
  provenance.rows = count;
  io::write_predictions(options.output, std::move(columns), provenance, "hpcml.gw.posterior");
  const auto efficiency = out_stats.select(1, 2);
  for (int64_t i = 0; i < count; ++i) {
    std::printf("event %lld: sample efficiency %.4f (ESS %.1f of %lld), log evidence %.3f\n",
                static_cast<long long>(out_stats[i][0].item<double>()), out_stats[i][2].item<double>(),
                out_stats[i][1].item<double>(), static_cast<long long>(draws), out_stats[i][3].item<double>());
  }
  std::printf("infer: %lld event(s) x %lld draws on %d rank(s) in %.1f s: median sample efficiency %.4f, mean %.4f; "
              "wrote %s\n",
              static_cast<long long>(count), static_cast<long long>(draws), n, seconds,
              efficiency.median().item<double>(), efficiency.mean().item<double>(), options.output.c_str());
  return 0;
}


}  // namespace hpcml::launch
