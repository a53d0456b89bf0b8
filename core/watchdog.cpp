#include "core/watchdog.hpp"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "core/mpi.hpp"

namespace hpcml {

using Clock = std::chrono::steady_clock;

void abort_job(const std::string& line, int exit_code) {
  // Once per process: two threads reaching a deadline together (a waiter and the
  // watchdog) would both enter MPI_Abort, whose error printer is not thread-safe
  // (a segfault inside orte_show_help was seen). The later caller waits for the
  // first to end the job.
  static std::atomic<bool> aborting{false};
  if (aborting.exchange(true)) {
    std::this_thread::sleep_for(std::chrono::seconds(60));
    std::_Exit(exit_code);
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  if (mpi_initialized() && world_size() > 1) {
    // mpirun may drop what a rank wrote just before MPI_Abort when it kills the job
    // first (seen: a campaign's ENOSPC line lost in 1 of 80 runs on 2 ranks). Give it
    // a moment to forward the line.
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  std::_Exit(exit_code);
}

void deadline_expired(const char* op, const std::string& object, std::chrono::duration<double> elapsed,
                      std::chrono::duration<double> timeout) {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  char line[1024];
  std::snprintf(line, sizeof line,
                "hpcml: deadline exceeded on %s (%s): %s on '%s' still waiting after %.2f s "
                "(deadline %.2f s); a peer rank likely failed or skipped it; ending the job with exit code %d",
                rank_tag().c_str(), host, op, object.c_str(), elapsed.count(), timeout.count(), kExitDeadline);
  abort_job(line, kExitDeadline);
}

struct Watchdog::State {
  struct Entry {
    std::uint64_t id;
    const char* op;
    std::string object;
    Clock::time_point start;
    Clock::time_point deadline;
  };
  std::mutex mutex;
  std::condition_variable wake;
  std::vector<Entry> entries;
  std::uint64_t next_id = 1;
  bool stop = false;
  std::thread thread;
};

Watchdog& Watchdog::instance() {
  static Watchdog watchdog;
  return watchdog;
}

Watchdog::Watchdog() : state_(new State) {
  state_->entries.reserve(64);
  state_->thread = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
  delete state_;
}

Watchdog::Guard& Watchdog::Guard::operator=(Guard&& other) noexcept {
  if (this != &other) {
    if (id_) Watchdog::instance().disarm(id_);
    id_ = other.id_;
    other.id_ = 0;
  }
  return *this;
}

Watchdog::Guard::~Guard() {
  if (id_) Watchdog::instance().disarm(id_);
}

Watchdog::Guard Watchdog::arm(const char* op, std::string object, std::chrono::duration<double> timeout) {
  if (timeout.count() <= 0) return Guard{};
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(state_->mutex);
  const std::uint64_t id = state_->next_id++;
  state_->entries.push_back({id, op, std::move(object), now,
                             now + std::chrono::duration_cast<Clock::duration>(timeout)});
  return Guard{id};
}

void Watchdog::disarm(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& entries = state_->entries;
  auto it = std::find_if(entries.begin(), entries.end(), [id](const State::Entry& e) { return e.id == id; });
  if (it != entries.end()) {
    *it = std::move(entries.back());
    entries.pop_back();
  }
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lock(state_->mutex);
  while (!state_->stop) {
    state_->wake.wait_for(lock, std::chrono::milliseconds(20));
    const auto now = Clock::now();
    for (const auto& e : state_->entries) {
      if (now >= e.deadline) {
        // abort_job never returns; the lock dies with the process.
        deadline_expired(e.op, e.object, now - e.start, e.deadline - e.start);
      }
    }
  }
}

}  // namespace hpcml
