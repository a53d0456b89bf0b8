/// @file
/// Validation metrics and the flow's calibration (internal to launch/): used by the
/// training loop at each epoch's end and by `hpcml eval`.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "launch/runtime.hpp"
#include "launch/train/feed.hpp"
#include "launch/train/train_config.hpp"
#include "models/model.hpp"

namespace hpcml::launch {

/// The model's scores on this rank's share of the validation set (sums; reduce them).
Scores validation_scores(models::Model& model, Feed& feed, const TrainConfig& c);
/// The reduced scores as JSON keys with `prefix` ("val_loss", ...), and as a line of text.
nlohmann::json metrics_json(const Scores& scores, const std::string& prefix);
std::string metrics_text(const Scores& scores);
/// P-P calibration of a density model's posteriors on the validation set (collective);
/// rank 0 prints a table and gets the JSON.
nlohmann::json flow_calibration(Context& ctx, models::Model& model, Feed& feed, const TrainConfig& c);

}  // namespace hpcml::launch
