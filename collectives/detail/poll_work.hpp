/// @file
/// A Work completed by polling (point-to-point: MPI_Test, a matched probe) (internal).
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "collectives/work.hpp"

namespace hpcml::collectives::detail {

/// Completes when `poll` returns true. wait() polls on the calling thread, backing
/// off from yielding to 0.5 ms sleeps, and ends the job when the deadline passes
/// (a started MPI send or receive cannot be cancelled). An exception from `poll`
/// completes the Work with that exception. `on_drop` runs in the destructor when
/// the Work is dropped before completing (a send detaches its request).
class PollWork final : public Work {
 public:
  PollWork(const char* op, std::string object, std::chrono::milliseconds default_timeout,
           std::function<bool()> poll, std::function<void()> on_drop = {})
      : op_(op), object_(std::move(object)), default_timeout_(default_timeout), poll_(std::move(poll)),
        on_drop_(std::move(on_drop)) {}
  ~PollWork() override;
  void wait(std::chrono::milliseconds timeout) override;
  bool is_completed() override;
  std::exception_ptr exception() override;

 private:
  bool step();  // one poll under the mutex; true once completed

  const char* op_;
  std::string object_;
  std::chrono::milliseconds default_timeout_;
  std::function<bool()> poll_;
  std::function<void()> on_drop_;
  std::mutex mutex_;
  bool done_ = false;
  std::exception_ptr error_;
};

/// Backs off between polls: yields for the first polls, then sleeps 10 us doubling
/// to 0.5 ms, so a waiting rank answers fast and then stops burning its core.
class Backoff {
 public:
  void pause();
  void reset() { polls_ = 0; }

 private:
  int polls_ = 0;
};

}  // namespace hpcml::collectives::detail
