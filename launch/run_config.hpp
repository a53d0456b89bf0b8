/// @file
/// The config sections every hpcml subcommand shares.
///
/// Precedence, lowest first: built-in default, environment variable (HPCML_*),
/// config file, `--set`.
#pragma once

#include <string>
#include <type_traits>
#include <utility>

#include "core/config.hpp"
#include "core/log.hpp"

namespace hpcml::launch {

struct RuntimeOptions {
  std::string backend = "mpi";
  std::string device = "cpu";
  int threads = 0;
  double collective_timeout_s = 300.0;

  template <typename V>
  void describe(V& v) {
    v.field("backend", backend,
            "collective backend over the job's ranks: mpi, local (one rank), nccl (CUDA tensors; builds with CUDA "
            "only), auto (nccl when built and every rank computes on a GPU, else mpi)",
            config::one_of({"mpi", "local", "nccl", "auto"}));
    v.field("device", device,
            "where this rank computes: cpu, cuda (GPU local_rank % visible devices: the rank's own under srun "
            "--gpus-per-task=1), auto (cuda when a GPU is visible). Used by train, eval, infer campaigns (and an "
            "ensemble's), bench ddp, serve's server ranks and info; posterior sampling (infer -i/-o, density "
            "campaigns), ensemble, hpo, tracking, bench infer and bench scaling run on the CPU only and refuse a GPU",
            config::one_of({"cpu", "cuda", "auto"}));
    v.field("threads", threads,
            "intra-op (LibTorch and BLAS) threads per rank; 0: the number of cores this rank is bound to "
            "(env HPCML_NUM_THREADS)",
            config::in_range(0, 1024));
    v.field("collective_timeout_s", collective_timeout_s,
            "deadline of every collective and wait, in seconds; a missed deadline ends the job "
            "(env HPCML_COLLECTIVE_TIMEOUT_S)",
            config::in_range(0.001, 86400.0));
  }
};

struct LogSection {
  std::string level = "info";
  bool all_ranks = false;

  template <typename V>
  void describe(V& v) {
    v.field("level", level, "log level (env HPCML_LOG_LEVEL)",
            config::one_of({"trace", "debug", "info", "warn", "error", "off"}));
    v.field("all_ranks", all_ranks, "log info messages from every rank, not only rank 0 (env HPCML_LOG_ALL_RANKS)");
  }
};

struct RunConfig {
  RuntimeOptions runtime;
  LogSection log;

  template <typename V>
  void describe(V& v) {
    v.section("runtime", runtime, "ranks, threads and deadlines");
    v.section("log", log, "logging");
  }

  /// Defaults with the HPCML_* environment variables applied (malformed ones throw ConfigError).
  static RunConfig from_environment();
};

/// The HPCML_* environment variables as a config layer: a document whose keys are
/// the variables' config keys, each tagged with its variable for error messages.
config::Document environment_layer();

namespace detail {
template <typename S, typename = void>
struct HasCheck : std::false_type {};
template <typename S>
struct HasCheck<S, std::void_t<decltype(std::declval<const S&>().check())>> : std::true_type {};
}  // namespace detail

/// The runtime and log sections of `config` (any struct with both): what a subcommand's
/// Context, or a rank group's, is set up from.
template <typename S>
RunConfig run_sections(const S& config) {
  RunConfig run;
  run.runtime = config.runtime;
  run.log = config.log;
  return run;
}

/// Reads the layers, lowest first: defaults, environment, then `file` (with --set),
/// into `config` (any struct with runtime and log sections), runs its checks across
/// keys (`config.check()`, where it has one), and returns the runtime and log sections.
template <typename S>
RunConfig read_layers(const config::Document& environment, const config::Document& file, S& config) {
  config::read_into(environment, config);
  config::read_into(file, config);
  if constexpr (detail::HasCheck<S>::value) config.check();
  return run_sections(config);
}

}  // namespace hpcml::launch
