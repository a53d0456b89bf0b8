#include "collectives/detail/poll_work.hpp"

#include <algorithm>
#include <thread>

#include "core/watchdog.hpp"

namespace hpcml::collectives::detail {

using Clock = std::chrono::steady_clock;

void Backoff::pause() {
  ++polls_;
  if (polls_ <= 64) {
    std::this_thread::yield();
    return;
  }
  const int doublings = std::min(polls_ - 64, 6);  // 10 us * 2^6 = 640 us, capped at 500
  std::this_thread::sleep_for(std::chrono::microseconds(std::min(10 << doublings, 500)));
}

PollWork::~PollWork() {
  if (!done_ && on_drop_) on_drop_();
}

bool PollWork::step() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (done_) return true;
  try {
    done_ = poll_();
  } catch (...) {
    error_ = std::current_exception();
    done_ = true;
  }
  return done_;
}

void PollWork::wait(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) timeout = default_timeout_;
  const auto start = Clock::now();
  Backoff backoff;
  while (!step()) {
    if (Clock::now() - start > timeout) deadline_expired(op_, object_, Clock::now() - start, timeout);
    backoff.pause();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (error_) std::rethrow_exception(error_);
}

bool PollWork::is_completed() { return step(); }

std::exception_ptr PollWork::exception() {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

}  // namespace hpcml::collectives::detail
