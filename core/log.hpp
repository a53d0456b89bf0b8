/// @file
/// Rank-aware logging over spdlog.
///
/// By default only rank 0 logs at info and below; every rank logs warnings and
/// errors. With `all_ranks`, every rank logs everything. Each line carries its
/// rank: "[12:00:01.234] [rank 1/4] info: message".
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace hpcml::log {

struct LogOptions {
  std::string level = "info";  ///< trace, debug, info, warn, error, off
  bool all_ranks = false;      ///< log info/debug from every rank, not only rank 0
  /// The communicator the ranks are counted in when it is not the whole job (a rank
  /// group of a farm: "world/farm/worker1"); lines then read "[rank 0/2 of <group>]".
  std::string group;
};

/// (Re)configures the logger for this rank (`rank` of `size` in options.group, or in
/// the job). Call after MPI_Init, and again when a rank starts work on a group,
/// before that work starts threads that log; cheap to repeat.
/// Throws hpcml::ConfigError naming `log.level` when the level is unknown.
void init(int rank, int size, const LogOptions& options);

/// The process-wide logger (usable before init: then it logs as rank 0/1).
spdlog::logger& logger();

}  // namespace hpcml::log

#define HPCML_LOG_DEBUG(...) ::hpcml::log::logger().debug(__VA_ARGS__)
#define HPCML_LOG_INFO(...) ::hpcml::log::logger().info(__VA_ARGS__)
#define HPCML_LOG_WARN(...) ::hpcml::log::logger().warn(__VA_ARGS__)
#define HPCML_LOG_ERROR(...) ::hpcml::log::logger().error(__VA_ARGS__)
