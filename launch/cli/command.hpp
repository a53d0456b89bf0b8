/// @file
/// How subcommands plug into the hpcml executable (internal to launch/).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "launch/runtime.hpp"

namespace hpcml::launch::cli {

/// The options every subcommand takes.
struct CommonOptions {
  std::string config_path;             ///< -c/--config FILE (optional)
  std::vector<std::string> overrides;  ///< --set KEY=VALUE, in order
};

/// A parsed subcommand, ready to run once the Context exists. Returns the exit code.
using Runner = std::function<int(Context&)>;

/// Adds -c/--config and --set to `sub`.
void add_common_options(CLI::App* sub, CommonOptions& common);

/// Each registers its subcommand on `app`; when the user picks it, `selected` is set.
void add_info_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_config_command(CLI::App& app, CommonOptions& common, Runner& selected);
void add_bench_command(CLI::App& app, CommonOptions& common, Runner& selected);
/// `bench ddp`, under the `bench` subcommand.
void add_bench_ddp_command(CLI::App& bench, CommonOptions& common, Runner& selected);

/// "hpcml 0.1.0 (git <rev>, Release)".
std::string version_line();

}  // namespace hpcml::launch::cli
