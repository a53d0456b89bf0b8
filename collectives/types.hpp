/// @file
/// Reduction ops, per-collective options and the dtype capability table.
#pragma once

#include <c10/core/ScalarType.h>

#include <chrono>
#include <string>
#include <vector>

namespace hpcml::collectives {

enum class ReduceOp { kSum, kAvg, kMin, kMax };
const char* to_string(ReduceOp op);
/// Every op, for tests and docs.
const std::vector<ReduceOp>& all_reduce_ops();
/// The dtypes every backend accepts: float32, float64, int32, int64, bfloat16, float16,
/// and uint8 (bytes: serialized records, masks).
const std::vector<c10::ScalarType>& supported_dtypes();
bool is_supported(c10::ScalarType dtype);
/// Averaging is defined for floating dtypes only (integers would truncate silently).
bool is_op_defined(ReduceOp op, c10::ScalarType dtype);

/// A timeout of this value means "the backend's default" (BackendOptions::timeout).
inline constexpr std::chrono::milliseconds kDefaultTimeout{-1};

struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;
  /// false: runs on the calling thread and returns a completed Work.
  /// true: queued on the backend's communication thread; wait() on the Work.
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct BroadcastOptions {
  int root = 0;
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct AllgatherOptions {
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::kSum;
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct AlltoallOptions {
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

struct BarrierOptions {
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

/// Point-to-point: any source rank or any tag in probe() and recv().
inline constexpr int kAnySource = -1;
inline constexpr int kAnyTag = -1;
/// The largest tag every backend accepts (the MPI standard guarantees MPI_TAG_UB >= 32767).
inline constexpr int kMaxTag = 32767;

struct P2POptions {
  /// false: returns when the send or receive has completed (under the deadline).
  /// true: returns at once; wait() on the Work.
  bool async = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

/// Construction options shared by all backends.
struct BackendOptions {
  /// Deadline of every collective and wait that does not give its own.
  /// Overridden by HPCML_COLLECTIVE_TIMEOUT_S and by runtime.collective_timeout_s.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  /// Name used in messages ("world", "world/trial3").
  std::string name = "world";
  /// Point-to-point messages larger than this are refused with one line (0: what the
  /// transport carries in one piece, INT_MAX bytes for MPI). Lower it to test the refusal.
  size_t max_message_bytes = 0;
};

}  // namespace hpcml::collectives
