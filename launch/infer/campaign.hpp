/// @file
/// `hpcml infer -c CONFIG` with infer.inputs: a batch-inference campaign. A trained
/// model runs over many HDF5 files; units of work (file, row range) are handed to the
/// ranks by the farm; each unit's output part is committed once (link()), a file's
/// parts are assembled into its predictions file, and a journal plus the committed
/// parts let a killed campaign continue exactly. docs/campaigns.md.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"
#include "models/model.hpp"

namespace hpcml::launch {

struct CampaignFlags {
  bool fresh = false;         ///< --new: move an existing campaign in output_dir aside and start over
  bool retry_failed = false;  ///< --retry-failed: run the units and files that failed before again
};

/// What a campaign runs instead of one checkpoint's model: a caller's (an ensemble's members,
/// launch/ensemble/infer.hpp). The campaign's units, parts, journal and resume are unchanged;
/// each batch's value columns come from `forward`.
struct CampaignModel {
  TrainConfig config;               ///< the campaign's config with its input fields resolved (set_up's)
  std::string name;                 ///< provenance: the model
  std::string checkpoint;           ///< recorded in campaign.json and summary.json (what was loaded)
  std::string digest;               ///< the weights' identity (fingerprint and provenance)
  std::string task;                 ///< recorded as the campaign's task
  std::vector<std::string> values;  ///< the value columns, in the order forward returns them
  /// One batch's value columns, each (rows, ...); called on worker ranks, no collectives.
  /// The inputs are on the rank's device (runtime.device), and so may the columns be.
  std::function<std::vector<at::Tensor>(const models::Inputs& inputs)> forward;
};

/// Builds the CampaignModel on every rank of context.world (collective); `c` is the campaign's
/// config, its data read from the first input (set_up(c, context) gives its feed and model).
using CampaignModelMaker = std::function<CampaignModel(Context& context, const TrainConfig& c)>;

/// Runs the campaign `config.infer` describes, on every rank (collective). Returns 0
/// when every unit and file succeeded, 1 when some failed (listed in summary.json
/// and on stderr), kExitPreempted when stopped by a signal. With `maker`, its model runs
/// instead of a checkpoint's (infer.via local only).
int run_campaign(Context& context, const TrainConfig& config, const CampaignFlags& flags,
                 const CampaignModelMaker& maker = {});

/// For `hpcml bench infer`: the model's own forward as the campaign runs it (eval
/// mode, no autograd, softmax for classification) over this rank's share of the
/// campaign's units (dealt round-robin), every batch read into memory first; only
/// the forward passes are timed. Collective (set-up, one barrier before timing).
struct ForwardTiming {
  int64_t rows = 0;    ///< this rank's rows
  double seconds = 0;  ///< this rank's forward time
};
ForwardTiming time_in_memory_forward(Context& context, const TrainConfig& config);

}  // namespace hpcml::launch
