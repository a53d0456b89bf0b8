#include "launch/train/trainer.hpp"


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
#include "launch/train/evaluation.hpp"
#include "launch/train/setup.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

namespace {

void write_atomically(const fs::path& path, const std::string& text) { write_file_atomically(path.string(), text); }

void truncate_metrics(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (row.is_object() && row.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_atomically(path, kept);
}

// Why a training loss is not finite, as far as this rank's batch tells: a non-finite
// value in an input, else the model or its loss diverged.
std::string nonfinite_cause(double loss, const models::Inputs& inputs, const DataSection& data) {
  for (const auto& [name, t] : inputs) {
    if (!t.is_floating_point()) continue;
    const int64_t bad = (~at::isfinite(t)).sum().item<int64_t>();
    if (bad > 0) {
      const auto field = data.inputs.find(name);
      const std::string source = data.name == "hdf5" && field != data.inputs.end()
                                     ? " (dataset '" + field->second + "' of data.files)"
                                     : std::string();
      return fmt::format("the loss is {}: input '{}'{} holds {} non-finite value(s) in this batch", loss, name,
                         source, bad);
    }
  }
  return fmt::format("the loss is {} with finite inputs: the model diverged (lower optimizer.lr, or set "
                     "train.clip_grad_norm)", loss);
}

// ---- progress -----------------------------------------------------------------

class Progress {
 public:
  // Under mpirun every rank's stdout is a pseudo-terminal even when mpirun's own
  // output goes to a file, so "auto" draws a bar only without a launcher.
  Progress(const std::string& mode, int64_t total, bool launched) : total_(total) {
    bar_ = mode == "bar" || (mode == "auto" && !launched && isatty(STDOUT_FILENO));
  }
  void update(int64_t step, double loss, double samples_per_s) {
    if (!bar_) return;
    const int width = 30;
    const int filled = static_cast<int>(width * step / std::max<int64_t>(1, total_));
    std::printf("\r[%s%s] step %lld/%lld  loss %.4f  %.0f samples/s ", std::string(filled, '#').c_str(),
                std::string(width - filled, '.').c_str(), static_cast<long long>(step),
                static_cast<long long>(total_), loss, samples_per_s);
    std::fflush(stdout);
  }
  void finish() {
    if (bar_) std::printf("\n");
  }
  bool bar() const { return bar_; }

 private:
  int64_t total_;
  bool bar_;
};

}  // namespace

int train(Context& ctx, const TrainConfig& config) {
  TrainConfig c = with_model_defaults(config);
  if (c.run.dir.empty()) c.run.dir = ctx.env.job_id ? "runs/" + *ctx.env.job_id : "runs/train";
  auto& world = *ctx.world;
  const int rank = world.rank();
  const int n = world.size();
  const fs::path run_dir = c.run.dir;
  Activity activity("training model '" + c.model.name + "'");
  // A fresh run never mixes with another in one directory: refused here, before any
  // work; with run.overwrite the other run is moved aside once start-up has succeeded.
  const std::string occupant =
      rank == 0 && c.run.resume != "auto"
          ? describe_run(run_dir, {"config.yaml", "metrics.jsonl", "summary.json", "trace.json"}, "checkpoints")
          : std::string();
  HPCML_CHECK_AS(ConfigError, occupant.empty() || c.run.overwrite, "config error: key 'run.dir': '", run_dir.string(),
                 "' holds another run (", occupant, "); continue it with --resume, choose another run.dir, or pass "
                 "--overwrite (run.overwrite: true) to move it aside");
  // The model and its data: the synthetic set in memory, or this rank's shard of HDF5 files.
  Setup setup = set_up(c, ctx, /*prepare=*/true);
  c = std::move(setup.config);
  auto feed = std::move(setup.feed);
  auto model = std::move(setup.model);
  const std::string config_yaml = config::to_yaml(c);
  // SyncBatchNorm: batch-norm statistics over the global batch, on a communicator of
  // its own (its blocking allreduces run inside forward and backward).
  collectives::BackendPtr batch_norm_group;
  if (c.model.sync_batch_norm) {
    if (n > 1) batch_norm_group = ctx.world->split(0, rank, "sync_batch_norm");
    const int layers = model->synchronize_batch_norm(batch_norm_group);
    HPCML_CHECK_AS(ConfigError, layers > 0, "config error: key 'model.sync_batch_norm': expected a model with hpcml "
                   "batch-norm layers (facile, deepcalo, particlenet, particlenet-lite), found '", model->name(),
                   "' with none (the MLP has none; TorchScript modules are out of scope)");
    if (n > 1) HPCML_LOG_INFO("SyncBatchNorm: {} batch-norm layer(s) use the global batch's statistics", layers);
  }
  install_stop_handlers();
  if (c.run.trace) {
    trace::enable(true);
    trace::name_thread("main");
  }

  const bool regression = feed->regression();
  const bool density = density_task(c);
  const char* metric = density ? "log_prob" : metric_name(regression);
  // The training metric from its sum over samples (log_prob: the mean log-density).
  auto metric_of = [&](double sum, double samples) {
    return density ? (samples > 0 ? sum / samples : 0.0) : metric_value(regression, sum, samples);
  };
  HPCML_CHECK_AS(ConfigError, c.train.batch_size % c.train.gradient_accumulation == 0,
                 "config error: key 'train.gradient_accumulation': expected a divisor of train.batch_size (",
                 c.train.batch_size, "), found ", c.train.gradient_accumulation);

  // After the model (whose initialisation seeds torch's generator): each rank's own
  // stream for dropout and other random ops.
  torch::manual_seed(static_cast<uint64_t>(c.train.seed) + 7919u * static_cast<uint64_t>(rank));
  collectives::GradientReducer reducer(model->named_parameters(), model->named_buffers(), ctx.world,
                                       reducer_options(c));
  std::vector<at::Tensor> params;
  for (const auto& [name, t] : model->named_parameters()) {
    if (t.requires_grad()) params.push_back(t);
  }
  auto optimizer = build_optimizer(c, params);
  const bool in_reduction = step_in_reduction(c, *optimizer, reducer);

  const int64_t steps_per_epoch = feed->steps_per_epoch();
  const int64_t total_steps = c.train.max_steps > 0 ? c.train.max_steps : c.train.epochs * steps_per_epoch;
  int64_t start_step = 0;
  bool resumed = false;
  if (c.run.resume == "auto") {
    const std::string chosen = agreed_newest_checkpoint(world, c.run.dir);
    if (!chosen.empty()) {
      const auto header = load_checkpoint(chosen, *model, *optimizer, rank, n);
      start_step = header.step;
      resumed = true;
      if (header.world_size != n || header.threads != ctx.threads.intra_op) {
        HPCML_LOG_WARN("resuming a checkpoint written by {} rank(s) x {} thread(s) on {} x {}: the data is re-sharded "
                       "and the result will not be bit-identical to an uninterrupted run",
                       header.world_size, header.threads, n, ctx.threads.intra_op);
      }
      HPCML_LOG_INFO("resumed from {} at step {}", chosen, start_step);
    } else {
      HPCML_LOG_INFO("no checkpoint in {}: starting fresh", (run_dir / "checkpoints").string());
    }
  }
  // Start-up has succeeded (config, data, model, checkpoint): only now is run.dir written.
  if (rank == 0) {
    if (!occupant.empty()) {
      const fs::path aside = moved_aside_name(run_dir);
      fs::rename(run_dir, aside);
      HPCML_LOG_WARN("run.dir {} held another run ({}): moved it to {}", run_dir.string(), occupant, aside.string());
    }
    fs::create_directories(checkpoint_dir(c.run.dir));
    write_atomically(run_dir / "config.yaml", config_yaml);
    if (resumed) {
      truncate_metrics(run_dir / "metrics.jsonl", start_step);
    } else {
      write_atomically(run_dir / "metrics.jsonl", "");
    }
  }
  world.barrier();

  std::ofstream metrics;
  if (rank == 0) metrics.open(run_dir / "metrics.jsonl", std::ios::app);
  HPCML_LOG_INFO("training {} ({} parameters) on {} rank(s) x {} thread(s): {} steps of {} x {} samples, {} "
                 "step(s) per epoch, gradients via {} (overlap {}), optimizer step {}",
                 model->name(), models::parameter_count(*model), n, ctx.threads.intra_op, total_steps,
                 c.train.batch_size, n, steps_per_epoch, collectives::to_string(reducer.transport()),
                 reducer.overlap_mode(), reducer.update_placement());
  if (!reducer.transport_note().empty() && n > 1) HPCML_LOG_INFO("{}", reducer.transport_note());

  Progress progress(c.run.progress, total_steps, ctx.env.launcher != Launcher::kNone);
  // Per log interval: loss sum, correct, samples, data, forward, backward, wait, optimizer (ms).
  std::vector<double> acc(8, 0.0);
  auto interval_start = Clock::now();
  int exit_code = 0;
  const int micro = c.train.gradient_accumulation;
  const int64_t micro_size = c.train.batch_size / micro;

  // A step whose loss (or validation metric) is NaN or Inf on any rank: every rank
  // learns it in the step's stop agreement. Filled on the lowest such rank.
  int64_t nonfinite_step = -1;
  std::string nonfinite_what;
  bool nonfinite_warned = false;
  auto checkpoint = [&](int64_t step_done) {
    // Only finite parameters are kept: a checkpoint is where a diverged run restarts.
    bool finite = true;
    for (const auto& [name, t] : model->named_parameters()) finite = finite && at::isfinite(t).all().item<bool>();
    at::Tensor flag = at::tensor({finite ? 0 : 1}, at::kInt);
    world.allreduce(flag, {collectives::ReduceOp::kMax});
    if (flag.item<int>() != 0) {
      HPCML_LOG_WARN("step {}: non-finite parameters; no checkpoint written", step_done);
      return;
    }
    const auto rng_states = world.allgather_varying(at::detail::getDefaultCPUGenerator().get_state());
    if (rank == 0) {
      save_checkpoint(checkpoint_path(c.run.dir, step_done), step_done, ctx, *model, *optimizer, config_yaml,
                      rng_states);
      prune_checkpoints(c.run.dir, c.checkpoint.keep);
    }
    world.barrier();
  };

  nlohmann::json last_validation;
  auto validate = [&](int64_t step_done, int64_t epoch) {
    if (feed->validation_size() == 0) return;
    reducer.sync_buffers();  // every rank validates with rank 0's statistics, as a checkpoint stores them
    Scores scores = validation_scores(*model, *feed, c);
    world.allreduce(scores.sums());
    if (rank == 0) {
      last_validation = {{"step", step_done}, {"epoch", epoch}};
      last_validation.update(metrics_json(scores, "val_"));
      metrics << last_validation.dump() << "\n" << std::flush;
      HPCML_LOG_INFO("epoch {} validation: {}", epoch, metrics_text(scores));
    }
  };

  model->set_training(true);
  for (int64_t step = start_step; step < total_steps; ++step) {
    const int64_t epoch = step / steps_per_epoch;
    const double lr = learning_rate(c, step, total_steps, n);
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);

    auto t0 = Clock::now();
    Example batch;
    {
      trace::Span span("data", "data");
      batch = feed->batch(epoch, step % steps_per_epoch);
    }
    auto t1 = Clock::now();
    double forward_ms = 0, backward_ms = 0, wait_ms = 0, update_ms = 0, loss_sum = 0, correct = 0;
    reducer.zero_grad();
    reducer.sync_buffers();
    for (int m = 0; m < micro; ++m) {
      auto tf = Clock::now();
      at::Tensor logits, loss;
      const Example part = micro > 1 ? batch.narrow(m * micro_size, micro_size) : batch;
      {
        trace::Span span("forward", "compute");
        logits = model->forward(part.inputs);
        loss = task_loss(c.train.loss, regression, logits, part.target);
      }
      auto tb = Clock::now();
      forward_ms += ms_between(tf, tb);
      // Each micro-batch's mean loss, divided by their count: the step's mean.
      const at::Tensor scaled = micro > 1 ? loss / micro : loss;
      if (m + 1 < micro) {
        auto no_sync = reducer.no_sync();
        reducer.backward(scaled);
      } else {
        reducer.backward(scaled);
        wait_ms = reducer.last_step().exposed_wait_ms;
        update_ms = reducer.last_step().update_ms;  // the optimizer step, when in the reduction
      }
      backward_ms += ms_between(tb, Clock::now());
      const double loss_value = loss.item<double>();
      if (!std::isfinite(loss_value) && nonfinite_what.empty()) {
        nonfinite_step = step + 1;
        nonfinite_what = nonfinite_cause(loss_value, part.inputs, c.data);
      }
      loss_sum += loss_value * static_cast<double>(micro_size);
      correct += density ? logits.detach().to(at::kDouble).sum().item<double>()
                         : metric_sum(regression, logits, part.target);
    }
    backward_ms -= wait_ms + update_ms;
    auto t3 = Clock::now();
    if (!in_reduction) {
      trace::Span span("optimizer", "compute");
      if (c.train.clip_grad_norm > 0) {
        // Gradients are averages already: the norm is the same on every rank.
        torch::nn::utils::clip_grad_norm_(params, c.train.clip_grad_norm);
      }
      optimizer->step();
    }
    const double optimizer_ms = ms_between(t3, Clock::now()) + update_ms;
    const double step_values[8] = {loss_sum, correct, static_cast<double>(c.train.batch_size), ms_between(t0, t1),
                                   forward_ms, backward_ms, wait_ms, optimizer_ms};
    for (int k = 0; k < 8; ++k) acc[k] += step_values[k];
    const int64_t done = step + 1;

    if (done % c.train.log_every == 0 || done == total_steps) {
      at::Tensor t = at::tensor(acc, at::kDouble);
      world.allreduce(t);  // sums over ranks
      const double seconds = ms_between(interval_start, Clock::now()) / 1000.0;
      const auto v = t.accessor<double, 1>();
      const double steps_in = std::max(1.0, v[2] / (c.train.batch_size * static_cast<double>(n)));
      if (rank == 0) {
        const double per = 1.0 / (steps_in * n);  // per step, averaged over ranks
        nlohmann::json row = {
            {"step", done},
            {"epoch", epoch},
            {"loss", v[0] / v[2]},
            {metric, metric_of(v[1], v[2])},
            {"lr", lr},
            {"samples_per_s", v[2] / seconds},
            {"time_ms",
             {{"data", v[3] * per}, {"forward", v[4] * per}, {"backward", v[5] * per}, {"comm_wait", v[6] * per},
              {"optimizer", v[7] * per}}}};
        metrics << row.dump() << "\n" << std::flush;
        if (progress.bar()) {
          progress.update(done, v[0] / v[2], v[2] / seconds);
        } else {
          HPCML_LOG_INFO("step {}/{} epoch {} loss {:.4g} {} {:.4f} lr {:.4g} {:.0f} samples/s", done, total_steps,
                         epoch, v[0] / v[2], metric, metric_of(v[1], v[2]), lr,
                         v[2] / seconds);
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      interval_start = Clock::now();
    }

    // A stop request on any rank stops every rank at this same step; so does a
    // non-finite loss (its lowest rank, as n - rank, so that the maximum names it).
    at::Tensor agreed = at::tensor({stop_signal(), nonfinite_step == done ? n - rank : 0}, at::kInt);
    world.allreduce(agreed, {collectives::ReduceOp::kMax});
    const int stop_requested = agreed[0].item<int>();
    int nonfinite_rank = agreed[1].item<int>() > 0 ? n - agreed[1].item<int>() : -1;
    const bool epoch_end = done % steps_per_epoch == 0;
    if (epoch_end && nonfinite_rank < 0) {
      validate(done, epoch);
      if (feed->validation_size() > 0) {
        // Rank 0 holds the reduced validation metrics; it tells the others.
        const double val_loss = rank == 0 ? last_validation.value("val_loss", 0.0) : 0.0;
        at::Tensor bad = at::tensor({std::isfinite(val_loss) ? 0 : 1}, at::kInt);
        world.allreduce(bad, {collectives::ReduceOp::kMax});
        if (bad.item<int>() != 0) {
          nonfinite_rank = 0;
          if (rank == 0) nonfinite_what = fmt::format("the validation loss is {}", val_loss);
        }
      }
    }
    if (nonfinite_rank >= 0) {
      if (c.train.on_nonfinite == "warn") {
        if (rank == nonfinite_rank && !nonfinite_warned) {
          HPCML_LOG_WARN("step {}: {} (train.on_nonfinite: warn, going on)", done, nonfinite_what);
        }
        nonfinite_warned = true;
        nonfinite_what.clear();
        nonfinite_step = -1;
      } else {
        if (rank == nonfinite_rank) {
          const std::string kept = newest_checkpoint(c.run.dir);
          std::fprintf(stderr, "%s\n",
                       fmt::format("hpcml: {}training stopped at step {}: {}; {} (train.on_nonfinite: warn goes on)",
                                   n > 1 ? rank_tag() + " " : std::string(), done, nonfinite_what,
                                   kept.empty() ? std::string("no checkpoint was written before it")
                                                : "the last checkpoint, with finite parameters, is " + kept)
                           .c_str());
          std::fflush(stderr);
        }
        progress.finish();
        exit_code = kExitError;
        break;
      }
    }
    const bool periodic = c.checkpoint.every_steps > 0 ? done % c.checkpoint.every_steps == 0 : epoch_end;
    if (stop_requested != 0) {
      checkpoint(done);
      progress.finish();
      HPCML_LOG_WARN("signal {} received: stopped at step {} after writing a checkpoint; exit code {} (requeue)",
                     stop_requested, done, kExitPreempted);
      exit_code = kExitPreempted;
      break;
    }
    if (periodic || done == total_steps) checkpoint(done);
  }
  progress.finish();

  const std::string digest = parameters_digest(model->named_parameters());
  if (c.run.trace) {
    const auto mine = trace::to_json_events(rank);
    at::Tensor bytes = at::empty({static_cast<int64_t>(mine.size())}, at::kByte);
    std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
    const auto all = world.allgather_varying(bytes);
    if (rank == 0) {
      std::string json = "[\n";
      for (size_t r = 0; r < all.size(); ++r) {
        json += (r ? ",\n" : "") + std::string(static_cast<const char*>(all[r].data_ptr()), all[r].numel());
      }
      write_atomically(run_dir / "trace.json", json + "\n]\n");
    }
  }
  if (rank == 0 && exit_code == 0) {
    nlohmann::json summary = {{"steps", total_steps},
                              {"ranks", n},
                              {"threads", ctx.threads.intra_op},
                              {"model", model->name()},
                              {"parameters", models::parameter_count(*model)},
                              {"parameters_sha256", digest},
                              {"hpcml_version", HPCML_VERSION},
                              {"git_revision", HPCML_GIT_REVISION}};
    if (!last_validation.is_null()) summary["validation"] = last_validation;
    write_atomically(run_dir / "summary.json", summary.dump(2) + "\n");
    HPCML_LOG_INFO("done: {} steps; parameters sha256 {}", total_steps, digest);
  }
  return exit_code;
}


}  // namespace hpcml::launch
