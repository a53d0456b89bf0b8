/// @file
/// Progress of a farm: tasks done of known, rate and ETA. On a terminal a bar
/// redrawn in place; in batch logs one line every `period_s`.
#pragma once

#include <chrono>
#include <string>

namespace hpcml::launch::farm {

class Progress {
 public:
  Progress(std::string name, double period_s);
  /// `finished` tasks (done + failed) were already finished before this run.
  void start(int finished, int failed, int total);
  void set_total(int total) { total_ = total; }
  /// After each finished task: redraws the bar (throttled) or, in a log, prints
  /// when the period has passed.
  void update(int finished, int failed, int total);
  /// Periodically while nothing finishes, so a log shows the farm is alive.
  void tick(int finished, int failed, int total);
  /// The final line.
  void finish(int finished, int failed, int total);
  /// "12/40 tasks (1 failed), 3.2 tasks/s, ETA 9 s": exposed for tests.
  static std::string describe(int finished, int failed, int total, double rate);

 private:
  void print(int finished, int failed, int total, bool final);

  std::string name_;
  double period_s_;
  bool terminal_;
  int total_ = 0;
  int at_start_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace hpcml::launch::farm
