// `hpcml bench infer`: a campaign's throughput against the model's own forward on the
// same batches already in memory, alternated in one run (docs/benchmarks.md).
#include <malloc.h>
#include <sys/resource.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/bench/stats.hpp"
#include "launch/cli/command.hpp"
#include "launch/infer/campaign.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using bench::median;

struct InferBenchOptions {
  int reps = 5;
  std::string scratch = "runs/bench-infer";
  std::string json_path;
  std::vector<std::string> rss_inputs;  // a second file set of the same rows: peak RSS of both
  bool versus_service = false;           // the campaign through one server rank against local
};

// Returns the heap's free memory to the system (glibc keeps it otherwise, and a
// campaign would reuse it unseen), then resets this process's peak resident set
// (VmHWM) to its current size (Linux >= 4.0).
void reset_peak_rss() {
  malloc_trim(0);
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
}

// A field of /proc/self/status in MiB ("VmHWM": the peak since the last reset; "VmRSS").
double status_mib(const char* field) {
  std::ifstream status("/proc/self/status");
  const std::string key = std::string(field) + ":";
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + key.size()) / 1024.0;
  return 0;
}

// Max over ranks, of each entry.
at::Tensor max_over_ranks(collectives::Backend& world, std::vector<double> values) {
  at::Tensor t = at::tensor(values, at::kDouble);
  collectives::AllreduceOptions max_op;
  max_op.op = collectives::ReduceOp::kMax;
  world.allreduce(t, max_op);
  return t;
}

// Max over ranks of this process's peak resident set, MiB.
double peak_rss_mib(collectives::Backend& world) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return max_over_ranks(world, {static_cast<double>(usage.ru_maxrss) / 1024.0})[0].item<double>();
}

// Peak RSS of a campaign over infer.inputs against one over `other` (the same rows in
// more or fewer files), alternated; the peak reset before each campaign.
nlohmann::json compare_peak_rss(Context& c, const TrainConfig& config, const InferBenchOptions& o) {
  auto& world = *c.world;
  std::vector<double> a, b, growth_a, growth_b;
  for (int rep = 0; rep < o.reps; ++rep) {
    for (int k = 0; k < 2; ++k) {
      const bool first = (k + rep) % 2 == 0;
      TrainConfig run = config;
      if (!first) run.infer.inputs = o.rss_inputs;
      run.infer.output_dir = (fs::path(o.scratch) / ("rss-" + std::to_string(rep) + "-" + std::to_string(k))).string();
      world.barrier();
      reset_peak_rss();
      const double before = status_mib("VmRSS");
      const int rc = run_campaign(c, run, CampaignFlags{true, false});
      const double peak = status_mib("VmHWM");
      const at::Tensor m = max_over_ranks(world, {peak, peak - before});
      HPCML_CHECK_AS(IoError, rc == 0, "bench infer: the campaign over ", first ? "infer.inputs" : "--rss-inputs",
                     " failed (exit ", rc, "); see ", run.infer.output_dir, "/summary.json");
      (first ? a : b).push_back(m[0].item<double>());
      (first ? growth_a : growth_b).push_back(m[1].item<double>());
      world.barrier();
      if (world.rank() == 0) fs::remove_all(run.infer.output_dir);
    }
  }
  return {{"inputs", config.infer.inputs}, {"rss_inputs", o.rss_inputs}, {"peak_rss_mib", median(a)},
          {"rss_inputs_peak_rss_mib", median(b)}, {"ratio", median(b) / std::max(median(a), 1e-9)},
          {"growth_mib", median(growth_a)}, {"rss_inputs_growth_mib", median(growth_b)},
          {"per_rep", {{"inputs", a}, {"rss_inputs", b}, {"growth", growth_a}, {"rss_inputs_growth", growth_b}}}};
}

// One campaign, timed from a barrier of `world` before it to one after it; its summary.
std::pair<double, nlohmann::json> timed_campaign(Context& c, collectives::Backend& world, const TrainConfig& run,
                                                 bool take_part) {
  world.barrier();
  const auto start = Clock::now();
  const int rc = take_part ? run_campaign(c, run, CampaignFlags{true, false}) : 0;
  world.barrier();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  HPCML_CHECK_AS(IoError, rc == 0, "bench infer: the campaign failed (exit ", rc, "); see ", run.infer.output_dir,
                 "/summary.json");
  nlohmann::json summary;
  if (world.rank() == 0) {
    std::ifstream in(fs::path(run.infer.output_dir) / "summary.json");
    summary = nlohmann::json::parse(in, nullptr, false);
    fs::remove_all(run.infer.output_dir);
  }
  return {seconds, summary};
}

// The campaign through the service (the last rank serving, the others working)
// against the local campaign on the same workers (the last rank sits it out),
// alternated. On a machine where the server shares the workers' cores this shows
// the service's overhead, not a speed-up.
int run_versus_service(Context& c, const TrainConfig& config, const InferBenchOptions& o) {
  auto& world = *c.world;
  const int n = world.size();
  HPCML_CHECK_AS(ConfigError, n >= 2, "bench infer --versus-service: expected at least 2 ranks (workers and one "
                 "server), found ", n);
  const bool worker = world.rank() < n - 1;
  const collectives::BackendPtr workers = world.split(worker ? 0 : 1, world.rank(), "bench-local");
  Context local = group_context(c, workers, c.config);
  std::vector<double> local_rate, service_rate, ratio, utilisation, f_eq;
  double rows = 0;
  for (int rep = 0; rep < o.reps; ++rep) {
    double a = 0, b = 0;
    for (int k = 0; k < 2; ++k) {
      TrainConfig run = config;
      run.infer.output_dir = (fs::path(o.scratch) / ("svc-" + std::to_string(rep) + "-" + std::to_string(k))).string();
      if ((k + rep) % 2 == 0) {
        run.infer.via = "local";
        const auto [seconds, summary] = timed_campaign(worker ? local : c, world, run, worker);
        if (world.rank() == 0) rows = summary.value("rows", 0.0);
        a = rows / seconds;
      } else {
        run.infer.via = "service";
        run.infer.service.roles = "count";
        run.infer.service.servers = 1;
        run.infer.service.server_ratio = 0;
        const auto [seconds, summary] = timed_campaign(c, world, run, true);
        b = rows / seconds;
        if (world.rank() == 0) {
          utilisation.push_back(summary["service"]["servers"][0].value("utilisation", 0.0));
          f_eq.push_back(summary["service"].value("F_eq", 0.0));
        }
      }
    }
    local_rate.push_back(a);
    service_rate.push_back(b);
    ratio.push_back(b / std::max(a, 1e-9));
  }
  if (world.rank() != 0) return 0;
  const nlohmann::json out = {{"model", config.model.name}, {"workers", n - 1}, {"servers", 1}, {"rows", rows},
                              {"reps", o.reps}, {"batch_size", config.infer.batch_size},
                              {"local_rows_per_s", median(local_rate)}, {"service_rows_per_s", median(service_rate)},
                              {"service_over_local", median(ratio)}, {"server_utilisation", median(utilisation)},
                              {"F_eq", median(f_eq)},
                              {"per_rep", {{"local", local_rate}, {"service", service_rate}, {"ratio", ratio},
                                           {"utilisation", utilisation}}}};
  std::printf("bench infer --versus-service %s: %d worker(s) + 1 server rank, %.0f rows, %d alternating reps:\n",
              config.model.name.c_str(), n - 1, rows, o.reps);
  std::printf("  through the service %.0f rows/s, local on the same workers %.0f rows/s: %.2fx (median of per-rep "
              "ratios); server utilisation %.2f; F_eq %.2f\n",
              median(service_rate), median(local_rate), median(ratio), median(utilisation), median(f_eq));
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

int run_bench_infer(Context& c, const TrainConfig& config, const InferBenchOptions& o) {
  auto& world = *c.world;
  HPCML_CHECK_AS(ConfigError, !config.infer.inputs.empty(), "bench infer: key 'infer.inputs': expected the files "
                 "to run the campaign over, found none");
  std::vector<double> campaign, forward, ratio, read_s, compute_s, write_s, wall_s;
  int64_t rows = 0;
  for (int rep = 0; rep < o.reps; ++rep) {
    // Alternate which one runs first.
    double campaign_rate = 0, forward_rate = 0;
    for (int k = 0; k < 2; ++k) {
      if ((k + rep) % 2 == 0) {
        const ForwardTiming t = time_in_memory_forward(c, config);
        at::Tensor total = at::tensor({static_cast<double>(t.rows)}, at::kDouble);
        world.allreduce(total);
        const double slowest = max_over_ranks(world, {t.seconds})[0].item<double>();
        rows = static_cast<int64_t>(total.item<double>());
        forward_rate = total.item<double>() / std::max(slowest, 1e-9);
      } else {
        TrainConfig run = config;
        run.infer.output_dir = (fs::path(o.scratch) / ("rep-" + std::to_string(rep))).string();
        const auto [seconds, summary] = timed_campaign(c, world, run, true);
        campaign_rate = static_cast<double>(rows > 0 ? rows : 1) / seconds;
        if (world.rank() == 0) {
          // Where the campaign's time went (summed over units and ranks), from its summary.
          if (summary.is_object()) {
            read_s.push_back(summary["split_s"].value("read", 0.0));
            compute_s.push_back(summary["split_s"].value("compute", 0.0));
            write_s.push_back(summary["split_s"].value("write", 0.0));
          }
          wall_s.push_back(seconds);
        }
      }
    }
    campaign.push_back(campaign_rate);
    forward.push_back(forward_rate);
    ratio.push_back(campaign_rate / forward_rate);
  }
  const double rss = peak_rss_mib(world);
  const nlohmann::json rss_compare = o.rss_inputs.empty() ? nlohmann::json() : compare_peak_rss(c, config, o);
  if (world.rank() != 0) return 0;
  nlohmann::json out = {{"model", config.model.name},
                        {"ranks", world.size()},
                        {"rows", rows},
                        {"inputs", config.infer.inputs},
                        {"batch_size", config.infer.batch_size},
                        {"unit_rows", config.infer.unit_rows},
                        {"reps", o.reps},
                        {"coordinator_works", true},
                        {"campaign_rows_per_s", median(campaign)},
                        {"forward_rows_per_s", median(forward)},
                        {"campaign_over_forward", median(ratio)},
                        {"peak_rss_mib", rss},
                        {"campaign_split_s", {{"wall", median(wall_s)}, {"read", median(read_s)},
                                              {"compute", median(compute_s)}, {"write", median(write_s)}}},
                        {"per_rep", {{"campaign", campaign}, {"forward", forward}, {"ratio", ratio}}}};
  std::printf("bench infer %s on %d rank(s), %lld rows, %d alternating reps:\n", config.model.name.c_str(),
              world.size(), static_cast<long long>(rows), o.reps);
  std::printf("  campaign %.0f rows/s (set-up, reads, writes, commits, assembly included), in-memory forward %.0f "
              "rows/s: %.2fx (median of per-rep ratios); peak RSS %.0f MiB\n",
              median(campaign), median(forward), median(ratio), rss);
  std::printf("  campaign wall %.3f s; summed over units and ranks: read %.3f s, compute %.3f s, write+commit %.3f s\n",
              median(wall_s), median(read_s), median(compute_s), median(write_s));
  if (!rss_compare.is_null()) {
    out["peak_rss_compare"] = rss_compare;
    std::printf("  peak RSS of one campaign (reset before each, max over ranks, median of %d): infer.inputs %.0f MiB "
                "(%.1f above the RSS before it), --rss-inputs %.0f MiB (%.1f above): %.3fx\n",
                o.reps, rss_compare["peak_rss_mib"].get<double>(), rss_compare["growth_mib"].get<double>(),
                rss_compare["rss_inputs_peak_rss_mib"].get<double>(), rss_compare["rss_inputs_growth_mib"].get<double>(),
                rss_compare["ratio"].get<double>());
  }
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_infer_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "infer", "A batch-inference campaign (the config's infer section, its model and run.dir's checkpoint) against "
               "the model's own forward on the same batches already in memory, alternated; all ranks");
  add_common_options(sub, common);
  auto o = std::make_shared<InferBenchOptions>();
  sub->add_option("--reps", o->reps, "Alternating repetitions (median of ratios)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  sub->add_option("--scratch", o->scratch, "Directory for the campaigns' outputs (removed after each)")
      ->capture_default_str();
  sub->add_option("--json", o->json_path, "Also write the result as JSON to this file");
  sub->add_option("--rss-inputs", o->rss_inputs, "Files or globs of the same rows in more (or fewer) files: also "
                  "compare one campaign's peak RSS over infer.inputs and over these, alternated, the peak reset "
                  "before each (Linux clear_refs)");
  sub->add_flag("--versus-service", o->versus_service, "Instead: the campaign through one server rank (the last "
                "rank; infer.via: service) against the local campaign on the other ranks, alternated");
  auto config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, config, o] {
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      return read_layers(environment, file, *config);
    };
    selected = [config, o](Context& c) {
      require_cpu(c, "hpcml bench infer");
      return o->versus_service ? run_versus_service(c, *config, *o) : run_bench_infer(c, *config, *o);
    };
  });
}

}  // namespace hpcml::launch::cli
