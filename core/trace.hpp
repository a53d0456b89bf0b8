/// @file
/// A Chrome-trace timeline of each rank's phases (chrome://tracing, Perfetto).
///
/// Recording is off until enable(); then `Span` objects and `record()` append
/// complete events ("ph": "X") with microsecond timestamps from one steady clock.
/// Thread-safe. Each thread gets a small id and, optionally, a name.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace hpcml::trace {

using Clock = std::chrono::steady_clock;

struct Event {
  std::string name;
  std::string category;
  int64_t start_us = 0;  ///< since the process's trace epoch
  int64_t duration_us = 0;
  int thread = 0;
};

void enable(bool on = true);
bool enabled();
/// Names the calling thread in the trace ("main", "comm").
void name_thread(const std::string& name);
/// Microseconds since the trace epoch.
int64_t now_us();
/// Appends a complete event on the calling thread (no-op when disabled).
void record(std::string name, const char* category, int64_t start_us, int64_t end_us);
/// A copy of the events so far.
std::vector<Event> events();
void clear();
/// This process's events as Chrome trace JSON events with "pid": `rank`
/// (a JSON array's elements, without brackets), including thread names.
std::string to_json_events(int rank);

/// Records [construction, destruction) as one event.
class Span {
 public:
  Span(std::string name, const char* category) : name_(std::move(name)), category_(category), start_(now_us()) {}
  ~Span() { record(std::move(name_), category_, start_, now_us()); }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  std::string name_;
  const char* category_;
  int64_t start_;
};

}  // namespace hpcml::trace
