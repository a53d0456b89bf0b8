/// @file
/// The run directory of `hpcml train` (internal to launch/train/): refusing another run's
/// directory, preparing it once start-up succeeded, and what is written after the loop
/// (summary.json, trace.json).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>

#include "launch/runtime.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::models {
class Model;
}  // namespace hpcml::models

namespace hpcml::launch {

/// A fresh run never mixes with another in one directory: refused here (ConfigError naming
/// run.dir), before any work; with run.overwrite the other run is moved aside by
/// prepare_run_dir. Returns what occupies run.dir (rank 0; "" elsewhere and when it is free).
std::string refuse_occupied_run_dir(const TrainConfig& c, int rank);

/// Rank 0, once start-up has succeeded (config, data, model, checkpoint): only now is run.dir
/// written. Another run found there (`occupant`) is moved aside; a resumed run's metrics lose
/// the lines after its checkpoint.
void prepare_run_dir(const TrainConfig& c, const std::string& occupant, const std::string& config_yaml,
                     const ResumePoint& start);

/// run.trace: every rank's events gathered into run.dir/trace.json (collective; rank 0 writes).
void write_trace(collectives::Backend& world, const std::filesystem::path& run_dir);

/// Rank 0, after a run that completed: run.dir/summary.json.
void write_summary(const Context& ctx, const std::filesystem::path& run_dir, int64_t total_steps,
                   models::Model& model, const std::string& digest, const nlohmann::json& last_validation);

}  // namespace hpcml::launch
