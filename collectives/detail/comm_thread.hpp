/// @file
/// The communication thread of a backend (internal).
///
/// Open MPI has no asynchronous progress thread, and MPI_Iallreduce + wait reaches
/// only 0.66-0.75x of blocking MPI_Allreduce here, so asynchronous collectives run
/// as blocking calls on this thread, in submission order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "collectives/detail/work_impl.hpp"

namespace hpcml::collectives::detail {

class CommThread {
 public:
  CommThread() = default;
  ~CommThread();  ///< drains the queue, then joins
  CommThread(const CommThread&) = delete;
  CommThread& operator=(const CommThread&) = delete;

  /// Queues `task`; the returned Work completes when it has run (its exception, if any, is kept).
  WorkPtr submit(const char* op, const std::string& comm, std::chrono::milliseconds timeout,
                 std::function<void()> task);
  /// Blocks until everything submitted so far has run, under `timeout` (deadline: ends the job).
  /// Returns at once on the communication thread itself (a task calling a synchronous collective).
  void drain(const char* op, const std::string& comm, std::chrono::milliseconds timeout);

 private:
  void run();
  struct Item {
    std::function<void()> task;
    std::shared_ptr<AsyncWork> work;
  };
  std::mutex mutex_;
  std::condition_variable queue_cv_;
  std::condition_variable idle_cv_;
  std::deque<Item> queue_;
  size_t in_flight_ = 0;  // queued + running
  bool stop_ = false;
  std::thread thread_;  // started on first submit
  std::thread::id thread_id_;
};

}  // namespace hpcml::collectives::detail
