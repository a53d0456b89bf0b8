/// @file
/// Packed members in training (internal to launch/): train.pack K members of one model
/// trained as one models::PackedModel in one process, each as if alone
/// (docs/training.md#packed-members).
///
/// What a member is lives in one function, member_config: member k of a pack is the
/// ordinary run of that config. Everything else (the pack's model, feed, losses, metrics,
/// and the unpacked member runs) follows from it.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "launch/runtime.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/train_config.hpp"
#include "models/model.hpp"

namespace torch::optim {
class Optimizer;
}  // namespace torch::optim

namespace hpcml::launch {

/// Member k (0-based) of the pack `c`: `c` with train.pack 1, model.seed + k (its initial
/// weights), train.seed + k (its data order) and run.dir <run.dir>/member-<k>, a fresh run.
/// Training that config alone gives member k (within float32 rounding).
TrainConfig member_config(const TrainConfig& c, int k);

/// The directory of member k's unpacked run: <run_dir>/member-<k>.
std::string member_dir(const std::string& run_dir, int k);

/// Checks train.pack (> 1) against the rest of `c`; `training`: false for eval and infer,
/// which take one member's run instead. Throws a one-line ConfigError naming the key and the
/// model: a model that does not pack, train.clip_grad_norm (a global norm would couple the
/// members), model.sync_batch_norm.
void check_pack(const TrainConfig& c, bool training);

/// The pack's model: member_config(c, k)'s ordinary model for every k, stacked.
std::unique_ptr<models::Model> make_pack_model(const TrainConfig& c, const Feed& feed);

/// K member feeds (member k's with its own data order) as one: a batch's input "x" is
/// (batch, K, ...) and its target (batch, K); validation is the (shared) validation set of
/// one member, (batch, ...). Collective, as make_feed.
std::unique_ptr<Feed> make_pack_feed(const TrainConfig& c, const Context& ctx);

/// Each member's mean loss (K) from the pack's outputs (batch, K, ...) and targets (batch, K),
/// as task_loss gives it for that member alone. Their sum is the pack's loss: its gradient
/// with respect to member k's parameters is member k's own.
at::Tensor pack_losses(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target);

/// Each member's metric_sum (K, float64).
at::Tensor pack_metric_sums(bool regression, const at::Tensor& output, const at::Tensor& target);

/// Adds each member's loss sum (`losses`, K) and metric sum (`metric_sums`, K) to `sums`
/// (2K values: member k's at 2k and 2k + 1).
void add_member_sums(std::vector<double>& sums, const at::Tensor& losses, const at::Tensor& metric_sums);

/// The metrics line's "members": [{"loss", "<metric>"}, ...] from `sums` (2K, summed over
/// the interval and the ranks) and the samples each member saw.
nlohmann::json member_metrics_json(const at::Tensor& sums, double samples, bool regression);

/// Each member's validation scores over this rank's share of the feed's validation set
/// (no collectives: allreduce each one's sums()).
std::vector<Scores> pack_validation_scores(models::Model& pack, Feed& feed, const TrainConfig& c);

/// Scores summed over members (a fresh copy): the pack's pooled metrics.
Scores pooled_scores(std::vector<Scores>& members);

/// Rank 0, after a pack's run completed at `step`: unpacks every member into
/// member_dir(c.run.dir, k) as an ordinary run: config.yaml (member_config), summary.json
/// and checkpoints/step-<step>.pt with its parameters, buffers and optimizer state, which
/// hpcml eval, infer and train --resume read like any run's. Written atomically.
void write_member_runs(const Context& ctx, const TrainConfig& c, const models::Model& pack,
                       torch::optim::Optimizer& optimizer, int64_t step);

}  // namespace hpcml::launch
