/// @file
/// A campaign's files (internal to launch/infer): output names, the fingerprint in
/// campaign.json and how it is compared, and files several jobs may write at once.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "launch/farm/farm.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch::campaign_files {

/// One predictions file per input: <stem>.predictions.h5; inputs that share a file
/// name get -<k>, k their position in the input list (docs/campaigns.md).
std::vector<std::string> output_names(const std::vector<std::string>& inputs);

/// What makes two runs the same campaign.
nlohmann::json fingerprint(const TrainConfig& c, const std::vector<std::string>& inputs, const std::string& checkpoint,
                           const std::string& digest, const std::string& task, const std::vector<std::string>& copies);

/// "" when `now` continues `before`, else what changed, for the refusal.
std::string changes(const nlohmann::json& before, const nlohmann::json& now, bool ignore_input_changes);

/// A temporary name for `path` that says who writes it: <path>.tmp.<host>.<pid>.
std::filesystem::path temp_name(const std::filesystem::path& path);

/// Removes the temporary names (temp_name, and io's own ".tmp" on top) in `dir` that a
/// killed writer left: its process gone on this host, or, another host's, untouched for
/// `stale_s` seconds. A live writer's are kept. Returns how many were removed.
size_t remove_stale_temps(const std::filesystem::path& dir, double stale_s);

/// Writes `text` to a temporary name of this process, fsyncs it, then: `once`: link()s
/// it to `path`, returning false when `path` exists already (another job wrote it
/// first); else renames it over `path`. Several jobs may do this at once.
bool publish(const std::filesystem::path& path, const std::string& text, bool once);

/// Makes `dir` (and its parts/) the campaign `now` describes: the first job publishes
/// the fingerprint in campaign.json, every later one compares. Returns "" or the one
/// line refusing another campaign's directory (naming what changed) or an unusable one.
std::string record_fingerprint(const std::filesystem::path& dir, const nlohmann::json& now, bool retry_failed);

/// Completes `summary` from the farm's results (rows, files written, failures, rows
/// per worker, the read / compute / write split), publishes <dir>/summary.json and
/// prints the campaign's line. Returns the exit code: 0, or 1 when a task failed.
int write_summary(const std::filesystem::path& dir, const farm::FarmReport& report, nlohmann::json summary);

/// Test hooks (tests/cli/test_campaign.py; never set them in production):
/// HPCML_TEST_CAMPAIGN_SLOW=<unit id>:<ms>, or *:<ms> for every unit, sleeps in that unit;
/// HPCML_TEST_CAMPAIGN_KILL_AFTER=k SIGKILLs this rank right after its k-th commit,
/// before the coordinator can journal it (a kill between commit and journal line).
void test_hook_delay(const std::string& unit_id);
void test_hook_after_commit();

}  // namespace hpcml::launch::campaign_files
