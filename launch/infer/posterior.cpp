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

uint64_t event_seed(uint64_t seed, uint64_t file, int64_t row) {
  return io::datagen::derive_seed(io::datagen::derive_seed(seed, file), static_cast<uint64_t>(row));
}

Posteriors draw_posteriors(models::flows::NsfModel& model, const at::Tensor& strain, const std::vector<int64_t>& rows,
                           uint64_t file, uint64_t seed, int64_t draws, const io::gw::GwOptions& gw) {
  const auto n = static_cast<int64_t>(rows.size());
  HPCML_CHECK(strain.dim() == 2 && strain.size(0) == n, "draw_posteriors: expected strain (", n, ", T), found ",
              strain.sizes());
  Posteriors p;
  p.rows = at::tensor(rows, at::kLong);
  // float64: the weights were computed at exactly these values (a float32 t_c would move
  // log L by up to ~1e-3 at this SNR).
  p.samples = at::zeros({n, draws, 5}, at::kDouble);
  p.log_q = at::zeros({n, draws}, at::kDouble);
  p.log_weights = at::zeros({n, draws}, at::kDouble);
  p.stats = at::zeros({n, 3}, at::kDouble);
  torch::NoGradGuard no_grad;
  model.set_training(false);
  const std::optional<models::flows::TimeAligner> aligner =
      model.align_time() ? std::optional<models::flows::TimeAligner>(model.aligner()) : std::nullopt;
  for (int64_t k = 0; k < n; ++k) {
    at::Generator generator = at::detail::createCPUGenerator(event_seed(seed, file, rows[static_cast<size_t>(k)]));
    const auto r = models::flows::gw_importance_sample(model.flow(), strain[k], draws, gw, generator,
                                                       aligner ? &*aligner : nullptr);
    p.samples[k].copy_(r.samples);
    p.log_q[k].copy_(r.log_prob);
    p.log_weights[k].copy_(r.log_weights);
    p.stats[k].copy_(at::tensor({r.ess, r.efficiency, r.log_evidence}, at::kDouble));
  }
  return p;
}

std::vector<io::Column> posterior_columns(const Posteriors& p) {
  const auto lse = at::logsumexp(p.log_weights, 1, /*keepdim=*/true);
  const auto weights = at::where(at::isfinite(lse), at::exp(p.log_weights - lse), at::zeros_like(p.log_weights));
  std::vector<io::Column> columns;
  columns.push_back(io::column_from_tensor("row", p.rows));
  columns.push_back(io::column_from_tensor("samples", p.samples, {"M_sun", "", "Mpc", "s", "rad"},
                                           models::flows::kGwParameterNames));
  columns.push_back(io::column_from_tensor("log_q", p.log_q.contiguous()));
  columns.push_back(io::column_from_tensor("log_weights", p.log_weights.contiguous()));
  columns.push_back(io::column_from_tensor("weights", weights.contiguous()));
  columns.push_back(io::column_from_tensor("ess", p.stats.select(1, 0).contiguous()));
  columns.push_back(io::column_from_tensor("efficiency", p.stats.select(1, 1).contiguous()));
  columns.push_back(io::column_from_tensor("log_evidence", p.stats.select(1, 2).contiguous()));
  return columns;
}

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
  limits::check_fits_in_memory(static_cast<double>(count) * options.samples * (5 * 8 + 8 + 8) * 2 +
                                   static_cast<double>(options.samples) * (strain_length + 64) * 4,
                               "infer's posterior draws", "--samples x --events");
  check_output_path(options.output, {options.input, path}, "-o/--output");
  const auto flow = make_flow_model(c, 5, strain_length);
  auto& model = *flow;
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
  const auto start = Clock::now();
  const at::Tensor strain = mine.empty() ? at::zeros({0, strain_length}, at::kFloat)
                                         : data.read(mine).fixed.at(strain_field);
  const Posteriors p = draw_posteriors(model, strain, mine, 0, options.seed, draws, gw);
  const double seconds = ms_between(start, Clock::now()) / 1000.0;
  // Gathered on rank 0 in row order: rank r's k-th event is row first + r + k N.
  std::vector<at::Tensor> parts = {p.rows, p.samples.reshape({-1}), p.log_q.reshape({-1}), p.log_weights.reshape({-1}),
                                   p.stats.reshape({-1})};
  std::vector<std::vector<at::Tensor>> gathered;
  for (const auto& t : parts) gathered.push_back(world.allgather_varying(t));
  if (rank != 0) return 0;
  Posteriors all;
  all.rows = at::empty({count}, at::kLong);
  all.samples = at::empty({count, draws, 5}, p.samples.scalar_type());
  all.log_q = at::empty({count, draws}, p.log_q.scalar_type());
  all.log_weights = at::empty({count, draws}, at::kDouble);
  all.stats = at::empty({count, 3}, at::kDouble);
  for (int r = 0; r < n; ++r) {
    const auto& g = [&](size_t part) { return gathered[part][static_cast<size_t>(r)]; };
    const auto rows = g(0), s = g(1).reshape({-1, draws, 5}), q = g(2).reshape({-1, draws});
    const auto w = g(3).reshape({-1, draws}), t = g(4).reshape({-1, 3});
    for (int64_t k = 0; k < rows.size(0); ++k) {
      const int64_t i = r + k * n;
      all.rows[i] = rows[k];
      all.samples[i].copy_(s[k]);
      all.log_q[i].copy_(q[k]);
      all.log_weights[i].copy_(w[k]);
      all.stats[i].copy_(t[k]);
    }
  }
  std::vector<io::Column> columns = posterior_columns(all);
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
  const auto efficiency = all.stats.select(1, 1);
  for (int64_t i = 0; i < count; ++i) {
    std::printf("event %lld: sample efficiency %.4f (ESS %.1f of %lld), log evidence %.3f\n",
                static_cast<long long>(all.rows[i].item<int64_t>()), all.stats[i][1].item<double>(),
                all.stats[i][0].item<double>(), static_cast<long long>(draws), all.stats[i][2].item<double>());
  }
  std::printf("infer: %lld event(s) x %lld draws on %d rank(s) in %.1f s: median sample efficiency %.4f, mean %.4f; "
              "wrote %s\n",
              static_cast<long long>(count), static_cast<long long>(draws), n, seconds,
              efficiency.median().item<double>(), efficiency.mean().item<double>(), options.output.c_str());
  return 0;
}


}  // namespace hpcml::launch
