/// @file
/// `hpcml hpo -c` and `hpcml hpo ask/tell` (internal to launch/): a study run on rank groups of
/// the farm, and a study driven from outside, one trial at a time (docs/hpo.md).
#pragma once

#include <optional>
#include <string>

#include "launch/hpo/study.hpp"
#include "launch/runtime.hpp"

namespace hpcml::launch::hpo_driver {

/// Runs the study on every rank (collective): the world splits into groups of
/// hpo.ranks_per_trial ranks, each training one trial part at a time as the farm hands them
/// out; rank 0 coordinates (on a thread of its own) and trains too. Journal:
/// <study_dir>/journal.jsonl; a re-run resumes the study. Writes the outputs (study.hpp) and,
/// with hpo.plots, the PNG plots. Returns 0, or kExitPreempted after a stop signal.
/// @throws ConfigError for a study_dir that holds another study, or groups that do not fit.
int run_study(Context& context, const HpoConfig& config);

/// `hpcml hpo ask`: takes the next trial number of the study in `study_dir` (a file created with
/// O_CREAT|O_EXCL, so concurrent asks get distinct trials), proposes its parameters from every
/// trial recorded so far (pending ones included), records them and returns the JSON line
/// printed: {"trial", "params", "config"} where config is the trial's training config file.
/// `config` (the study's hpo config) is read on the first ask and kept in the study.
/// @throws ConfigError when the study has all its trials, or its grid is exhausted.
std::string ask(const std::string& study_dir, const std::optional<HpoConfig>& config);

/// `hpcml hpo tell`: records trial `n`'s final value, or its failure with `failed_reason`.
/// @throws ConfigError for an unknown trial, a second tell, or a value that is not finite.
void tell(const std::string& study_dir, int64_t n, std::optional<double> value, const std::string& failed_reason);

/// The config kept by the study in `study_dir` (its first ask's), read over `environment`.
HpoConfig read_study_config(const std::string& study_dir, const config::Document& environment);

}  // namespace hpcml::launch::hpo_driver
