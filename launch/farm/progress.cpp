#include "launch/farm/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <sstream>

namespace hpcml::launch::farm {

using Clock = std::chrono::steady_clock;

Progress::Progress(std::string name, double period_s)
    : name_(std::move(name)), period_s_(period_s), terminal_(isatty(STDERR_FILENO) != 0) {}

void Progress::start(int finished, int failed, int total) {
  at_start_ = finished;
  total_ = total;
  start_ = last_print_ = Clock::now();
  if (!terminal_) print(finished, failed, total, false);
}

std::string Progress::describe(int finished, int failed, int total, double rate) {
  std::ostringstream out;
  out << finished << "/" << total << " tasks";
  if (failed > 0) out << " (" << failed << " failed)";
  if (rate > 0) {
    out.precision(rate < 10 ? 2 : 0);
    out << std::fixed << ", " << rate << " tasks/s";
    const double eta = (total - finished) / rate;
    out.precision(0);
    if (finished < total) out << ", ETA " << std::ceil(eta) << " s";
  }
  return out.str();
}

void Progress::print(int finished, int failed, int total, bool final) {
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  const double rate = elapsed > 0 && finished > at_start_ ? (finished - at_start_) / elapsed : 0;
  const std::string text = describe(finished, failed, total, rate);
  if (terminal_) {
    constexpr int kWidth = 30;
    const int filled = total > 0 ? kWidth * finished / total : 0;
    std::fprintf(stderr, "\r%s [%s%s] %s   %s", name_.c_str(), std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), text.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(stderr, "hpcml: %s: %s%s\n", name_.c_str(), text.c_str(), final ? " (finished)" : "");
  }
  std::fflush(stderr);
  last_print_ = Clock::now();
}

void Progress::update(int finished, int failed, int total) {
  const double since = std::chrono::duration<double>(Clock::now() - last_print_).count();
  if (since >= (terminal_ ? 0.2 : period_s_)) print(finished, failed, total, false);
}

void Progress::tick(int finished, int failed, int total) { update(finished, failed, total); }

void Progress::finish(int finished, int failed, int total) { print(finished, failed, total, true); }

}  // namespace hpcml::launch::farm
