/// @file
/// How subcommands plug into the hpcml executable (internal to launch/).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "launch/runtime.hpp"

namespace hpcml::launch::cli {

/// Reads a subcommand's config from the environment layer and the file (with
/// --set), keeps it, and returns its runtime and log sections. Throws ConfigError.
using Parser = std::function<RunConfig(const config::Document& environment, const config::Document& file)>;

/// The options every subcommand takes.
struct CommonOptions {
  std::string config_path;             ///< -c/--config FILE (optional)
  std::vector<std::string> overrides;  ///< --set KEY=VALUE, in order
  /// Set by subcommands with a config schema of their own (train); others use RunConfig.
  Parser parser;
  /// False for the commands that only read and print (config, the key references, hpo ask and
  /// tell): a process that no launcher started runs them without starting MPI.
  bool needs_mpi = true;
};

/// A parsed subcommand, ready to run once the Context exists. Returns the exit code.
using Runner = std::function<int(Context&)>;

/// Adds -c/--config and --set to `sub`. With `config_argument`, the config file may also come
/// as a bare argument, `hpcml train CONFIG` (one or the other, not both).
void add_common_options(CLI::App* sub, CommonOptions& common, bool config_argument = false);

/// Each registers its subcommand on `app`; when the user picks it, `selected` is set.
void add_info_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_config_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_bench_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_train_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_export_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_eval_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_infer_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_datagen_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_models_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_serve_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_tracking_command(CLI::App& app, CommonOptions& common, Runner& selected);
/// `hpo`, with `hpo ask` and `hpo tell`.
void add_hpo_command(CLI::App& app, CommonOptions& common, Runner& selected);
/// `ensemble`: members x variations on rank groups (launch/ensemble/).
void add_ensemble_command(CLI::App& app, CommonOptions& common, Runner& selected);
/// `project train|fit|service|systems`: the performance model (perf/, docs/scaling.md).
void add_project_command(CLI::App& app, CommonOptions& common, Runner& selected);
/// `bench ddp`, under the `bench` subcommand.
void add_bench_ddp_command(CLI::App& bench, CommonOptions& common, Runner& selected);
/// `bench io`, under the `bench` subcommand.
void add_bench_io_command(CLI::App& bench, CommonOptions& common, Runner& selected);
/// `bench model`, under the `bench` subcommand.
void add_bench_model_command(CLI::App& bench, CommonOptions& common, Runner& selected);
void add_bench_infer_command(CLI::App& bench, CommonOptions& common, Runner& selected);
/// `bench pack`, under the `bench` subcommand: packed members against one after another.
void add_bench_pack_command(CLI::App& bench, CommonOptions& common, Runner& selected);
/// `bench scaling`, under the `bench` subcommand: one point of a scaling sweep.
void add_bench_scaling_command(CLI::App& bench, CommonOptions& common, Runner& selected);
/// `bench serve`, under the `bench` subcommand (registered from main.cpp).
void add_bench_serve_command(CLI::App& bench, CommonOptions& common, Runner& selected);

/// "hpcml 0.1.0 (git <rev>, Release)".
std::string version_line();

}  // namespace hpcml::launch::cli
