/// @file
/// Work implementations shared by the backends (internal).
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>

#include "collectives/work.hpp"

namespace hpcml::collectives::detail {

/// A Work that finished before it was returned (synchronous calls). Stateless.
class CompletedWork final : public Work {
 public:
  void wait(std::chrono::milliseconds) override {}
  bool is_completed() override { return true; }
  std::exception_ptr exception() override { return nullptr; }
};
/// The one shared CompletedWork: synchronous calls allocate nothing for their handle.
WorkPtr completed_work();

/// A Work completed by another thread. wait() checks its own deadline.
class AsyncWork final : public Work {
 public:
  AsyncWork(const char* op, std::string comm, std::chrono::milliseconds default_timeout)
      : op_(op), comm_(std::move(comm)), default_timeout_(default_timeout) {}
  void wait(std::chrono::milliseconds timeout) override;
  bool is_completed() override;
  std::exception_ptr exception() override;
  /// Called once by the thread that ran the collective.
  void finish(std::exception_ptr error);

 private:
  const char* op_;
  std::string comm_;
  std::chrono::milliseconds default_timeout_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::exception_ptr error_;
};

}  // namespace hpcml::collectives::detail
