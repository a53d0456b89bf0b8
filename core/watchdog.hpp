/// @file
/// Deadlines for blocking operations that cannot be cancelled.
///
/// An MPI collective that has started cannot be cancelled, and Open MPI 4.1 has no
/// fault tolerance, so a missed deadline cannot be survived: the watchdog prints one
/// line naming the rank, the operation, the object and the elapsed time, then ends
/// the whole job with MPI_Abort and exit code kExitDeadline.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace hpcml {

/// Process exit codes hpcml uses (documented in docs/troubleshooting.md).
inline constexpr int kExitError = 1;     ///< a runtime error (bad data, failed call)
inline constexpr int kExitUsage = 2;     ///< bad command line or config
inline constexpr int kExitDeadline = 86; ///< a collective or wait missed its deadline
inline constexpr int kExitPreempted = 75; ///< stopped by SIGUSR1/SIGTERM after a checkpoint: requeue

/// Prints `line` to stderr and ends the job: MPI_Abort on MPI_COMM_WORLD when MPI
/// is running, std::_Exit otherwise. Safe to call from any thread.
[[noreturn]] void abort_job(const std::string& line, int exit_code);

/// Ends the job because `op` on `object` has run for `elapsed` past its `timeout`.
[[noreturn]] void deadline_expired(const char* op, const std::string& object,
                                   std::chrono::duration<double> elapsed,
                                   std::chrono::duration<double> timeout);

/// A background thread that ends the job when an armed deadline passes.
///
/// Thread-safe. Arming costs a mutex and a vector push (no allocation once warm),
/// so it can cover every blocking collective. The thread checks every 20 ms.
class Watchdog {
 public:
  static Watchdog& instance();

  /// Disarms its deadline when destroyed (RAII). Movable, not copyable.
  class Guard {
   public:
    Guard() = default;
    Guard(Guard&& other) noexcept : id_(other.id_) { other.id_ = 0; }
    Guard& operator=(Guard&& other) noexcept;
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    friend class Watchdog;
    explicit Guard(std::uint64_t id) : id_(id) {}
    std::uint64_t id_ = 0;
  };

  /// Arms a deadline of `timeout` from now for `op` on `object`. `op` must be a
  /// string literal (it is kept by pointer); a non-positive timeout arms nothing.
  [[nodiscard]] Guard arm(const char* op, std::string object, std::chrono::duration<double> timeout);

 private:
  Watchdog();
  ~Watchdog();
  void disarm(std::uint64_t id);
  void run();
  struct State;
  State* state_;
};

}  // namespace hpcml
