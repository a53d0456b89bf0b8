// `hpcml bench scaling`: one point of a strong- or weak-scaling sweep per launch (the
// launch's rank count), measured on the Trainer itself (the config's model, data,
// reducer and optimizer), appended to a sweep directory whose scaling.json, table and
// plots are rebuilt from every point so far. A sweep is several launches (srun steps of
// one job: jobs/scaling.sbatch; here: scripts/scaling-sweep.sh).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "launch/bench/stats.hpp"
#include "launch/plot_script.hpp"
#include "launch/run_config.hpp"
#include "launch/runtime.hpp"
#include "launch/cli/command.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch::cli {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct ScalingOptions {
  std::string mode = "weak";
  int global_batch = 0;
  int steps = 40;
  int interval = 10;
  std::string out = "bench-scaling";
  std::string target;
  bool independent = false;
  bool plots = true;
};

// "--target val_accuracy>=0.8": the metric, its threshold and whether higher is better.
struct Target {
  std::string metric;
  double value = 0;
  bool higher = true;
};

Target parse_target(const std::string& text) {
  Target t;
  size_t at = text.find(">=");
  if (at == std::string::npos) {
    at = text.find("<=");
    t.higher = false;
  }
  size_t used = 0;
  if (at != std::string::npos && at > 0) {
    t.metric = text.substr(0, at);
    try {
      t.value = std::stod(text.substr(at + 2), &used);
    } catch (const std::exception&) {
      used = 0;
    }
  }
  HPCML_CHECK_AS(ConfigError, used > 0 && used == text.size() - at - 2, "bench scaling: --target: expected "
                 "METRIC>=VALUE or METRIC<=VALUE on a validation metric (val_accuracy>=0.8, val_loss<=0.3), found '",
                 text, "'");
  HPCML_CHECK_AS(ConfigError, t.metric.rfind("val_", 0) == 0, "bench scaling: --target: expected a validation "
                 "metric (val_loss, val_accuracy, val_auc, ...), found '", t.metric, "'");
  return t;
}

// The point's training config: per-rank batch from the mode, a fresh run directory, no
// validation (unless timing to a target), one checkpoint at the end.
TrainConfig point_config(TrainConfig c, const ScalingOptions& o, int ranks, bool alone, const fs::path& run_dir) {
  HPCML_CHECK_AS(ConfigError, o.mode == "weak" || o.mode == "strong", "bench scaling: --mode: expected weak or "
                 "strong, found '", o.mode, "'");
  HPCML_CHECK_AS(ConfigError, o.global_batch >= 0 && (o.global_batch == 0 || o.mode == "strong"),
                 "bench scaling: --global-batch: expected a positive number of samples with --mode strong, found ",
                 o.global_batch, " with --mode ", o.mode);
  if (o.mode == "strong") {
    const int global = o.global_batch > 0 ? o.global_batch : c.train.batch_size;
    HPCML_CHECK_AS(ConfigError, global % ranks == 0, "bench scaling: strong scaling keeps the global batch (",
                   global, ", --global-batch or train.batch_size) and splits it over ranks: expected a multiple of ",
                   ranks, " ranks");
    c.train.batch_size = global / ranks;
  }
  c.run.dir = run_dir.string();
  c.run.resume = "no";
  c.run.overwrite = true;
  c.run.progress = "lines";
  if (o.target.empty()) {
    HPCML_CHECK_AS(ConfigError, o.interval >= 1 && o.steps >= o.interval && o.steps % o.interval == 0,
                   "bench scaling: --steps (", o.steps, ") must be a positive multiple of --interval (", o.interval,
                   ")");
    c.train.max_steps = o.steps + o.interval;  // the first interval warms up
    // Alone, every step is logged (no collective to pay): the profile keeps each step's
    // compute, whose spread is the straggler wait N synchronised ranks would see.
    c.train.log_every = alone ? 1 : o.interval;
    c.checkpoint.every_steps = c.train.max_steps;
    c.data.validation_files.clear();
    c.data.validation_samples = 0;
  }
  return c;
}

// The point from the run's metrics.jsonl (rank 0). Its timed rows (after the first
// interval) are grouped into intervals of `interval` steps (a row covers the steps since
// the previous one); the point is the interval of median throughput (the upper middle of
// an even count) with that interval's per-step breakdown, so that the parts and the step
// time come from the same steps. Rows of single steps also give each step's compute.
json measure(const fs::path& run_dir, const ScalingOptions& o, int ranks, int batch_per_rank) {
  struct Interval {
    double steps = 0, seconds = 0;
    std::map<std::string, double> ms;  // summed over its steps
  };
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<Interval> intervals(1);
  std::vector<double> step_compute_s;
  std::string line;
  int64_t last = 0;
  while (std::getline(in, line)) {
    const json row = json::parse(line, nullptr, false);
    if (!row.is_object() || !row.contains("time_ms")) continue;
    const int64_t step = row.value("step", int64_t{0}), steps = step - last;
    last = step;
    if (step <= o.interval || steps <= 0) continue;
    Interval& cur = intervals.back();
    cur.steps += static_cast<double>(steps);
    cur.seconds += static_cast<double>(steps * batch_per_rank * ranks) / row.value("samples_per_s", 1.0);
    for (const auto& [k, v] : row["time_ms"].items()) cur.ms[k] += v.get<double>() * static_cast<double>(steps);
    if (steps == 1) step_compute_s.push_back((row["time_ms"].value("forward", 0.0) + row["time_ms"].value("backward", 0.0)) / 1e3);
    if (cur.steps >= o.interval) intervals.emplace_back();
  }
  if (intervals.back().steps == 0) intervals.pop_back();
  HPCML_CHECK_AS(IoError, !intervals.empty(), "bench scaling: no timed interval in ",
                 (run_dir / "metrics.jsonl").string());
  auto rate = [&](const Interval& i) { return i.steps * batch_per_rank * ranks / i.seconds; };
  std::vector<double> rates;
  for (const auto& i : intervals) rates.push_back(rate(i));
  std::sort(intervals.begin(), intervals.end(), [&](const Interval& a, const Interval& b) { return rate(a) < rate(b); });
  const Interval& mid = intervals[intervals.size() / 2];
  auto part = [&](const char* k) { return mid.ms.count(k) ? mid.ms.at(k) / mid.steps : 0.0; };
  const double step_ms = 1000.0 * mid.seconds / mid.steps;
  const double compute = part("forward") + part("backward");
  const double wait = part("comm_wait"), data = part("data"), opt = part("optimizer");
  json out = {{"samples_per_s", rate(mid)},
              {"samples_per_s_intervals", rates},
              {"step_ms", step_ms},
              {"breakdown_ms",
               {{"compute", compute},
                {"forward", part("forward")},
                {"backward", part("backward")},
                {"exposed_comm", wait},
                {"data_wait", data},
                {"optimizer", opt},
                {"other", std::max(0.0, step_ms - compute - wait - data - opt)}}}};
  if (!step_compute_s.empty()) out["step_compute_s"] = step_compute_s;
  return out;
}

// Seconds from the run's start until the first validation that reached `t`; -1 if none did.
double time_to_target(const fs::path& run_dir, const Target& t) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const json row = json::parse(line, nullptr, false);
    if (!row.is_object() || !row.contains(t.metric) || !row.contains("time_s")) continue;
    const double v = row[t.metric].get<double>();
    if (t.higher ? v >= t.value : v <= t.value) return row["time_s"].get<double>();
  }
  return -1;
}

// The model's inputs from a point: what `hpcml project train --profile` reads.
json profile_of(const json& point, const TrainOutcome& outcome) {
  const json& b = point["breakdown_ms"];
  const double batch = point["batch_per_rank"].get<double>();
  return {{"model", point["model"]},
          {"batch_per_rank", point["batch_per_rank"]},
          {"threads_per_rank", point["threads_per_rank"]},
          {"compute_per_sample_s", b["compute"].get<double>() / 1000.0 / batch},
          // The optimizer and the step's other fixed costs (zeroing, the loss's read-back).
          {"optimizer_per_step_s", (b["optimizer"].get<double>() + b["other"].get<double>()) / 1000.0},
          {"data_per_sample_s", b["data_wait"].get<double>() / 1000.0 / batch},
          {"backward_fraction", b["backward"].get<double>() / b["compute"].get<double>()},
          // Each timed step's forward + backward (seconds): the model's straggler term.
          {"step_compute_s", point.value("step_compute_s", json::array())},
          {"parameter_bytes", outcome.layout.value("parameter_bytes", json::array())},
          {"buckets_bytes", outcome.layout.value("buckets_bytes", json::array())},
          {"reducer", outcome.layout.value("reducer", json::object())}};
}

// scaling.json from every point in `dir`: per mode and rank count, the median point over
// repetitions, and parallel efficiency against the mode's smallest rank count.
json aggregate(const fs::path& dir) {
  std::map<std::string, std::map<int, std::vector<json>>> points;
  for (const auto& entry : fs::directory_iterator(dir / "points")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    const json p = json::parse(in, nullptr, false);
    if (p.is_object() && p.contains("ranks")) points[p["mode"]][p["ranks"].get<int>()].push_back(p);
  }
  json out = {{"modes", json::object()}, {"profiles", json::object()}};
  for (auto& [mode, by_ranks] : points) {
    json rows = json::array();
    double base_rate = 0;
    int base_ranks = 0;
    for (auto& [ranks, reps] : by_ranks) {
      std::sort(reps.begin(), reps.end(), [](const json& a, const json& b) {
        return a["samples_per_s"].get<double>() < b["samples_per_s"].get<double>();
      });
      json row = reps[reps.size() / 2];  // the median repetition (upper middle of an even count)
      std::vector<double> rates;
      for (const auto& r : reps) rates.push_back(r["samples_per_s"].get<double>());
      row["repetitions"] = reps.size();
      row["samples_per_s_reps"] = rates;
      if (base_ranks == 0) {
        base_ranks = ranks;
        base_rate = row["samples_per_s"].get<double>();
      }
      row["efficiency"] = row["samples_per_s"].get<double>() / base_rate / (static_cast<double>(ranks) / base_ranks);
      row["efficiency_base_ranks"] = base_ranks;
      if (row.contains("profile")) {  // alone: 1 rank (profile-<mode>) or independent (profile-<mode>-n<N>)
        const bool independent = mode.find("-independent") != std::string::npos;
        out["profiles"][independent ? mode + "-n" + std::to_string(ranks) : mode] = row["profile"];
      }
      row.erase("profile");
      row.erase("step_compute_s");
      rows.push_back(row);
    }
    out["modes"][mode] = rows;
  }
  return out;
}

void print_table(const json& agg) {
  for (const auto& [mode, rows] : agg["modes"].items()) {
    std::printf("bench scaling (%s): ranks  batch/rank  samples/s  efficiency  step ms  (compute, exposed comm, data, "
                "optimizer, other)  reps\n", mode.c_str());
    for (const auto& r : rows) {
      const json& b = r["breakdown_ms"];
      std::printf("  %5d  %10d  %9.0f  %10.3f  %7.2f  (%.2f, %.2f, %.2f, %.2f, %.2f)  %zu\n", r["ranks"].get<int>(),
                  r["batch_per_rank"].get<int>(), r["samples_per_s"].get<double>(), r["efficiency"].get<double>(),
                  r["step_ms"].get<double>(), b["compute"].get<double>(), b["exposed_comm"].get<double>(),
                  b["data_wait"].get<double>(), b["optimizer"].get<double>(), b["other"].get<double>(),
                  r["repetitions"].get<size_t>());
    }
  }
  std::fflush(stdout);
}


int run_bench_scaling(Context& ctx, const TrainConfig& config, const ScalingOptions& o) {
  auto& world = *ctx.world;
  const int ranks = world.size();
  const Target target = o.target.empty() ? Target{} : parse_target(o.target);
  HPCML_CHECK_AS(ConfigError, !o.independent || o.target.empty(), "bench scaling: --independent measures steps, "
                 "not a time to target: drop --target");
  const fs::path dir = o.out;
  const std::string mode = o.mode + (o.independent ? "-independent" : "");
  // The repetition: the next free number for this mode and rank count (rank 0 decides).
  int rep = 0;
  if (world.rank() == 0) {
    fs::create_directories(dir / "points");
    while (fs::exists(dir / "points" / (mode + "-n" + std::to_string(ranks) + "-r" + std::to_string(rep) + ".json")))
      ++rep;
  }
  rep = std::stoi(world.broadcast_string(std::to_string(rep)));
  const std::string name = mode + "-n" + std::to_string(ranks) + "-r" + std::to_string(rep);
  // --independent: every rank trains alone (a group of its own), the node as loaded as in
  // the N-rank point but with no communication: the compute a rank gets among N.
  const bool alone = ranks == 1 || o.independent;
  const fs::path run_dir = dir / "runs" / (o.independent ? name + "-rank" + std::to_string(world.rank()) : name);
  const TrainConfig c = point_config(config, o, ranks, alone, run_dir);
  Context own = o.independent ? group_context(ctx, world.split(world.rank(), 0, "independent"), run_sections(c)) : ctx;
  const auto start = std::chrono::steady_clock::now();
  const TrainOutcome outcome = train_part(own, c, TrainPart());
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.independent) world.barrier();
  if (outcome.exit_code != 0) return outcome.exit_code;
  if (world.rank() != 0) return 0;

  json point = {{"mode", mode},
                {"ranks", ranks},
                {"nodes", ctx.env.num_nodes},
                {"repetition", rep},
                {"model", c.model.name},
                {"data", c.data.name},
                {"batch_per_rank", c.train.batch_size},
                {"global_batch", c.train.batch_size * ranks},
                {"threads_per_rank", ctx.threads.intra_op},
                {"backend", world.name()},
                {"transport", o.independent ? "none" : outcome.layout.value("transport", "")},
                {"overlap", outcome.layout.value("overlap", "")},
                {"wall_s", wall_s},
                {"run_dir", run_dir.string()}};
  if (o.target.empty()) {
    point.update(measure(run_dir, o, o.independent ? 1 : ranks, c.train.batch_size));
    if (o.independent) {  // rank 0's throughput, as if each of the N ranks did as well
      point["samples_per_s_rank0"] = point["samples_per_s"];
      point["samples_per_s"] = point["samples_per_s"].get<double>() * ranks;
    }
    if (alone) point["profile"] = profile_of(point, outcome);
  } else {
    const double tt = time_to_target(run_dir, target);
    point["target"] = o.target;
    point["time_to_target_s"] = tt < 0 ? json(nullptr) : json(tt);
    point.update(measure(run_dir, o, ranks, c.train.batch_size));
  }
  write_file_atomically((dir / "points" / (name + ".json")).string(), point.dump(2) + "\n");
  json agg = aggregate(dir);
  // The model's inputs: each alone-point's median repetition (`hpcml project train --profile`).
  for (const auto& [key, profile] : agg["profiles"].items())
    write_file_atomically((dir / ("profile-" + key + ".json")).string(), profile.dump(2) + "\n");
  agg.erase("profiles");
  write_file_atomically((dir / "scaling.json").string(), agg.dump(2) + "\n");
  print_table(agg);
  if (!o.target.empty()) {
    std::printf("bench scaling: %s at %d rank(s): %s\n", o.target.c_str(), ranks,
                point["time_to_target_s"].is_null() ? "not reached"
                                                    : (std::to_string(point["time_to_target_s"].get<double>()) + " s")
                                                          .c_str());
  }
  if (o.plots) run_plot_script("plot-scaling.py", dir.string(), "bench scaling", "--no-plots");
  return 0;
}

}  // namespace

void add_bench_scaling_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "scaling", "One point of a strong- or weak-scaling sweep at this launch's rank count, measured on the Trainer "
                 "with the config's model, data, reducer and optimizer: throughput, parallel efficiency against the "
                 "sweep's smallest rank count, the step breakdown (compute, exposed communication, data wait, "
                 "optimizer), optionally the time to a validation target. Points accumulate in --out, whose "
                 "scaling.json, table and plots are rebuilt each time; a 1-rank point also writes the profile that "
                 "`hpcml project train` reads (docs/scaling.md)");
  add_common_options(sub, common);
  auto o = std::make_shared<ScalingOptions>();
  sub->add_option("--mode", o->mode, "weak (train.batch_size per rank) or strong (a global batch split over ranks)")
      ->capture_default_str();
  sub->add_option("--global-batch", o->global_batch, "Strong scaling's global batch (default: train.batch_size)");
  sub->add_option("--steps", o->steps, "Timed steps, after one interval of warm-up")->capture_default_str();
  sub->add_option("--interval", o->interval, "Steps per timed interval (the point's rate is their median)")
      ->capture_default_str();
  sub->add_option("--out", o->out, "Sweep directory: points/, runs/, scaling.json, plots")->capture_default_str();
  sub->add_option("--target", o->target,
                  "Time to a validation target instead of fixed steps: METRIC>=VALUE or METRIC<=VALUE "
                  "(val_accuracy>=0.8), the config's whole run with its validation");
  sub->add_flag("--independent", o->independent,
                "Every rank trains alone (no communication) at the point's per-rank batch, so the node is as "
                "loaded as in the N-rank point: the compute a rank gets among N, written as "
                "profile-<mode>-independent-n<N>.json for `hpcml project train`");
  sub->add_flag("--plots,!--no-plots", o->plots, "Draw the PNG plots (matplotlib)")->capture_default_str();
  auto config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, config, o] {
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      return read_layers(environment, file, *config);
    };
    selected = [config, o](Context& c) {
      require_cpu(c, "hpcml bench scaling");
      return run_bench_scaling(c, *config, *o);
    };
  });
}

}  // namespace hpcml::launch::cli
