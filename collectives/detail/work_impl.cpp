#include "collectives/detail/work_impl.hpp"

#include "collectives/detail/comm_thread.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"

namespace hpcml::collectives::detail {

using Clock = std::chrono::steady_clock;

WorkPtr completed_work() {
  static const WorkPtr done = std::make_shared<CompletedWork>();
  return done;
}

void AsyncWork::wait(std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) timeout = default_timeout_;
  const auto start = Clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  if (!done_cv_.wait_for(lock, timeout, [this] { return done_; })) {
    deadline_expired(op_, comm_, Clock::now() - start, timeout);
  }
  if (error_) std::rethrow_exception(error_);
}

bool AsyncWork::is_completed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

std::exception_ptr AsyncWork::exception() {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

void AsyncWork::finish(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    error_ = std::move(error);
  }
  done_cv_.notify_all();
}

CommThread::~CommThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

WorkPtr CommThread::submit(const char* op, const std::string& comm, std::chrono::milliseconds timeout,
                           std::function<void()> task) {
  auto work = std::make_shared<AsyncWork>(op, comm, timeout);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!thread_.joinable()) {
      thread_ = std::thread([this] { run(); });
      thread_id_ = thread_.get_id();
    }
    queue_.push_back({std::move(task), work});
    ++in_flight_;
  }
  queue_cv_.notify_one();
  return work;
}

void CommThread::drain(const char* op, const std::string& comm, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (std::this_thread::get_id() == thread_id_) return;
  if (in_flight_ == 0) return;
  const auto start = Clock::now();
  if (!idle_cv_.wait_for(lock, timeout, [this] { return in_flight_ == 0; })) {
    deadline_expired(op, comm + " (waiting for queued collectives)", Clock::now() - start, timeout);
  }
}

void CommThread::run() {
  trace::name_thread("comm");
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    // Exceptions are kept in the Work and rethrown by wait(); none escapes the thread.
    std::exception_ptr error;
    try {
      item.task();
    } catch (...) {
      error = std::current_exception();
    }
    item.work->finish(error);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --in_flight_;
    }
    idle_cv_.notify_all();
  }
}

}  // namespace hpcml::collectives::detail
