// The hpcml executable: one binary, subcommands, identical under mpirun and srun.
//
// Error policy (see docs/troubleshooting.md):
// - bad command line, config or HPCML_* variable, found at start-up: ranks agree
//   (one allreduce), the lowest rank that failed prints one line, and all ranks
//   exit with kExitUsage (2).
// - a bad value found later (a subcommand's own option): that rank prints one line
//   and ends the job with kExitUsage.
// - any other error on a rank: that rank prints one line naming itself and ends
//   the job (MPI_Abort with kExitError), so no peer waits on it.
// - a missed deadline: the watchdog prints one line and ends the job (kExitDeadline).
#include <malloc.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>
#include <memory>

#include "core/config.hpp"
#include "core/env_vars.hpp"
#include "core/error.hpp"
#include "core/h5.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"
#include "launch/cli/command.hpp"

namespace hpcml::launch::cli {

void add_common_options(CLI::App* sub, CommonOptions& common, bool config_argument) {
  sub->add_option("-c,--config", common.config_path, "YAML config file (keys: `hpcml config --reference`)")
      ->check(CLI::ExistingFile);
  if (config_argument) {
    // Its callback runs after -c's (options are processed in the order they were added).
    sub->add_option_function<std::string>(
           "config",
           [&common](const std::string& path) {
             if (!common.config_path.empty()) {
               throw CLI::ValidationError("the config twice: -c " + common.config_path + " and the argument " + path +
                                          "; give it once");
             }
             common.config_path = path;
           },
           "The YAML config file (the same as -c CONFIG)")
        ->check(CLI::ExistingFile);
  }
  sub->add_option("--set", common.overrides,
                  "Override one config key, e.g. --set runtime.threads=2 (repeatable; applied after the file)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
}

}  // namespace hpcml::launch::cli

namespace {

using hpcml::launch::cli::CommonOptions;
using hpcml::launch::cli::Runner;

// "a, b, c": the names sorted, comma-separated (sorts `names`).
std::string sorted_list(std::vector<std::string>& names) {
  std::sort(names.begin(), names.end());
  std::string list;
  for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
  return list;
}

// A word where a subcommand belongs that names none: "unknown subcommand 'trian' of
// 'hpcml'; expected one of [...]; did you mean 'train'?", else "". Walks argv from
// the top: names of subcommands descend; the first option ends the walk (an
// option's value could be any word).
std::string unknown_subcommand(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  std::string path = "hpcml";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return {};
    const auto subs = current->get_subcommands([](CLI::App*) { return true; });
    if (subs.empty()) return {};
    CLI::App* next = nullptr;
    std::vector<std::string> names;
    for (auto* sub : subs) {
      names.push_back(sub->get_name());
      if (sub->get_name() == word) next = sub;
    }
    if (next == nullptr) {
      // A command that takes its config as an argument (`hpcml hpo study.yaml`): a file's name,
      // or a YAML one not there (CLI11 then names the missing file), is that argument.
      const bool takes_config = !current->get_options([](const CLI::Option* o) { return o->get_positional(); }).empty();
      const auto suffix = std::filesystem::path(word).extension();
      const bool yaml = suffix == ".yaml" || suffix == ".yml";
      if (takes_config && (yaml || std::filesystem::exists(word))) return {};
      const std::string list = sorted_list(names);
      const std::string guess = hpcml::config::detail::nearest(word, names);
      return "hpcml: unknown subcommand '" + word + "' of '" + path + "'; expected one of [" + list + "]" +
             (takes_config ? " or a config file" : "") +
             (guess.empty() ? "" : "; did you mean '" + guess + "'?");
    }
    current = next;
    path += " " + word;
  }
  // Nothing where a subcommand is required ("hpcml bench"): say which there are.
  const auto subs = current->get_subcommands([](CLI::App*) { return true; });
  if (!subs.empty() && current->get_require_subcommand_min() > 0) {
    std::vector<std::string> names;
    for (auto* sub : subs) names.push_back(sub->get_name());
    return "hpcml: '" + path + "' needs a subcommand: one of [" + sorted_list(names) + "] (run with --help for usage)";
  }
  return {};
}

// Numbers on the command line are numbers of their type: CLI11 reads an empty value as
// 0, wraps a negative value of an unsigned option and accepts nan and inf. Returns the
// error line for the first such value of the chosen subcommands, or "".
std::string bad_number(const CLI::App& app) {
  for (const CLI::App* sub = &app; sub != nullptr;) {
    for (const CLI::Option* option : sub->get_options()) {
      const std::string type = option->get_type_name();
      if (option->count() == 0 || (type != "INT" && type != "UINT" && type != "FLOAT")) continue;
      const std::string name = option->get_name(false, true);
      for (const std::string& value : option->results()) {
        errno = 0;
        char* end = nullptr;
        bool ok = !value.empty();
        if (ok && type == "UINT") {
          ok = value.find('-') == std::string::npos && (std::strtoull(value.c_str(), &end, 0), errno != ERANGE);
        } else if (ok && type == "INT") {
          ok = (std::strtoll(value.c_str(), &end, 0), errno != ERANGE);
        } else if (ok) {
          ok = std::isfinite(std::strtod(value.c_str(), &end)) && errno != ERANGE;
        }
        if (!ok) {
          const char* expected = type == "UINT" ? "an integer in [0, 18446744073709551615]"
                                 : type == "INT" ? "an integer in [-9223372036854775808, 9223372036854775807]"
                                                 : "a finite number";
          return "hpcml: " + name + ": expected " + expected + ", found '" + value + "' (run with --help for usage)";
        }
      }
    }
    const auto chosen = sub->get_subcommands();
    sub = chosen.empty() ? nullptr : chosen.front();
  }
  return {};
}

// Every rank learns whether any rank failed; the lowest failing rank prints.
// Returns true when all succeeded. Under a deadline, like every collective.
bool all_ranks_ok(const std::string& error) {
  if (!hpcml::mpi_initialized() || hpcml::world_size() == 1) {
    if (!error.empty()) std::cerr << error << std::endl;
    return error.empty();
  }
  const int rank = hpcml::world_rank();
  const int first_failed =
      hpcml::world_min(error.empty() ? hpcml::world_size() : rank, "startup agreement", std::chrono::seconds(120));
  if (first_failed == rank) std::cerr << error << std::endl;
  return first_failed == hpcml::world_size();
}

// Whether a launcher started this process (mpirun, srun, a PMI one). Its ranks agree on the
// command line with a collective, so MPI starts before anything else. A process nothing
// launched (a shell on a login node) starts MPI once its command line and config have parsed,
// and only for a command that needs it (CommonOptions::needs_mpi): `--help`, `--version`, a
// rejected command line, `config` and the references start none (a singleton MPI_Init spawns
// Open MPI's orted, about 0.35 s here, and fails outright on some login nodes).
bool launched() {
  for (const char* name : {hpcml::env::kOmpiRank, hpcml::env::kPmixRank, hpcml::env::kPmiRank,
                           hpcml::env::kSlurmProcId}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// Starts MPI for this process unless it has started. False, with the line printed, when it cannot.
bool start_mpi(std::unique_ptr<hpcml::MpiSession>& mpi, int* argc, char*** argv) {
  if (mpi) return true;
  try {
    mpi = std::make_unique<hpcml::MpiSession>(argc, argv);
    return true;
  } catch (const hpcml::Error& e) {
    std::cerr << "hpcml: cannot start MPI: " << e.message() << std::endl;
    return false;
  }
}

int run(int argc, char** argv, std::unique_ptr<hpcml::MpiSession>& mpi) {
  hpcml::h5_silence_auto_print();

  CLI::App app{"hpcml: data-parallel training, evaluation, GW posterior sampling and inference-as-a-service for "
               "physics ML on MPI ranks (LibTorch, MPI, HDF5). Runs the same under mpirun and srun.",
               "hpcml"};
  app.set_version_flag("--version", hpcml::launch::cli::version_line());
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 runtime error, 2 bad command line or config, 75 stopped by SIGUSR1/SIGTERM "
             "after a checkpoint (train), 86 deadline exceeded.\n"
             "Docs: README.md and docs/ in the source tree.");
  CommonOptions common;
  Runner selected;
  hpcml::launch::cli::add_info_command(app, common, selected);
  hpcml::launch::cli::add_config_command(app, common, selected);
  hpcml::launch::cli::add_bench_command(app, common, selected);
  hpcml::launch::cli::add_train_command(app, common, selected);
  hpcml::launch::cli::add_export_command(app, common, selected);
  hpcml::launch::cli::add_eval_command(app, common, selected);
  hpcml::launch::cli::add_infer_command(app, common, selected);
  hpcml::launch::cli::add_datagen_command(app, common, selected);
  hpcml::launch::cli::add_models_command(app, common, selected);
  hpcml::launch::cli::add_serve_command(app, common, selected);
  hpcml::launch::cli::add_bench_serve_command(*app.get_subcommand("bench"), common, selected);
  hpcml::launch::cli::add_tracking_command(app, common, selected);
  hpcml::launch::cli::add_hpo_command(app, common, selected);
  hpcml::launch::cli::add_ensemble_command(app, common, selected);
  hpcml::launch::cli::add_project_command(app, common, selected);

  // Parse the command line and the config on every rank; agree before any collective.
  std::string error;
  hpcml::launch::RunConfig config;
  try {
    app.parse(argc, argv);
    error = bad_number(app);
    if (!error.empty()) throw CLI::ValidationError(error);
    const auto environment = hpcml::launch::environment_layer();
    const auto doc = common.config_path.empty()
                         ? hpcml::config::from_string("", "<no config file>", common.overrides)
                         : hpcml::config::load(common.config_path, common.overrides);
    config = common.parser ? common.parser(environment, doc)
                           : hpcml::launch::read_layers(environment, doc, config);
  } catch (const CLI::CallForHelp&) {
    if (hpcml::world_rank() == 0) std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    if (hpcml::world_rank() == 0) std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    if (hpcml::world_rank() == 0) std::cout << hpcml::launch::cli::version_line() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    if (error.empty()) error = unknown_subcommand(app, argc, argv);
    if (error.empty()) error = std::string("hpcml: ") + e.what() + " (run with --help for usage)";
  } catch (const hpcml::ConfigError& e) {
    error = "hpcml: " + e.message();
  }
  if (!all_ranks_ok(error)) return hpcml::kExitUsage;
  // Under a launcher MPI is up already; otherwise it starts now, unless the command needs none.
  const bool with_mpi = mpi != nullptr || common.needs_mpi;
  if (with_mpi && !start_mpi(mpi, &argc, &argv)) return hpcml::kExitError;

  auto context = hpcml::launch::make_context(config, with_mpi);
  return selected(context);
}

// "hpcml: <text>", with the rank when the job has several.
std::string error_line(const std::string& text) {
  return "hpcml: " + (hpcml::world_size() > 1 ? hpcml::rank_tag() + " " : std::string()) + text;
}

}  // namespace

int main(int argc, char** argv) {
  // Batch tensors (hundreds of KB to MBs) are allocated by the prefetch thread and
  // freed by the step: with glibc's default thresholds each one would be a fresh
  // mmap, page-faulted in and unmapped (a TLB shootdown on every core of the
  // process) per step. Serve them from the heap instead; the working set is bounded.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum (DEFAULT_MMAP_THRESHOLD_MAX)
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // Larger blocks (ParticleNet's edge tensors: 50-200 MB) would still be a fresh
  // mmap each, and blocks freed in other threads' arenas are given back with
  // MADV_DONTNEED: either way the kernel zeroes the pages again on every step
  // (measured: 2M page faults and half the CPU time in the kernel per ParticleNet
  // step). One heap for every thread and no mmap keep them: 1.5x the 1-thread speed.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_ARENA_MAX, 1);
  // MPI outlives every error report below, so a failing rank can name itself and
  // end the job with MPI_Abort while its peers may sit in a collective.
  std::unique_ptr<hpcml::MpiSession> mpi;
  if (launched() && !start_mpi(mpi, &argc, &argv)) return hpcml::kExitError;
  // Past start-up, an error ends the job from the rank that hit it, with its message.
  try {
    return run(argc, argv, mpi);
  } catch (const hpcml::ConfigError& e) {
    // A value only a subcommand checks (e.g. a benchmark size). Usually every rank finds
    // it: rank 0 reports it and ends the job, the others give it a moment to, so one
    // line is printed; a rank that alone found it reports it after that moment.
    if (hpcml::world_rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
    hpcml::abort_job(error_line(e.message()), hpcml::kExitUsage);
  } catch (const hpcml::Error& e) {
    hpcml::abort_job(error_line(std::string("error: ") + e.what()), hpcml::kExitError);
  } catch (const std::exception& e) {
    // LibTorch, the standard library: one line without frames (HPCML_DEBUG=1 keeps them).
    hpcml::abort_job(error_line("error: " + hpcml::describe_foreign_exception(e)), hpcml::kExitError);
  }
}
