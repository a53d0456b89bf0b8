/// @file
/// `hpcml infer -c CONFIG` with infer.inputs: a batch-inference campaign. A trained
/// model runs over many HDF5 files; units of work (file, row range) are handed to the
/// ranks by the farm; each unit's output part is committed once (link()), a file's
/// parts are assembled into its predictions file, and a journal plus the committed
/// parts let a killed campaign continue exactly. docs/campaigns.md.
#pragma once

#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch {

struct CampaignFlags {
  bool fresh = false;         ///< --new: move an existing campaign in output_dir aside and start over
  bool retry_failed = false;  ///< --retry-failed: run the units and files that failed before again
};

/// Runs the campaign `config.infer` describes, on every rank (collective). Returns 0
/// when every unit and file succeeded, 1 when some failed (listed in summary.json
/// and on stderr), kExitPreempted when stopped by a signal.
int run_campaign(Context& context, const TrainConfig& config, const CampaignFlags& flags);

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
