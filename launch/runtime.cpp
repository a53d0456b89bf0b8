#include "launch/runtime.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <sched.h>

#include <ctime>
#include <filesystem>
#include <system_error>
#include <thread>

#include "collectives/factory.hpp"
#include "core/env.hpp"
#include "core/env_vars.hpp"
#include "core/error.hpp"
#include "core/log.hpp"

namespace hpcml::launch {

config::Document environment_layer() {
  // The variables form a config layer of their own, checked by the same rules as
  // the file: a bad value names the variable, the key and what is accepted.
  config::Document doc = config::from_string("", "the environment");
  auto layer = [&doc](const char* variable, const char* key, const std::optional<std::string>& value) {
    if (value) config::apply_override(doc, std::string(key) + "=" + *value, std::string("environment variable ") + variable);
  };
  layer(env::kNumThreads, "runtime.threads", env::get_string(env::kNumThreads));
  layer(env::kCollectiveTimeout, "runtime.collective_timeout_s", env::get_string(env::kCollectiveTimeout));
  layer(env::kLogLevel, "log.level", env::get_string(env::kLogLevel));
  if (auto all = env::get_bool(env::kLogAllRanks)) {
    layer(env::kLogAllRanks, "log.all_ranks", std::string(*all ? "true" : "false"));
  }
  return doc;
}

RunConfig RunConfig::from_environment() { return config::parse<RunConfig>(environment_layer()); }

namespace {

std::string format_cpus(const cpu_set_t& set, int* count) {
  std::string out;
  *count = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    int last = cpu;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) ++last;
    out += (out.empty() ? "" : ",") + std::to_string(cpu) + (last > cpu ? "-" + std::to_string(last) : "");
    *count += last - cpu + 1;
    cpu = last;
  }
  return out;
}

// OpenBLAS keeps its own thread pool, separate from LibTorch's; reach it by symbol
// so the build does not depend on which BLAS the alternatives system selected.
using SetThreads = void (*)(int);
using GetThreads = int (*)();

}  // namespace

ThreadBudget apply_thread_budget(int requested, int local_size) {
  ThreadBudget budget;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    budget.cpus = format_cpus(set, &budget.num_cpus);
  } else {
    budget.num_cpus = static_cast<int>(std::thread::hardware_concurrency());
    budget.cpus = "?";
  }
  int threads = requested;
  if (threads <= 0) {
    // The cores this rank may use, but never more than its share of the node:
    // ranks bound to a whole socket (Open MPI's default above 2 ranks) share it.
    const int hardware = static_cast<int>(std::thread::hardware_concurrency());
    threads = std::max(1, std::min(budget.num_cpus, hardware / std::max(1, local_size)));
  }
  at::set_num_threads(threads);
  budget.intra_op = at::get_num_threads();
  if (auto set_blas = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas(threads);
    if (auto get_blas = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) {
      budget.blas = get_blas();
    }
  }
  return budget;
}

Context make_context(const RunConfig& config, bool with_mpi) {
  Context context;
  context.config = config;
  context.env = RuntimeEnv::detect();
  log::init(context.env.rank, context.env.size, {config.log.level, config.log.all_ranks});
  context.threads = apply_thread_budget(config.runtime.threads, context.env.local_size);
  collectives::BackendOptions options;
  options.timeout = std::chrono::milliseconds(static_cast<long>(config.runtime.collective_timeout_s * 1000.0));
  context.device = collectives::select_device(config.runtime.device, context.env.local_rank);
  context.world = collectives::make_backend(with_mpi ? config.runtime.backend : std::string("local"), options,
                                           context.device.device);
  return context;
}

Context group_context(const Context& parent, collectives::BackendPtr group, const RunConfig& config) {
  Context context = parent;
  context.config = config;
  context.world = std::move(group);
  const bool whole_job = context.world->size() == parent.world->size();
  log::init(context.world->rank(), context.world->size(),
            {config.log.level, config.log.all_ranks, whole_job ? std::string() : context.world->comm_name()});
  return context;
}

void require_cpu(const Context& context, const std::string& command) {
  const auto& device = context.device.device;
  HPCML_CHECK_AS(ConfigError, device.is_cpu(), "key 'runtime.device': ", command,
                 " runs on the CPU today, found ", device.str(),
                 " (train, eval, infer campaigns, bench ddp and serve's server ranks use GPUs: docs/gpu.md); set "
                 "runtime.device: cpu");
}

std::string describe_run(const std::string& dir, const std::vector<std::string>& files,
                         const std::string& checkpoints) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  std::string found;
  for (const auto& name : files) {
    if (fs::exists(fs::path(dir) / name, ec)) found += (found.empty() ? "" : ", ") + name;
  }
  int count = 0;
  if (!checkpoints.empty() && fs::is_directory(fs::path(dir) / checkpoints, ec)) {
    for (const auto& entry : fs::directory_iterator(fs::path(dir) / checkpoints, ec)) count += entry.is_regular_file();
  }
  if (count > 0) found += (found.empty() ? "" : ", ") + std::to_string(count) + " checkpoint(s)";
  return found;
}

std::string moved_aside_name(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
  fs::path base = dir;
  if (!base.has_filename()) base = base.parent_path();  // "runs/x/" -> "runs/x"
  std::string aside = base.string() + ".replaced-" + stamp;
  for (int k = 2; fs::exists(aside); ++k) aside = base.string() + ".replaced-" + stamp + "-" + std::to_string(k);
  return aside;
}

}  // namespace hpcml::launch
