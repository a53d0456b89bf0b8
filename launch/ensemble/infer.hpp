/// @file
/// Aggregated inference of an ensemble (internal to launch/): `hpcml infer -c` with run.dir an
/// `hpcml ensemble` directory runs one campaign per variation (launch/infer/campaign.hpp) whose
/// model is that variation's complete members, and writes per event their mean and variance
/// (docs/ensembles.md#aggregated-inference).
///
/// Columns of each predictions file, beside `row` and the copied fields:
/// - classification: scores_mean, scores_variance (rows, classes): over members of the softmax
///   probabilities; two classes also log_r_mean, log_r_variance (rows): over members of
///   log r̂_m = logit_1 - logit_0 + log(n_0 / n_1), the likelihood-ratio estimate s/(1-s) of
///   member m corrected by its training set's class counts n_c;
/// - regression: prediction_mean, prediction_variance;
/// - with infer.members: true also <value>_members (rows, members, ...) and log_r_members.
/// Variances are over members with divisor M (numpy.var's default).
#pragma once

#include <string>

#include "launch/infer/campaign.hpp"
#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch::ensemble {

/// True when `dir` holds an ensemble (its ensemble.json).
bool is_ensemble_dir(const std::string& dir);

/// The campaigns, variation after variation, on every rank (collective). Outputs go to
/// <infer.output_dir or <run.dir>/infer>/<variation>/, each an ordinary campaign directory
/// (journal, resume, --new, --retry-failed), plus ensemble-infer.json listing the members
/// used and their class-count corrections. Returns the first non-zero campaign exit code, or 0.
/// @throws ConfigError when the ensemble has no summary.json or a variation no complete member.
int run_ensemble_infer(Context& context, const TrainConfig& config, const CampaignFlags& flags);

}  // namespace hpcml::launch::ensemble
