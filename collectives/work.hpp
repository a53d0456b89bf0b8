/// @file
/// The handle a collective returns (c10d's Work, reduced to what hpcml needs).
#pragma once

#include <chrono>
#include <exception>
#include <memory>

#include "collectives/types.hpp"

namespace hpcml::collectives {

/// Completion handle of one collective.
///
/// Thread-safe. A Work does not own the tensors of its collective: the caller
/// keeps them alive and untouched until wait() returns.
class Work {
 public:
  virtual ~Work() = default;
  /// Blocks until the collective has completed and rethrows its exception, if any.
  /// A started MPI collective cannot be cancelled, so when `timeout` (default: the
  /// backend's) passes first, the job ends with the deadline message (exit code
  /// kExitDeadline); wait() never returns late and never hangs.
  virtual void wait(std::chrono::milliseconds timeout = kDefaultTimeout) = 0;
  /// True once the collective has finished, successfully or not. Never blocks.
  virtual bool is_completed() = 0;
  /// The collective's failure, or null. Meaningful once is_completed().
  virtual std::exception_ptr exception() = 0;
};

using WorkPtr = std::shared_ptr<Work>;

}  // namespace hpcml::collectives
