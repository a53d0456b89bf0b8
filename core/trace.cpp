#include "core/trace.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

namespace hpcml::trace {

namespace {
struct State {
  std::mutex mutex;
  std::vector<Event> events;
  std::map<std::thread::id, int> thread_ids;
  std::map<int, std::string> thread_names;
  const Clock::time_point epoch = Clock::now();
};
State& state() {
  static State s;
  return s;
}
std::atomic<bool> g_enabled{false};

int thread_index_locked(State& s) {
  auto [it, inserted] = s.thread_ids.emplace(std::this_thread::get_id(), static_cast<int>(s.thread_ids.size()));
  return it->second;
}
}  // namespace

void enable(bool on) { g_enabled.store(on); }
bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

void name_thread(const std::string& name) {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.thread_names[thread_index_locked(s)] = name;
}

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - state().epoch).count();
}

void record(std::string name, const char* category, int64_t start_us, int64_t end_us) {
  if (!enabled()) return;
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.events.push_back({std::move(name), category, start_us, end_us - start_us, thread_index_locked(s)});
}

std::vector<Event> events() {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.events;
}

void clear() {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.events.clear();
}

std::string to_json_events(int rank) {
  auto& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::string out;
  auto append = [&out](const nlohmann::json& j) { out += (out.empty() ? "" : ",\n") + j.dump(); };
  append({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"args", {{"name", "rank " + std::to_string(rank)}}}});
  for (const auto& [tid, name] : s.thread_names) {
    append({{"name", "thread_name"}, {"ph", "M"}, {"pid", rank}, {"tid", tid}, {"args", {{"name", name}}}});
  }
  for (const auto& e : s.events) {
    append({{"name", e.name},
            {"cat", e.category},
            {"ph", "X"},
            {"ts", e.start_us},
            {"dur", e.duration_us},
            {"pid", rank},
            {"tid", e.thread}});
  }
  return out;
}

}  // namespace hpcml::trace
