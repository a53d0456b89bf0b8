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
#include <map>
#include <numeric>
#include <optional>
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
#include "launch/train/grad_scaler.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/pack.hpp"
#include "models/flows/nsf_model.hpp"
#include "models/model.hpp"
#include "models/registry.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/evaluation.hpp"
#include "launch/train/run_dir.hpp"
#include "launch/train/setup.hpp"

namespace hpcml::launch {

namespace fs = std::filesystem;

namespace {

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


// ---- start-up -----------------------------------------------------------------

// SyncBatchNorm: batch-norm statistics over the global batch, on a communicator of
// its own (its blocking allreduces run inside forward and backward). Returns that
// communicator (none on one rank or without model.sync_batch_norm).
collectives::BackendPtr synchronize_batch_norm(Context& ctx, const TrainConfig& c, models::Model& model) {
  collectives::BackendPtr group;
  if (!c.model.sync_batch_norm) return group;
  const int n = ctx.world->size();
  if (n > 1) group = ctx.world->split(0, ctx.world->rank(), "sync_batch_norm");
  const int layers = model.synchronize_batch_norm(group);
  HPCML_CHECK_AS(ConfigError, layers > 0, "config error: key 'model.sync_batch_norm': expected a model with hpcml "
                 "batch-norm layers (facile, deepcalo, particlenet, particlenet-lite), found '", model.name(),
                 "' with none (the MLP has none; TorchScript modules are out of scope)");
  if (n > 1) HPCML_LOG_INFO("SyncBatchNorm: {} batch-norm layer(s) use the global batch's statistics", layers);
  return group;
}

// ---- the step loop ------------------------------------------------------------

// Per log interval, summed over its steps: loss sum, correct, samples, data, forward,
// backward, wait, optimizer (ms).
constexpr int kIntervalSums = 8;
using IntervalSums = std::array<double, kIntervalSums>;

// One run's step loop: what every step reads (config, model, feed, reducer,
// optimizer) and what carries from step to step (the log interval's sums, a
// non-finite loss not yet agreed on, the last validation). The caller owns the model,
// feed, reducer and optimizer, which outlive the loop.
class TrainLoop {
 public:
  TrainLoop(Context& ctx, const TrainConfig& c, models::Model& model, Feed& feed,
            collectives::GradientReducer& reducer, torch::optim::Optimizer& optimizer,
            std::vector<at::Tensor> params, bool in_reduction, const std::string& config_yaml, GradScaler* scaler)
      : ctx_(ctx), c_(c), world_(*ctx.world), rank_(world_.rank()), n_(world_.size()), run_dir_(c.run.dir),
        device_(ctx.device.device), model_(model), feed_(feed), reducer_(reducer), optimizer_(optimizer),
        scaler_(scaler), params_(std::move(params)),
        in_reduction_(in_reduction), config_yaml_(config_yaml), regression_(feed.regression()),
        density_(density_task(c)), metric_(density_ ? "log_prob" : metric_name(regression_)),
        steps_per_epoch_(feed.steps_per_epoch()),
        total_steps_(c.train.max_steps > 0 ? c.train.max_steps : c.train.epochs * steps_per_epoch_),
        micro_(c.train.gradient_accumulation), micro_size_(c.train.batch_size / micro_), members_(c.train.pack),
        member_acc_(members_ > 1 ? 2 * members_ : 0, 0.0), batches_(feed, device_, total_steps_),
        progress_(c.run.progress, total_steps_, ctx.env.launcher != Launcher::kNone) {}

  int64_t total_steps() const { return total_steps_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // Rank 0: the last validation's metrics line (null when none ran).
  const nlohmann::json& last_validation() const { return last_validation_; }
  // After a non-finite stop, on every rank: why training stopped (one line).
  const std::string& failure() const { return failure_; }

  // Runs steps [start_step, end_step) on every rank (end_step 0: to total_steps);
  // returns the exit code: 0, kExitError after a non-finite stop, kExitPreempted after
  // a stop signal. With `validate_at_end`, a validation also runs at end_step when it
  // is not an epoch's end, and a checkpoint is written there.
  int run(int64_t start_step, int64_t end_step = 0, bool validate_at_end = false);
  // The step where run() stopped or will stop.
  int64_t end_step() const { return end_step_; }

 private:
  // The step's sums over its micro-batches.
  struct StepSums {
    double loss = 0, correct = 0, forward_ms = 0, backward_ms = 0, wait_ms = 0, update_ms = 0;
  };

  void open_metrics_and_announce();
  int run_step(int64_t step);
  IntervalSums train_step(int64_t step, int64_t epoch);
  void forward_backward(const Example& part, bool last, int64_t step, StepSums& sums);
  void log_interval(int64_t done, int64_t epoch, double lr);
  int after_step(int64_t done, int64_t epoch);
  bool stop_on_nonfinite(int nonfinite_rank, int64_t done);
  bool unscale_and_agree();
  bool validate(int64_t step_done, int64_t epoch);
  void checkpoint(int64_t step_done);

  // The training metric from its sum over samples (log_prob: the mean log-density).
  double metric_of(double sum, double samples) const {
    return density_ ? (samples > 0 ? sum / samples : 0.0) : metric_value(regression_, sum, samples);
  }

  Context& ctx_;
  const TrainConfig& c_;
  collectives::Backend& world_;
  const int rank_;
  const int n_;
  const fs::path run_dir_;
  const c10::Device device_;  // runtime.device: the model, its batches, gradients and optimizer state
  models::Model& model_;
  Feed& feed_;
  collectives::GradientReducer& reducer_;
  torch::optim::Optimizer& optimizer_;
  GradScaler* const scaler_;  // train.precision fp16, else null
  const std::vector<at::Tensor> params_;
  const bool in_reduction_;
  const std::string& config_yaml_;
  const bool regression_;
  const bool density_;
  const char* const metric_;
  const int64_t steps_per_epoch_;
  const int64_t total_steps_;
  const int micro_;
  const int64_t micro_size_;
  const int members_;  // train.pack: 1, or the members of a pack (launch/train/pack.hpp)
  std::vector<double> member_acc_;  // a pack's per-member loss and metric sums over the interval
  DeviceBatches batches_;           // the batches on device_ (the next one copied ahead on a GPU)

  std::ofstream metrics_;
  Progress progress_;
  IntervalSums acc_{};
  Clock::time_point interval_start_;
  Clock::time_point run_start_;  // validation lines carry the seconds since (time_s)
  // A step whose loss (or validation metric) is NaN or Inf on any rank: every rank
  // learns it in the step's stop agreement. Filled on the lowest such rank.
  int64_t nonfinite_step_ = -1;
  std::string nonfinite_what_;
  bool nonfinite_warned_ = false;
  nlohmann::json last_validation_;
  std::string failure_;
  int64_t end_step_ = 0;
  bool validate_at_end_ = false;
};

int TrainLoop::run(int64_t start_step, int64_t end_step, bool validate_at_end) {
  end_step_ = end_step > 0 ? std::min(end_step, total_steps_) : total_steps_;
  validate_at_end_ = validate_at_end;
  open_metrics_and_announce();
  interval_start_ = run_start_ = Clock::now();
  model_.set_training(true);
  int exit_code = 0;
  // Resumed where this part ends (a re-run of a part whose checkpoint was written): its
  // validation again, so the caller still gets the metric there.
  const bool at_end_already = start_step >= end_step_ && start_step > 0 && validate_at_end_;
  if (at_end_already && !validate(start_step, (start_step - 1) / steps_per_epoch_)) {
    failure_ = fmt::format("training stopped at step {}: the validation loss is not finite", start_step);
    exit_code = kExitError;
  }
  for (int64_t step = start_step; step < end_step_ && exit_code == 0; ++step) exit_code = run_step(step);
  progress_.finish();
  return exit_code;
}

void TrainLoop::open_metrics_and_announce() {
  if (rank_ == 0) metrics_.open(run_dir_ / "metrics.jsonl", std::ios::app);
  HPCML_LOG_INFO("training {} ({} parameters) on {} rank(s) x {} thread(s): {} steps of {} x {} samples, {} "
                 "step(s) per epoch, gradients via {} (overlap {}), optimizer step {}",
                 members_ > 1 ? fmt::format("a pack of {} {} members", members_, model_.name()) : model_.name(),
                 models::parameter_count(model_), n_, ctx_.threads.intra_op, total_steps_,
                 c_.train.batch_size, n_, steps_per_epoch_, collectives::to_string(reducer_.transport()),
                 reducer_.overlap_mode(), reducer_.update_placement());
  if (!reducer_.transport_note().empty() && n_ > 1) HPCML_LOG_INFO("{}", reducer_.transport_note());
}

// One step: the learning rate, the update, the log interval, then what every rank
// agrees on after it (stop, non-finite, validation, checkpoint). Returns the exit
// code, 0 to go on.
int TrainLoop::run_step(int64_t step) {
  const int64_t epoch = step / steps_per_epoch_;
  const double lr = learning_rate(c_, step, total_steps_, n_);
  for (auto& group : optimizer_.param_groups()) group.options().set_lr(lr);
  const IntervalSums step_values = train_step(step, epoch);
  for (int k = 0; k < kIntervalSums; ++k) acc_[k] += step_values[k];
  const int64_t done = step + 1;
  if (done % c_.train.log_every == 0 || done == total_steps_) log_interval(done, epoch, lr);
  return after_step(done, epoch);
}

// The batch, forward and backward over its micro-batches, the optimizer step (unless
// it runs inside the reduction). Returns this step's share of the interval's sums.
IntervalSums TrainLoop::train_step(int64_t step, int64_t epoch) {
  auto t0 = Clock::now();
  Example batch;
  {
    trace::Span span("data", "data");
    batch = batches_.batch(step);
  }
  auto t1 = Clock::now();
  StepSums sums;
  reducer_.zero_grad();
  reducer_.sync_buffers();
  for (int m = 0; m < micro_; ++m) {
    const Example part = micro_ > 1 ? batch.narrow(m * micro_size_, micro_size_) : batch;
    forward_backward(part, /*last=*/m + 1 == micro_, step, sums);
  }
  sums.backward_ms -= sums.wait_ms + sums.update_ms;
  auto t3 = Clock::now();
  if (!in_reduction_ && (scaler_ == nullptr || unscale_and_agree())) {
    trace::Span span("optimizer", "compute");
    if (c_.train.clip_grad_norm > 0) {
      // Gradients are averages already: the norm is the same on every rank.
      torch::nn::utils::clip_grad_norm_(params_, c_.train.clip_grad_norm);
    }
    optimizer_.step();
  }
  const double optimizer_ms = ms_between(t3, Clock::now()) + sums.update_ms;
  return {sums.loss, sums.correct, static_cast<double>(c_.train.batch_size), ms_between(t0, t1),
          sums.forward_ms, sums.backward_ms, sums.wait_ms, optimizer_ms};
}

// fp16: the averaged gradients divided by the loss scale, and whether the step runs: no
// rank found an Inf or NaN among them (the same averages everywhere; agreed all the same,
// since a skipped step must be skipped on every rank), the scale updated as grad_scaler.hpp says.
bool TrainLoop::unscale_and_agree() {
  trace::Span span("unscale", "compute");
  at::Tensor found = at::tensor({scaler_->unscale(params_) ? 0 : 1}, at::kInt);
  if (n_ > 1) world_.allreduce(found, {collectives::ReduceOp::kMax});
  return scaler_->update(found.item<int>() != 0);
}

// One micro-batch: forward, loss, backward (reduced only on the `last`), and a
// non-finite loss noted for the step's agreement.
void TrainLoop::forward_backward(const Example& part, bool last, int64_t step, StepSums& sums) {
  auto tf = Clock::now();
  at::Tensor logits, loss, member_losses;
  {
    trace::Span span("forward", "compute");
    logits = forward_in_precision(model_, part.inputs, c_);
    // A pack's loss is the sum of its members' own: each member's gradient as if alone.
    member_losses = members_ > 1 ? pack_losses(c_.train.loss, regression_, logits, part.target) : at::Tensor();
    loss = members_ > 1 ? member_losses.sum() : task_loss(c_.train.loss, regression_, logits, part.target);
  }
  auto tb = Clock::now();
  sums.forward_ms += ms_between(tf, tb);
  // Each micro-batch's mean loss, divided by their count: the step's mean.
  at::Tensor scaled = micro_ > 1 ? loss / micro_ : loss;
  if (scaler_ != nullptr) scaled = scaler_->scale_loss(scaled);
  if (!last) {
    auto no_sync = reducer_.no_sync();
    reducer_.backward(scaled);
  } else {
    reducer_.backward(scaled);
    sums.wait_ms = reducer_.last_step().exposed_wait_ms;
    sums.update_ms = reducer_.last_step().update_ms;  // the optimizer step, when in the reduction
  }
  sums.backward_ms += ms_between(tb, Clock::now());
  const double loss_value = loss.item<double>();
  if (!std::isfinite(loss_value) && nonfinite_what_.empty()) {
    nonfinite_step_ = step + 1;
    nonfinite_what_ = nonfinite_cause(loss_value, part.inputs, c_.data);
  }
  if (members_ > 1) {  // the pack's line: the mean over members; and each member's
    const at::Tensor metric_sums = pack_metric_sums(regression_, logits, part.target);
    add_member_sums(member_acc_, member_losses * static_cast<double>(micro_size_), metric_sums);
    sums.loss += loss_value / members_ * static_cast<double>(micro_size_);
    sums.correct += metric_sums.sum().item<double>() / members_;
    return;
  }
  sums.loss += loss_value * static_cast<double>(micro_size_);
  sums.correct += density_ ? logits.detach().to(at::kDouble).sum().item<double>()
                           : metric_sum(regression_, logits, part.target);
}

// The interval's sums over ranks (collective); rank 0 writes the metrics line and
// logs it or draws the progress bar.
void TrainLoop::log_interval(int64_t done, int64_t epoch, double lr) {
  std::vector<double> values(acc_.begin(), acc_.end());
  values.insert(values.end(), member_acc_.begin(), member_acc_.end());
  at::Tensor t = at::tensor(values, at::kDouble);
  world_.allreduce(t);  // sums over ranks
  const double seconds = ms_between(interval_start_, Clock::now()) / 1000.0;
  const auto v = t.accessor<double, 1>();
  const double steps_in = std::max(1.0, v[2] / (c_.train.batch_size * static_cast<double>(n_)));
  if (rank_ == 0) {
    const double per = 1.0 / (steps_in * n_);  // per step, averaged over ranks
    nlohmann::json row = {
        {"step", done},
        {"epoch", epoch},
        {"loss", v[0] / v[2]},
        {metric_, metric_of(v[1], v[2])},
        {"lr", lr},
        {"samples_per_s", v[2] / seconds},
        {"time_ms",
         {{"data", v[3] * per}, {"forward", v[4] * per}, {"backward", v[5] * per}, {"comm_wait", v[6] * per},
          {"optimizer", v[7] * per}}}};
    if (scaler_ != nullptr) {
      row["loss_scale"] = scaler_->scale();
      row["skipped_steps"] = scaler_->skipped();
    }
    if (members_ > 1) {
      row["members"] = member_metrics_json(t.narrow(0, kIntervalSums, 2 * members_), v[2], regression_);
    }
    metrics_ << row.dump() << "\n" << std::flush;
    if (progress_.bar()) {
      progress_.update(done, v[0] / v[2], v[2] / seconds);
    } else {
      HPCML_LOG_INFO("step {}/{} epoch {} loss {:.4g} {} {:.4f} lr {:.4g} {:.0f} samples/s", done, total_steps_,
                     epoch, v[0] / v[2], metric_, metric_of(v[1], v[2]), lr, v[2] / seconds);
    }
  }
  acc_.fill(0.0);
  std::fill(member_acc_.begin(), member_acc_.end(), 0.0);
  interval_start_ = Clock::now();
}

// What every rank agrees on after step `done`: a stop request on any rank stops every
// rank at this same step; so does a non-finite loss (its lowest rank, as n - rank, so
// that the maximum names it) or validation loss. Returns the exit code, 0 to go on.
int TrainLoop::after_step(int64_t done, int64_t epoch) {
  at::Tensor agreed = at::tensor({stop_signal(), nonfinite_step_ == done ? n_ - rank_ : 0}, at::kInt);
  world_.allreduce(agreed, {collectives::ReduceOp::kMax});
  const int stop_requested = agreed[0].item<int>();
  int nonfinite_rank = agreed[1].item<int>() > 0 ? n_ - agreed[1].item<int>() : -1;
  const bool epoch_end = done % steps_per_epoch_ == 0;
  const bool validation = epoch_end || (validate_at_end_ && done == end_step_);
  if (validation && nonfinite_rank < 0 && !validate(done, epoch)) nonfinite_rank = 0;
  if (nonfinite_rank >= 0 && stop_on_nonfinite(nonfinite_rank, done)) {
    progress_.finish();
    return kExitError;
  }
  const bool periodic = c_.checkpoint.every_steps > 0 ? done % c_.checkpoint.every_steps == 0 : epoch_end;
  if (stop_requested != 0) {
    checkpoint(done);
    progress_.finish();
    HPCML_LOG_WARN("signal {} received: stopped at step {} after writing a checkpoint; exit code {} (requeue)",
                   stop_requested, done, kExitPreempted);
    return kExitPreempted;
  }
  if (periodic || done == total_steps_ || done == end_step_) checkpoint(done);
  return 0;
}

// A non-finite loss found on `nonfinite_rank` at step `done`: with train.on_nonfinite
// "warn" that rank warns once and training goes on (returns false); otherwise that rank
// prints why training stops and where its last good checkpoint is (returns true).
bool TrainLoop::stop_on_nonfinite(int nonfinite_rank, int64_t done) {
  if (c_.train.on_nonfinite == "warn") {
    if (rank_ == nonfinite_rank && !nonfinite_warned_) {
      HPCML_LOG_WARN("step {}: {} (train.on_nonfinite: warn, going on)", done, nonfinite_what_);
    }
    nonfinite_warned_ = true;
    nonfinite_what_.clear();
    nonfinite_step_ = -1;
    return false;
  }
  // Every rank learns why (a farm's task reports it from whichever rank it asks).
  const std::string what = world_.broadcast_string(rank_ == nonfinite_rank ? nonfinite_what_ : std::string(),
                                                   nonfinite_rank);
  failure_ = fmt::format("training stopped at step {}: {}", done, what);
  if (rank_ == nonfinite_rank) {
    const std::string kept = newest_checkpoint(c_.run.dir);
    std::fprintf(stderr, "%s\n",
                 fmt::format("hpcml: {}training stopped at step {}: {}; {} (train.on_nonfinite: warn goes on)",
                             n_ > 1 ? world_.rank_label() + " " : std::string(), done, nonfinite_what_,
                             kept.empty() ? std::string("no checkpoint was written before it")
                                          : "the last checkpoint, with finite parameters, is " + kept)
                     .c_str());
    std::fflush(stderr);
  }
  return true;
}

// The validation metrics at an epoch's end (collective), written and logged by rank 0.
// Returns whether the validation loss is finite (true without a validation set); rank 0
// holds the reduced metrics and tells the others.
bool TrainLoop::validate(int64_t step_done, int64_t epoch) {
  if (feed_.validation_size() == 0) return true;
  reducer_.sync_buffers();  // every rank validates with rank 0's statistics, as a checkpoint stores them
  std::vector<Scores> members = members_ > 1 ? pack_validation_scores(model_, feed_, c_)
                                             : std::vector<Scores>{validation_scores(model_, feed_, c_)};
  for (auto& m : members) world_.allreduce(m.sums());
  const Scores scores = members_ > 1 ? pooled_scores(members) : members.front();  // a pack's: pooled
  if (rank_ == 0) {
    last_validation_ = {{"step", step_done}, {"epoch", epoch}, {"time_s", ms_between(run_start_, Clock::now()) / 1e3}};
    last_validation_.update(metrics_json(scores, "val_"));
    for (size_t k = 0; members_ > 1 && k < members.size(); ++k) {
      last_validation_["members"].push_back(metrics_json(members[k], "val_"));
    }
    metrics_ << last_validation_.dump() << "\n" << std::flush;
    HPCML_LOG_INFO("epoch {} validation: {}", epoch, metrics_text(scores));
  }
  const double val_loss = rank_ == 0 ? last_validation_.value("val_loss", 0.0) : 0.0;
  at::Tensor bad = at::tensor({std::isfinite(val_loss) ? 0 : 1}, at::kInt);
  world_.allreduce(bad, {collectives::ReduceOp::kMax});
  if (bad.item<int>() == 0) return true;
  if (rank_ == 0) nonfinite_what_ = fmt::format("the validation loss is {}", val_loss);
  return false;
}

// A checkpoint of step `step_done` (collective): only finite parameters are kept, since
// a checkpoint is where a diverged run restarts.
void TrainLoop::checkpoint(int64_t step_done) {
  bool finite = true;
  for (const auto& [name, t] : model_.named_parameters()) finite = finite && at::isfinite(t).all().item<bool>();
  at::Tensor flag = at::tensor({finite ? 0 : 1}, at::kInt);
  world_.allreduce(flag, {collectives::ReduceOp::kMax});
  if (flag.item<int>() != 0) {
    HPCML_LOG_WARN("step {}: non-finite parameters; no checkpoint written", step_done);
    return;
  }
  const RngStates rng = gather_rng_states(world_, ctx_.device.device);
  if (rank_ == 0) {
    save_checkpoint(checkpoint_path(c_.run.dir, step_done), step_done, ctx_, model_, optimizer_, config_yaml_, rng,
                    scaler_);
    prune_checkpoints(c_.run.dir, c_.checkpoint.keep);
  }
  world_.barrier();
}

}  // namespace

TrainOutcome train_part(Context& ctx, const TrainConfig& config, const TrainPart& part) {
  TrainConfig c = with_model_defaults(config);
  if (c.run.dir.empty()) c.run.dir = ctx.env.job_id ? "runs/" + *ctx.env.job_id : "runs/train";
  auto& world = *ctx.world;
  const int rank = world.rank();
  Activity activity("training model '" + c.model.name + "'");
  const std::string occupant = refuse_occupied_run_dir(c, rank);
  // The model and its data: the synthetic set in memory, or this rank's shard of HDF5 files.
  Setup setup = set_up(c, ctx, /*prepare=*/true);
  c = std::move(setup.config);
  auto feed = std::move(setup.feed);
  auto model = std::move(setup.model);
  model->to(ctx.device.device);  // before the reducer registers the parameters and the optimizer its state
  const std::string config_yaml = config::to_yaml(c);
  const collectives::BackendPtr batch_norm_group = synchronize_batch_norm(ctx, c, *model);
  install_stop_handlers();
  if (c.run.trace) {
    trace::enable(true);
    trace::name_thread("main");
  }
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
  std::optional<GradScaler> scaler;
  if (c.train.precision == "fp16") scaler.emplace();
  GradScaler* const scaler_ptr = scaler ? &*scaler : nullptr;
  const ResumePoint start = c.run.resume == "auto"
                                ? resume_from_newest_checkpoint(ctx, c.run.dir, *model, *optimizer, scaler_ptr)
                                : ResumePoint();
  if (rank == 0) prepare_run_dir(c, occupant, config_yaml, start);
  world.barrier();

  TrainLoop loop(ctx, c, *model, *feed, reducer, *optimizer, params, in_reduction, config_yaml, scaler_ptr);
  const int64_t end_step = part.until <= 0 ? 0 : part.steps ? part.until : part.until * loop.steps_per_epoch();
  TrainOutcome outcome;
  outcome.exit_code = loop.run(start.step, end_step, part.validate_at_end);
  const int exit_code = outcome.exit_code;

  const std::string digest = parameters_digest(model->named_parameters());
  if (c.run.trace) write_trace(world, c.run.dir);
  if (rank == 0 && exit_code == 0 && loop.end_step() == loop.total_steps()) {
    // A pack's members first: summary.json says the run, members included, completed.
    if (c.train.pack > 1) write_member_runs(ctx, c, *model, *optimizer, loop.total_steps());
    write_summary(ctx, c.run.dir, loop.total_steps(), *model, digest, loop.last_validation());
  }
  outcome.step = exit_code == 0 ? loop.end_step() : -1;
  outcome.total_steps = loop.total_steps();
  outcome.complete = exit_code == 0 && loop.end_step() == loop.total_steps();
  outcome.validation = loop.last_validation();
  outcome.failure = loop.failure();
  outcome.layout = reducer_layout(reducer, *model);
  return outcome;
}

int train(Context& ctx, const TrainConfig& config) { return train_part(ctx, config, TrainPart()).exit_code; }


}  // namespace hpcml::launch
