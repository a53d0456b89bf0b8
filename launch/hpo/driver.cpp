#include "launch/hpo/driver.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/watchdog.hpp"
#include "launch/base_config.hpp"
#include "launch/farm/farm.hpp"
#include "launch/plot_script.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch::hpo_driver {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Rank 0: study.json holds the study's identity, start and groups. A new study writes it; a
// re-run must match it. Returns the study's start (unix seconds).
double open_study(const HpoConfig& c, int workers) {
  const fs::path path = fs::path(c.hpo.study_dir) / "study.json";
  const json identity = study_identity(c);
  if (!fs::exists(path)) {
    fs::create_directories(path.parent_path());
    const double now = unix_now();
    write_file_atomically(path.string(), json{{"identity", identity},
                                              {"started_unix", now},
                                              {"workers", workers},
                                              {"ranks_per_trial", c.hpo.ranks_per_trial}}
                                                 .dump(2) +
                                             "\n");
    return now;
  }
  std::ifstream in(path);
  const json kept = json::parse(in, nullptr, /*allow_exceptions=*/false);
  check_identity(kept, identity, path.string(), "hpo.study_dir", c.hpo.study_dir, "a study");
  HPCML_CHECK_AS(ConfigError, kept.value("workers", workers) == workers,
                 "config error: key 'hpo.ranks_per_trial': the study in '", c.hpo.study_dir, "' ran on ",
                 kept.value("workers", 0), " group(s); resume it on as many (ranks / hpo.ranks_per_trial), found ",
                 workers);
  return kept.value("started_unix", unix_now());
}

// The best of `metric` over the validation lines of a trial's metrics.jsonl up to `step`
// (hpo.scheduler.rung_value: best). The trainer truncates the file to the step it resumes from, so
// the lines are this trial's history, whatever parts and restarts it took.
double best_so_far(const fs::path& metrics, const std::string& metric, hpo::Direction direction, int64_t step,
                   double last) {
  double best = last;
  std::ifstream in(metrics);
  std::string text;
  while (std::getline(in, text)) {
    const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!line.is_object() || !line.contains(metric) || !line[metric].is_number()) continue;
    if (line.value("step", int64_t{0}) > step) continue;
    const double value = line[metric].get<double>();
    if (std::isfinite(value) && hpo::is_better(value, best, direction)) best = value;
  }
  return best;
}

// One part of a trial on every rank of `group`: its training from its newest checkpoint up to
// the part's end; the leader returns the metric there.
json run_part(const HpoConfig& c, const Context& world, const farm::Task& task, collectives::Backend& group) {
  const int64_t n = task.spec.at("trial").get<int64_t>();
  const int64_t until = task.spec.at("until").get<int64_t>();
  const TrainConfig config = trial_config(c, c.space.params_from_json(task.spec.at("params")), n);
  Context context = group_context(world, group.shared_from_this(), run_sections(config));
  TrainPart part;
  part.until = until;
  part.steps = c.hpo.scheduler.resource == "steps";
  part.validate_at_end = true;
  const double started = unix_now();
  const TrainOutcome out = train_part(context, config, part);
  if (out.exit_code == kExitPreempted) HPCML_THROW(farm::TaskInterrupted, "trial ", n, " stopped by a signal");
  HPCML_CHECK(out.exit_code == 0, "trial ", n, ": ", out.failure);
  if (group.rank() != 0) return json::object();
  const json& line = out.validation;
  if (!line.is_object() || !line.contains(c.hpo.metric) || !line[c.hpo.metric].is_number()) {
    std::string keys;
    for (const auto& [key, value] : line.items()) {
      if (key.rfind("val_", 0) == 0 && value.is_number()) keys += (keys.empty() ? "" : ", ") + key;
    }
    HPCML_THROW(farm::FarmFatal, "config error: key 'hpo.metric': expected a key of the trials' validation line (",
                keys, "), found '", c.hpo.metric, "'");
  }
  const double value = line[c.hpo.metric].get<double>();
  HPCML_CHECK(std::isfinite(value), "trial ", n, ": the metric ", c.hpo.metric, " is ", value);
  json result = {{"value", value},
                 {"step", out.step},
                 {"until", until},
                 {"started_unix", started},
                 {"finished_unix", unix_now()},
                 {"validation", line}};
  if (c.hpo.scheduler.rung_value == "best" && ends_at_rung(c, until)) {
    result["rung_value"] =
        best_so_far(fs::path(config.run.dir) / "metrics.jsonl", c.hpo.metric, c.direction, out.step, value);
  }
  return result;
}

// The groups' idle share of this run's wall time up to the final drain (the last hand-out):
// from each completed part's start and end on its group. A failed part has no times in its
// result and counts as idle (an overestimate, by its set-up and the steps before it failed).
double idle_fraction(const std::vector<farm::TaskResult>& results, int workers, double run_start) {
  struct Span {
    double begin, end;
  };
  std::vector<Span> spans;
  for (const auto& r : results) {
    if (r.replayed) continue;
    if (r.ok && r.result.contains("started_unix")) {
      spans.push_back({r.result["started_unix"].get<double>(), r.result["finished_unix"].get<double>()});
    }
  }
  double drain = run_start;
  for (const auto& s : spans) drain = std::max(drain, s.begin);
  const double window = drain - run_start;
  if (window <= 0 || workers <= 0 || spans.empty()) return -1;
  double busy = 0;
  for (const auto& s : spans) busy += std::max(0.0, std::min(drain, s.end) - std::max(run_start, s.begin));
  return std::clamp(1.0 - busy / (window * workers), 0.0, 1.0);
}

void draw_plots(const HpoConfig& c) { run_plot_script("plot-hpo.py", c.hpo.study_dir, "hpo", "hpo.plots: false"); }

}  // namespace

int run_study(Context& ctx, const HpoConfig& c) {
  const int size = ctx.world->size();
  const int k = c.hpo.ranks_per_trial;
  HPCML_CHECK_AS(ConfigError, k <= size, "config error: key 'hpo.ranks_per_trial': expected at most the job's ", size,
                 " rank(s), found ", k);
  const int workers = size / k;
  const bool leader = ctx.world->rank() == 0;
  const double run_start = unix_now();
  std::string failure;
  double started = run_start;
  if (leader) {
    try {
      started = open_study(c, workers);
    } catch (const Error& e) {
      failure = e.message();
    } catch (const std::exception& e) {  // the file system's (a name too long, no permission)
      failure = "hpo: cannot open the study in '" + c.hpo.study_dir + "': " + e.what();
    }
  }
  failure = ctx.world->broadcast_string(failure);
  HPCML_CHECK_AS(ConfigError, failure.empty(), failure);

  std::unique_ptr<Study> study;
  farm::FarmPlan plan;
  if (leader) {
    study = std::make_unique<Study>(c, started);
    plan.tasks = study->start(workers);
    plan.on_result = [&study](const farm::TaskResult& r) { return study->on_result(r); };
    HPCML_LOG_INFO("hpo: {} trial(s) of {} ({}, scheduler {}) on {} group(s) of {} rank(s){}; study in {}",
                   c.hpo.trials, c.hpo.metric, c.hpo.sampler, c.hpo.scheduler.name, workers, k,
                   size % k ? fmt::format(", {} rank(s) idle", size % k) : std::string(), c.hpo.study_dir);
  }
  farm::FarmOptions options;
  options.ranks_per_worker = k;
  options.journal = (fs::path(c.hpo.study_dir) / "journal.jsonl").string();
  options.task_timeout_s = c.hpo.trial_timeout_s;
  options.name = "hpo";
  const Context& world = ctx;
  const auto report = farm::run_farm(
      ctx.world, plan,
      [&](const farm::Task& task, collectives::Backend& group) { return run_part(c, world, task, group); }, options);
  if (leader) {
    StudyFacts facts;
    facts.workers = workers;
    facts.ranks_per_trial = k;
    facts.idle_ranks = size % k;
    facts.wall_s = unix_now() - started;
    facts.idle_fraction = idle_fraction(report.results, workers, run_start);
    facts.interrupted = report.interrupted;
    write_outputs(c, study->trials(), facts);
    const Trial* best = best_trial(study->trials(), c.direction);
    std::printf(
        "hpo: %zu trial(s) in %s; best %s\n", study->trials().size(), c.hpo.study_dir.c_str(),
        best ? fmt::format("trial {} {} = {} (best.yaml)", best->record.number, c.hpo.metric, *best->record.value)
                   .c_str()
             : "none yet (no trial completed)");
    std::fflush(stdout);
    if (c.hpo.plots && !report.interrupted) draw_plots(c);
  }
  ctx.world->barrier();
  return report.interrupted ? kExitPreempted : 0;
}

}  // namespace hpcml::launch::hpo_driver
