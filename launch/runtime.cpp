#include "launch/runtime.hpp"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <sched.h>

#include <thread>

#include "collectives/factory.hpp"
#include "core/env.hpp"
#include "core/env_vars.hpp"
#include "core/log.hpp"

namespace hpcml::launch {

RunConfig RunConfig::from_environment() {
  RunConfig config;
  if (auto v = env::get_int(env::kNumThreads)) config.runtime.threads = static_cast<int>(*v);
  if (auto v = env::get_string(env::kCollectiveTimeout)) {
    try {
      config.runtime.collective_timeout_s = std::stod(*v);
    } catch (const std::exception&) {
      HPCML_THROW(ConfigError, "environment variable ", env::kCollectiveTimeout, ": expected a number of seconds, found '",
                  *v, "'");
    }
  }
  if (auto v = env::get_string(env::kLogLevel)) config.log.level = *v;
  if (auto v = env::get_bool(env::kLogAllRanks)) config.log.all_ranks = *v;
  return config;
}

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
    const int hardware = static_cast<int>(std::thread::hardware_concurrency());
    const bool bound = budget.num_cpus < hardware;
    threads = bound ? budget.num_cpus : std::max(1, budget.num_cpus / std::max(1, local_size));
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

Context make_context(const RunConfig& config) {
  Context context;
  context.config = config;
  context.env = RuntimeEnv::detect();
  log::init(context.env.rank, context.env.size, {config.log.level, config.log.all_ranks});
  context.threads = apply_thread_budget(config.runtime.threads, context.env.local_size);
  collectives::BackendOptions options;
  options.timeout = std::chrono::milliseconds(static_cast<long>(config.runtime.collective_timeout_s * 1000.0));
  context.world = collectives::make_backend(config.runtime.backend, options);
  return context;
}

}  // namespace hpcml::launch
