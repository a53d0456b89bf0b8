#include "launch/farm/farm.hpp"

#include <ATen/ATen.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <set>
#include <thread>

#include "core/error.hpp"
#include "core/mpi.hpp"
#include "core/signals.hpp"
#include "core/watchdog.hpp"
#include "io/journal.hpp"
#include "launch/farm/progress.hpp"

namespace hpcml::launch::farm {

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kTagAsk = 101;    // worker -> coordinator: {"w", "result"}
constexpr int kTagReply = 102;  // coordinator -> worker: {"task"} | {"wait"} | {"stop"}

// What users read of an exception: hpcml's message (no source location), first line.
std::string one_line(const std::exception& e) {
  const auto* error = dynamic_cast<const Error*>(&e);
  std::string text = error != nullptr ? error->message() : e.what();
  return text.substr(0, text.find('\n'));
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void send_json(collectives::Backend& comm, const json& message, int dest, int tag) {
  const std::string text = message.dump();
  comm.send(text.data(), text.size(), dest, tag);
}

json recv_json(collectives::Backend& comm, collectives::Message& m) {
  const auto bytes = comm.recv_bytes(m);
  return json::parse(bytes.begin(), bytes.end());
}

// Every rank of `group` gets `root`'s message (the leader's, group rank 0, by default).
json group_broadcast(collectives::Backend& group, const json& message, int root = 0) {
  if (group.size() == 1) return message;
  return json::parse(group.broadcast_string(group.rank() == root ? message.dump() : std::string(), root));
}

Task task_of(const json& j) { return Task{j.at("id").get<std::string>(), j.at("spec")}; }
json json_of(const Task& t) { return {{"id", t.id}, {"spec", t.spec}}; }

TaskResult result_of(const json& j) {
  TaskResult r;
  r.id = j.at("id").get<std::string>();
  r.ok = j.at("event") == "done";
  if (r.ok) r.result = j.value("result", json());
  else r.error = j.value("error", "");
  r.worker = j.value("worker", -1);
  r.seconds = j.value("seconds", 0.0);
  return r;
}

// ---- Layout ----------------------------------------------------------------

struct Layout {
  int first = 0;    // lowest worker rank
  int workers = 0;  // W
  int k = 1;        // ranks per worker
  int worker_of(int rank) const {
    const int w = rank < first ? -1 : (rank - first) / k;
    return w >= 0 && w < workers ? w : -1;
  }
  int leader(int w) const { return first + w * k; }
  // Ranks in no worker (besides a non-working coordinator): they wait for the end.
  std::vector<int> spectators;
};

Layout layout_for(int size, const FarmOptions& o) {
  HPCML_CHECK_AS(ConfigError, o.ranks_per_worker >= 1, o.name, ": ranks_per_worker: expected >= 1, found ",
                 o.ranks_per_worker);
  Layout l;
  l.k = o.ranks_per_worker;
  l.first = o.coordinator_works ? 0 : 1;
  l.workers = (size - l.first) / l.k;
  HPCML_CHECK_AS(ConfigError, l.workers >= 1, o.name, ": ", size, " rank(s) cannot form one worker of ",
                 o.ranks_per_worker, " rank(s)",
                 o.coordinator_works ? "" : " besides the coordinator (coordinator_works is false)",
                 "; expected at least ", l.first + l.k, " ranks");
  for (int r = l.first + l.workers * l.k; r < size; ++r) l.spectators.push_back(r);
  return l;
}

// ---- Coordinator -----------------------------------------------------------

class Coordinator {
 public:
  Coordinator(collectives::Backend& comm, const FarmPlan& plan, const FarmOptions& options, const Layout& layout)
      : comm_(comm), plan_(plan), o_(options), layout_(layout), progress_(options.name, options.progress_s) {}

  // Reads the journal and builds the queue. Runs before any worker asks; throws on
  // a journal that disagrees with the plan.
  void prepare();
  // Hands out tasks until every worker has been told to stop.
  void run();
  FarmReport report() const;

 private:
  void add(const Task& task, bool journal);
  void handle(int worker, const json& result);
  void assign_idle();
  void finish_if_drained();
  void check_overdue() const;
  void revisit_waiting();
  void record_recovered(const TaskResult& found);
  // Every record carries its wall-clock time ("t", seconds since the epoch).
  void journal(json record) {
    record["t"] = unix_now();
    if (writer_) writer_->append(record);
  }

  collectives::Backend& comm_;
  const FarmPlan& plan_;
  const FarmOptions& o_;
  const Layout layout_;
  Progress progress_;
  std::unique_ptr<io::JournalWriter> writer_;
  std::map<std::string, json> known_;        // id -> spec
  std::set<std::string> final_;              // done or failed (and not to be retried)
  std::deque<Task> queue_;
  std::deque<Task> waiting_;                 // claimed by another job: offered again later
  std::map<int, std::pair<Task, Clock::time_point>> running_;  // worker -> task
  std::deque<int> idle_;                     // workers waiting for a task
  std::set<int> stopped_;
  bool stopping_ = false;                    // a stop signal: no more tasks handed out
  std::vector<TaskResult> results_;
  int done_ = 0, failed_ = 0;
};

void Coordinator::add(const Task& task, bool journal_it) {
  const auto known = known_.find(task.id);
  if (known != known_.end()) {
    HPCML_CHECK_AS(IoError, known->second == task.spec, o_.name, ": task '", task.id, "' has spec ",
                   task.spec.dump(), " but the journal '", o_.journal, "' recorded ", known->second.dump(),
                   " for it; a journal belongs to one set of tasks (use a new journal for new work)");
    return;
  }
  known_[task.id] = task.spec;
  if (journal_it) journal({{"event", "task"}, {"id", task.id}, {"spec", task.spec}});
  queue_.push_back(task);
  progress_.set_total(static_cast<int>(known_.size()));
}

void Coordinator::prepare() {
  std::vector<json> records;
  if (!o_.journal.empty()) {
    auto contents = io::read_journal(o_.journal);
    records = std::move(contents.records);
    if (contents.torn_tail)
      std::fprintf(stderr, "hpcml: %s: journal '%s': its last line was torn by a kill and is skipped\n",
                   o_.name.c_str(), o_.journal.c_str());
    writer_ = std::make_unique<io::JournalWriter>(o_.journal);
  }
  // Tasks the journal knows, in order; then results replayed through the plan.
  std::vector<TaskResult> replay;
  for (const auto& r : records) {
    const std::string event = r.value("event", "");
    if (event == "task") {
      add(Task{r.at("id").get<std::string>(), r.at("spec")}, false);
    } else if (event == "done" || (event == "failed" && !o_.retry_failed)) {
      TaskResult result = result_of(r);
      result.replayed = true;
      if (final_.insert(result.id).second) replay.push_back(result);
    }
  }
  journal({{"event", "farm"}, {"name", o_.name}, {"workers", layout_.workers}, {"ranks_per_worker", layout_.k},
           {"resumed", !records.empty()}});
  for (const auto& t : plan_.tasks) add(t, true);
  // Replay journaled results in order; tasks found done outside the journal join as
  // soon as the farm knows them (a result's callback may be what adds them).
  std::deque<TaskResult> todo(replay.begin(), replay.end());
  std::vector<bool> taken(plan_.already_done.size(), false);
  auto take_found = [&] {
    for (size_t i = 0; i < plan_.already_done.size(); ++i) {
      const auto& found = plan_.already_done[i];
      if (taken[i] || final_.count(found.id) || !known_.count(found.id)) continue;
      taken[i] = true;
      TaskResult result = found;
      result.replayed = true;
      json record = {{"event", result.ok ? "done" : "failed"}, {"id", result.id}, {"worker", -1}, {"seconds", 0.0},
                     {"recovered", true}};
      if (result.ok) record["result"] = result.result;
      else record["error"] = result.error;
      journal(record);
      final_.insert(result.id);
      todo.push_back(result);
    }
  };
  take_found();
  while (!todo.empty()) {
    const TaskResult r = todo.front();
    todo.pop_front();
    results_.push_back(r);
    (r.ok ? done_ : failed_)++;
    if (plan_.on_result)
      for (const auto& t : plan_.on_result(r)) add(t, true);
    take_found();
  }
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [this](const Task& t) { return final_.count(t.id); }),
               queue_.end());
  progress_.start(done_ + failed_, failed_, static_cast<int>(known_.size()));
}

void Coordinator::handle(int worker, const json& result) {
  if (!result.is_null()) {
    auto it = running_.find(worker);
    HPCML_CHECK_AS(CommError, it != running_.end(), o_.name, ": worker ", worker,
                   " reported a result but was running no task (protocol error)");
    TaskResult r;
    r.id = it->second.first.id;
    r.worker = worker;
    r.seconds = seconds_since(it->second.second);
    r.ok = result.at("ok").get<bool>();
    json record = {{"id", r.id}, {"worker", worker}, {"seconds", r.seconds}};
    if (result.value("interrupted", false)) {
      // Not final: the task runs again when the farm is re-run.
      running_.erase(it);
      record["event"] = "interrupted";
      journal(record);
      stopping_ = true;
      idle_.push_back(worker);
      finish_if_drained();
      return;
    }
    if (r.ok) {
      r.result = result.at("result");
      record["event"] = "done";
      record["result"] = r.result;
    } else {
      r.error = result.at("error").get<std::string>();
      record["event"] = "failed";
      record["error"] = r.error;
    }
    running_.erase(it);
    journal(record);
    final_.insert(r.id);
    (r.ok ? done_ : failed_)++;
    results_.push_back(r);
    progress_.update(done_ + failed_, failed_, static_cast<int>(known_.size()));
    if (!r.ok)
      std::fprintf(stderr, "hpcml: %s: task '%s' failed on worker %d: %s\n", o_.name.c_str(), r.id.c_str(), worker,
                   r.error.c_str());
    if (plan_.on_result)
      for (const auto& t : plan_.on_result(r)) add(t, true);
  }
  idle_.push_back(worker);
  assign_idle();
  finish_if_drained();
}

void Coordinator::assign_idle() {
  while (!stopping_ && !idle_.empty() && !queue_.empty()) {
    Task task = queue_.front();
    queue_.pop_front();
    if (plan_.claim && !plan_.claim(task)) {
      waiting_.push_back(task);
      continue;
    }
    const int worker = idle_.front();
    idle_.pop_front();
    journal({{"event", "start"}, {"id", task.id}, {"worker", worker}});
    running_[worker] = {task, Clock::now()};
    send_json(comm_, {{"task", json_of(task)}}, layout_.leader(worker), kTagReply);
  }
}

void Coordinator::record_recovered(const TaskResult& found) {
  TaskResult r = found;
  r.ok = true;
  journal({{"event", "done"}, {"id", r.id}, {"worker", -1}, {"seconds", 0.0}, {"result", r.result},
           {"recovered", true}});
  final_.insert(r.id);
  ++done_;
  results_.push_back(r);
  progress_.update(done_ + failed_, failed_, static_cast<int>(known_.size()));
  if (plan_.on_result)
    for (const auto& t : plan_.on_result(r)) add(t, true);
}

// Tasks another job held: done there by now (recovered), or offered for a claim again.
void Coordinator::revisit_waiting() {
  std::deque<Task> again;
  again.swap(waiting_);
  for (auto& task : again) {
    std::optional<TaskResult> found = plan_.done_elsewhere ? plan_.done_elsewhere(task) : std::nullopt;
    if (found) record_recovered(*found);
    else queue_.push_back(std::move(task));
  }
  assign_idle();
  finish_if_drained();
}

void Coordinator::finish_if_drained() {
  if (((!queue_.empty() || !waiting_.empty()) && !stopping_) || !running_.empty()) return;
  while (!idle_.empty()) {
    const int worker = idle_.front();
    idle_.pop_front();
    send_json(comm_, {{"stop", true}}, layout_.leader(worker), kTagReply);
    stopped_.insert(worker);
  }
  if (static_cast<int>(stopped_.size()) == layout_.workers)
    for (int r : layout_.spectators) send_json(comm_, {{"stop", true}}, r, kTagReply);
}

void Coordinator::check_overdue() const {
  if (o_.task_timeout_s <= 0) return;
  for (const auto& [worker, running] : running_) {
    const double s = seconds_since(running.second);
    if (s > o_.task_timeout_s) {
      abort_job("hpcml: " + rank_tag() + " " + o_.name + ": task '" + running.first.id + "' has run " +
                    std::to_string(static_cast<int>(s)) + " s on worker " + std::to_string(worker) + " (ranks " +
                    std::to_string(layout_.leader(worker)) + "-" +
                    std::to_string(layout_.leader(worker) + layout_.k - 1) + "), past task_timeout_s " +
                    std::to_string(o_.task_timeout_s) + "; ending the job",
                kExitDeadline);
    }
  }
}

void Coordinator::run() {
  // Idle workers hear from the coordinator at least this often, so their waits keep
  // a deadline however long other workers' tasks run.
  const double heartbeat_s = std::max(0.05, std::min(10.0, comm_.default_timeout().count() / 1000.0 / 4));
  auto last_heartbeat = Clock::now(), last_tick = Clock::now();
  int quiet = 0;
  while (static_cast<int>(stopped_.size()) < layout_.workers) {
    if (auto m = comm_.improbe(collectives::kAnySource, kTagAsk)) {
      const json ask = recv_json(comm_, *m);
      handle(ask.at("w").get<int>(), ask.at("result"));
      quiet = 0;
      continue;
    }
    if (!stopping_ && stop_signal() != 0) {
      stopping_ = true;
      std::fprintf(stderr, "hpcml: %s: signal %d: no more tasks are handed out; waiting for %zu running task(s)\n",
                   o_.name.c_str(), stop_signal(), running_.size());
      finish_if_drained();
    }
    if (seconds_since(last_tick) > 1.0) {
      if (plan_.tick) plan_.tick();
      if (!waiting_.empty()) revisit_waiting();
      last_tick = Clock::now();
    }
    if (seconds_since(last_heartbeat) > heartbeat_s) {
      for (int worker : idle_) send_json(comm_, {{"wait", true}}, layout_.leader(worker), kTagReply);
      for (int r : layout_.spectators) send_json(comm_, {{"wait", true}}, r, kTagReply);
      last_heartbeat = Clock::now();
      check_overdue();
      progress_.tick(done_ + failed_, failed_, static_cast<int>(known_.size()));
    }
    // Answer fast after activity; when quiet, wake at most ~500 times a second, so a
    // coordinator sharing its core with a working rank takes little from it.
    ++quiet;
    if (quiet < 64) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(quiet < 200 ? 20 : quiet < 1000 ? 200 : 2000));
  }
  progress_.finish(done_ + failed_, failed_, static_cast<int>(known_.size()));
  journal({{"event", stopping_ ? "stopped" : "end"}, {"done", done_}, {"failed", failed_},
           {"left", static_cast<int>(known_.size()) - done_ - failed_}});
}

FarmReport Coordinator::report() const {
  FarmReport r;
  r.results = results_;
  r.done = done_;
  r.failed = failed_;
  r.interrupted = stopping_;
  return r;
}

// ---- Workers ---------------------------------------------------------------

// The outcome of one task on every rank of the group, agreed: ok only when every
// rank succeeded; the error of the lowest failing rank.
json agree(collectives::Backend& group, bool ok, bool interrupted, const json& result, const std::string& error) {
  if (group.size() == 1) {
    if (interrupted) return {{"ok", false}, {"interrupted", true}, {"error", error}};
    return ok ? json{{"ok", true}, {"result", result}} : json{{"ok", false}, {"error", error}};
  }
  at::Tensor flag = at::tensor({ok ? group.size() : group.rank(), interrupted ? 1 : 0}, at::kInt);
  at::Tensor first = flag.narrow(0, 0, 1), any_interrupted = flag.narrow(0, 1, 1);
  collectives::AllreduceOptions min_op, max_op;
  min_op.op = collectives::ReduceOp::kMin;
  max_op.op = collectives::ReduceOp::kMax;
  group.allreduce(first, min_op);
  group.allreduce(any_interrupted, max_op);
  const int first_failed = first.item<int>();
  if (any_interrupted.item<int>() != 0) return {{"ok", false}, {"interrupted", true}, {"error", "interrupted"}};
  if (first_failed == group.size()) return {{"ok", true}, {"result", result}};
  // The failing rank's message to the leader.
  const json failure = group_broadcast(group, json(error), first_failed);
  return {{"ok", false}, {"error", failure.get<std::string>()}};
}

}  // namespace

namespace {

// One worker: its leader asks the coordinator for tasks and relays them to the
// group; every rank runs them. Returns how many tasks this rank ran.
int work(collectives::Backend& farm_comm, collectives::Backend& group, int worker, const TaskFunction& fn) {
  const bool leader = group.rank() == 0;
  json result;  // the last task's agreed outcome, sent with the next ask
  int ran = 0;
  while (true) {
    json reply;
    if (leader) {
      send_json(farm_comm, {{"w", worker}, {"result", result}}, 0, kTagAsk);
      // The coordinator answers with a task, a stop, or a "wait" at least every
      // heartbeat, so this receive keeps the communicator's deadline.
      do {
        auto m = farm_comm.probe(0, kTagReply);
        reply = recv_json(farm_comm, m);
        if (reply.contains("wait")) group_broadcast(group, reply);
      } while (reply.contains("wait"));
    }
    do {
      reply = group_broadcast(group, reply);
    } while (!leader && reply.contains("wait"));
    if (reply.contains("stop")) return ran;
    const Task task = task_of(reply.at("task"));
    json out;
    std::string error;
    bool ok = true, interrupted = false;
    try {
      out = fn(task, group);
    } catch (const TaskInterrupted& e) {
      ok = false;
      interrupted = true;
      error = one_line(e);
    } catch (const FarmFatal&) {
      throw;
    } catch (const std::exception& e) {
      ok = false;
      error = one_line(e);
    }
    ++ran;
    result = agree(group, ok, interrupted, out, error);
  }
}

}  // namespace

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

FarmReport run_farm(const collectives::BackendPtr& comm, const FarmPlan& plan, const TaskFunction& task,
                    const FarmOptions& options) {
  const auto start = Clock::now();
  install_stop_handlers();
  const Layout layout = layout_for(comm->size(), options);
  auto farm_comm = comm->dup(options.name);
  const int rank = farm_comm->rank();
  const int worker = layout.worker_of(rank);
  auto group = farm_comm->split(worker, rank, "worker" + std::to_string(std::max(worker, 0)));

  if (rank == 0 && !layout.spectators.empty())
    std::fprintf(stderr, "hpcml: %s: %zu rank(s) idle: %d rank(s) form %d worker(s) of %d\n", options.name.c_str(),
                 layout.spectators.size(), comm->size() - (options.coordinator_works ? 0 : 1), layout.workers,
                 layout.k);
  // The coordinator reads the journal first; every rank learns whether that failed.
  std::unique_ptr<Coordinator> coordinator;
  std::string failure;
  if (rank == 0) {
    coordinator = std::make_unique<Coordinator>(*farm_comm, plan, options, layout);
    try {
      coordinator->prepare();
    } catch (const Error& e) {
      failure = e.message();
    }
  }
  const json agreed = group_broadcast(*farm_comm, json(failure));
  HPCML_CHECK_AS(IoError, agreed.get<std::string>().empty(), agreed.get<std::string>());

  // The coordinator's loop: on a thread when this rank also works. An error there
  // (a journal write that fails, a plan callback that throws) cannot reach the
  // workers waiting on it, so it ends the job with its one line.
  auto coordinate = [&] {
    try {
      coordinator->run();
    } catch (const std::exception& e) {
      abort_job("hpcml: " + rank_tag() + " " + options.name + ": coordinator failed: " + one_line(e), kExitError);
    }
  };
  std::thread coordinator_thread;
  FarmReport report;
  if (rank == 0 && worker >= 0) coordinator_thread = std::thread(coordinate);
  if (worker >= 0) {
    try {
      report.tasks_run = work(*farm_comm, *group, worker, task);
    } catch (const std::exception& e) {
      // Not a task's failure (those are reported): the farm itself broke here.
      if (coordinator_thread.joinable()) abort_job("hpcml: " + rank_tag() + " " + one_line(e), kExitError);
      throw;
    }
  } else if (rank == 0) {
    coordinate();
  } else {
    // A spectator: the coordinator's heartbeats keep this wait under the deadline.
    for (json reply; !reply.contains("stop");) {
      auto m = farm_comm->probe(0, kTagReply);
      reply = recv_json(*farm_comm, m);
    }
  }
  if (coordinator_thread.joinable()) coordinator_thread.join();
  if (coordinator) {
    const int ran = report.tasks_run;
    report = coordinator->report();
    report.tasks_run = ran;
  }
  report.workers = layout.workers;
  // Every rank learns whether the farm was stopped by a signal (the coordinator knows).
  at::Tensor stopped = at::tensor({report.interrupted ? 1 : 0}, at::kInt);
  collectives::BroadcastOptions from_coordinator;
  farm_comm->broadcast(stopped, from_coordinator);
  report.interrupted = stopped.item<int>() != 0;
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace hpcml::launch::farm
