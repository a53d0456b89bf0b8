#include "launch/ensemble/driver.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "core/watchdog.hpp"
#include "io/journal.hpp"
#include "launch/ensemble/bootstrap.hpp"
#include "launch/base_config.hpp"
#include "launch/farm/farm.hpp"
#include "launch/train/pack.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch::ensemble {

namespace fs = std::filesystem;
using nlohmann::json;
using farm::unix_now;

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return json();
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// Rank 0: ensemble.json holds the ensemble's identity. A new ensemble writes it; a re-run must
// match it (members may grow).
void open_ensemble(const EnsembleConfig& c) {
  const fs::path path = fs::path(c.ensemble.dir) / "ensemble.json";
  const json id = identity(c);
  json kept;
  if (fs::exists(path)) {
    kept = read_json(path);
    check_identity(kept, id, path.string(), "ensemble.dir", c.ensemble.dir, "an ensemble");
    if (kept.value("members", 0) >= c.ensemble.members) return;
  } else {
    const fs::path dir = c.ensemble.dir;
    HPCML_CHECK_AS(ConfigError, !fs::exists(dir) || (fs::is_directory(dir) && fs::is_empty(dir)),
                   "config error: key 'ensemble.dir': expected a new or empty directory, or an ensemble's (with its "
                   "ensemble.json), found '", c.ensemble.dir, "' (", fs::is_directory(dir) ? "a directory holding "
                   "other files" : "not a directory", "); choose another ensemble.dir");
    fs::create_directories(path.parent_path());
    kept = {{"identity", id}, {"created_unix", unix_now()}};
  }
  json variations = json::array();
  for (const auto& v : c.variations) variations.push_back(v.name);
  kept["members"] = c.ensemble.members;
  kept["variations"] = variations;
  kept["pack"] = c.ensemble.pack;
  write_file_atomically(path.string(), kept.dump(2) + "\n");
}

// Test hooks (tests/cli/test_ensemble.py; never set them in production):
// HPCML_TEST_ENSEMBLE_CRASH=<task id> SIGKILLs the process that starts that task, as a crash would;
// HPCML_TEST_ENSEMBLE_STALL=<task id> holds that task for up to 120 s, so a test can kill the
// ensemble while it is surely unfinished.
void test_hooks(const std::string& id) {
  const char* crash = std::getenv("HPCML_TEST_ENSEMBLE_CRASH");
  if (crash != nullptr && id == crash) ::raise(SIGKILL);
  const char* stall = std::getenv("HPCML_TEST_ENSEMBLE_STALL");
  if (stall != nullptr && id == stall) std::this_thread::sleep_for(std::chrono::seconds(120));
}

TaskMembers task_members(const json& spec) {
  return {spec.at("variation").get<size_t>(), spec.at("first").get<int64_t>(), spec.at("count").get<int64_t>()};
}

bool packed(const TaskMembers& t) { return t.count > 1; }

// The run a task trains: one member's, or a pack's in <dir>/<variation>/pack-<first>.
TrainConfig task_config(const EnsembleConfig& c, const TaskMembers& t) {
  TrainConfig config = member_config(c, t.variation, t.first);
  if (packed(t)) {
    config.train.pack = static_cast<int>(t.count);
    config.run.dir = (fs::path(c.ensemble.dir) / c.variations[t.variation].name / fmt::format("pack-{}", t.first))
                         .string();
  }
  return config;
}

// Rank 0 of the group, after a pack completed: <variation>/member-<k> -> pack-<first>/member-<j>.
void link_pack_members(const EnsembleConfig& c, const TaskMembers& t) {
  for (int64_t j = 0; j < t.count; ++j) {
    const fs::path link = member_dir(c.ensemble.dir, c.variations[t.variation].name, t.first + j);
    const fs::path target = fs::path(fmt::format("pack-{}", t.first)) / fmt::format("member-{}", j);
    if (fs::is_symlink(link) || fs::exists(link)) continue;
    const fs::path tmp = link.string() + ".tmp." + std::to_string(::getpid());
    fs::remove(tmp);
    fs::create_symlink(target, tmp);
    fs::rename(tmp, link);
  }
}

// Member `j` of the task's run: its validation metrics (a pack's summary lists every member's).
json member_validation(const json& summary, const TaskMembers& t, int64_t j) {
  const json validation = summary.value("validation", json());
  if (!packed(t) || !validation.is_object()) return validation;
  const json members = validation.value("members", json());
  if (members.is_array() && j < static_cast<int64_t>(members.size())) return members[static_cast<size_t>(j)];
  return validation;
}

// Rank 0 of the group, before training: the members' bootstrap resamples. Every rank of the
// group learns the outcome.
void prepare_resamples(const EnsembleConfig& c, const TaskMembers& t, collectives::Backend& group) {
  std::string error;
  if (group.rank() == 0 && c.ensemble.bootstrap) {
    try {
      const TrainConfig v = variation_config(c, t.variation);
      for (int64_t k = t.first; k < t.first + t.count; ++k) {
        write_bootstrap(v.data.files, bootstrap_file(c.ensemble.dir, c.variations[t.variation].name, k),
                        bootstrap_seed(c.ensemble.seed, t.variation, k));
      }
    } catch (const Error& e) {
      error = e.message();
    }
  }
  error = group.broadcast_string(error);
  HPCML_CHECK_AS(farm::FarmFatal, error.empty(), error);
}

// One task on every rank of `group`: a member's (or a pack's) training from its newest
// checkpoint to its end; the leader returns each member's validation metrics.
json run_task(const EnsembleConfig& c, const Context& world, const farm::Task& task, collectives::Backend& group) {
  const TaskMembers t = task_members(task.spec);
  const TrainConfig config = task_config(c, t);
  prepare_resamples(c, t, group);
  if (group.rank() == 0) test_hooks(task.id);
  Context context = group_context(world, group.shared_from_this(), run_sections(config));
  const double started = unix_now();
  const TrainOutcome out = train_part(context, config, TrainPart());
  if (out.exit_code == kExitPreempted) HPCML_THROW(farm::TaskInterrupted, task.id, " stopped by a signal");
  HPCML_CHECK(out.exit_code == 0, task.id, " diverged (not retried with the same seed): ", out.failure);
  if (group.rank() != 0) return json::object();
  if (packed(t)) link_pack_members(c, t);
  const json summary = read_json(fs::path(config.run.dir) / "summary.json");
  json members = json::array();
  for (int64_t j = 0; j < t.count; ++j) {
    members.push_back({{"member", t.first + j}, {"validation", member_validation(summary, t, j)}});
  }
  return {{"members", members}, {"steps", out.total_steps}, {"started_unix", started}, {"finished_unix", unix_now()}};
}

struct JournalState {
  std::map<std::string, int> crashes;  // starts without an end
  std::set<std::string> ended;         // done or failed
};

JournalState read_state(const std::string& journal) {
  JournalState s;
  std::map<std::string, int> starts, ends;
  for (const auto& r : io::read_journal(journal).records) {
    const std::string event = r.value("event", ""), id = r.value("id", "");
    if (event == "start") ++starts[id];
    if (event == "done" || event == "failed" || event == "interrupted") {
      if (r.value("worker", 0) >= 0) ++ends[id];  // recovered results (worker -1) ran no attempt
      if (event != "interrupted") s.ended.insert(id);
    }
  }
  for (const auto& [id, n] : starts) {
    const int crashed = n - ends[id];
    if (crashed > 0) s.crashes[id] = crashed;
  }
  return s;
}

// Rank 0: the tasks, and those whose crashes exhausted ensemble.max_retries, as failed results.
farm::FarmPlan make_plan(const EnsembleConfig& c, const JournalState& state) {
  farm::FarmPlan plan;
  for (const auto& t : all_tasks(c)) {
    const std::string id = task_id(c, t);
    plan.tasks.push_back({id, {{"variation", t.variation}, {"first", t.first}, {"count", t.count}}});
    const auto crashed = state.crashes.find(id);
    if (crashed == state.crashes.end() || state.ended.count(id) || crashed->second <= c.ensemble.max_retries) continue;
    plan.already_done.push_back(
        {id, false, {},
         fmt::format("crashed: its process died {} time(s) while training it (ensemble.max_retries {})",
                     crashed->second, c.ensemble.max_retries),
         -1, 0, true});
  }
  return plan;
}

// One summary entry per member of task `t`.
void add_members(const EnsembleConfig& c, const TaskMembers& t, const farm::TaskResult* r, int crashes, json& out) {
  for (int64_t j = 0; j < t.count; ++j) {
    const int64_t k = t.first + j;
    json m = {{"variation", c.variations[t.variation].name}, {"member", k},
              {"dir", member_dir(c.ensemble.dir, c.variations[t.variation].name, k)},
              {"task", task_id(c, t)}, {"crashes", crashes}};
    if (r == nullptr) {
      m["state"] = "pending";
    } else if (r->ok) {
      m["state"] = "complete";
      const json members = r->result.value("members", json::array());
      const json validation = j < static_cast<int64_t>(members.size()) ? members[static_cast<size_t>(j)].value(
                                                                             "validation", json())
                                                                       : json();
      m["validation"] = validation;
      m["val_loss"] = validation.is_object() ? validation.value("val_loss", json()) : json();
    } else {
      m["state"] = r->error.rfind("crashed", 0) == 0 ? "crashed" : "failed";
      m["error"] = r->error;
    }
    out.push_back(m);
  }
}

// Rank 0: <dir>/summary.json, and the line printed.
void write_summary(const EnsembleConfig& c, const farm::FarmReport& report, const JournalState& state, double wall_s) {
  std::map<std::string, const farm::TaskResult*> results;
  for (const auto& r : report.results) results[r.id] = &r;
  json members = json::array();
  for (const auto& t : all_tasks(c)) {
    const std::string id = task_id(c, t);
    const auto r = results.find(id);
    const auto crashed = state.crashes.find(id);
    add_members(c, t, r == results.end() ? nullptr : r->second, crashed == state.crashes.end() ? 0 : crashed->second,
                members);
  }
  json variations = json::object();
  std::map<std::string, int> totals;
  for (const auto& m : members) {
    json& v = variations[m["variation"].get<std::string>()];
    if (v.is_null()) v = json::object();
    const std::string state_name = m["state"];
    v[state_name] = v.value(state_name, 0) + 1;
    ++totals[state_name];
  }
  const json summary = {{"dir", c.ensemble.dir},          {"members_per_variation", c.ensemble.members},
                        {"pack", c.ensemble.pack},        {"ranks_per_member", c.ensemble.ranks_per_member},
                        {"wall_s", wall_s},               {"interrupted", report.interrupted},
                        {"counts", totals},               {"variations", variations},
                        {"members", members}};
  write_file_atomically((fs::path(c.ensemble.dir) / "summary.json").string(), summary.dump(2) + "\n");
  std::printf("ensemble: %zu member(s) in %s: %d complete, %d failed, %d crashed, %d pending (summary.json)\n",
              members.size(), c.ensemble.dir.c_str(), totals["complete"], totals["failed"], totals["crashed"],
              totals["pending"]);
  std::fflush(stdout);
}

}  // namespace

std::map<std::string, int> crashed_attempts(const std::string& journal) { return read_state(journal).crashes; }

int run_ensemble(Context& ctx, const EnsembleConfig& c) {
  const int size = ctx.world->size();
  const int k = c.ensemble.ranks_per_member;
  HPCML_CHECK_AS(ConfigError, k <= size, "config error: key 'ensemble.ranks_per_member': expected at most the job's ",
                 size, " rank(s), found ", k);
  const int workers = size / k;
  const bool leader = ctx.world->rank() == 0;
  const double start = unix_now();
  const std::string journal = (fs::path(c.ensemble.dir) / "journal.jsonl").string();
  std::string failure;
  JournalState state;
  farm::FarmPlan plan;
  if (leader) {
    try {
      open_ensemble(c);
      state = read_state(journal);
      plan = make_plan(c, state);
    } catch (const Error& e) {
      failure = e.message();
    } catch (const fs::filesystem_error& e) {
      failure = "ensemble: ensemble.dir '" + c.ensemble.dir + "': " + e.code().message();
    }
  }
  failure = ctx.world->broadcast_string(failure);
  HPCML_CHECK_AS(ConfigError, failure.empty(), failure);
  if (leader) {
    HPCML_LOG_INFO("ensemble: {} member(s) x {} variation(s){} on {} group(s) of {} rank(s){}; in {}",
                   c.ensemble.members, c.variations.size(),
                   c.ensemble.pack > 1 ? fmt::format(" in packs of {}", c.ensemble.pack) : std::string(), workers, k,
                   size % k ? fmt::format(", {} rank(s) idle", size % k) : std::string(), c.ensemble.dir);
  }
  farm::FarmOptions options;
  options.ranks_per_worker = k;
  options.journal = journal;
  options.task_timeout_s = c.ensemble.member_timeout_s;
  options.name = "ensemble";
  const Context& world = ctx;
  const auto report = farm::run_farm(
      ctx.world, plan, [&](const farm::Task& task, collectives::Backend& group) { return run_task(c, world, task, group); },
      options);
  if (leader) write_summary(c, report, state, unix_now() - start);
  ctx.world->barrier();
  return report.interrupted ? kExitPreempted : 0;
}

}  // namespace hpcml::launch::ensemble
