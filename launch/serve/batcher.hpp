/// @file
/// The dynamic batcher of one served model: when to run a batch, and the queue
/// the receiver fills and the model instances drain.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "launch/serve/protocol.hpp"

namespace hpcml::launch::serve {

/// Default rows per batch at most (BatchPolicy, and a model's config.yaml).
inline constexpr int kDefaultMaxBatchSize = 256;

/// How a model's requests are grouped (from its config.yaml: ModelConfig::batch_policy()).
struct BatchPolicy {
  std::int64_t max_batch_size = kDefaultMaxBatchSize;  ///< rows per batch at most
  bool dynamic = true;                   ///< false: one request per batch
  std::vector<int> preferred;            ///< ascending; run at once when a prefix of the queue sums to one
  std::chrono::microseconds max_delay{0};  ///< how long the oldest request may wait for a fuller batch
};

/// What to do now with a queue of requests of `rows` rows each (oldest first),
/// the oldest queued for `oldest_age`.
struct BatchDecision {
  size_t take = 0;  ///< requests to run now (from the front); 0: wait
  std::chrono::microseconds wait{0};  ///< when take == 0: how long at most before deciding again
};

/// Pure policy (unit-tested):
/// - not dynamic: one request;
/// - the longest prefix that fits max_batch_size, when the next request does not fit
///   or it is exactly max_batch_size rows;
/// - else the longest prefix whose rows equal a preferred size, if any;
/// - else, once the oldest has waited max_delay, the longest prefix that fits;
/// - else wait for the rest of max_delay (or a new request).
BatchDecision decide_batch(const BatchPolicy& policy, const std::vector<std::int64_t>& rows,
                           std::chrono::microseconds oldest_age);

/// A request waiting for its batch.
struct QueuedRequest {
  Request request;
  int client = -1;  ///< the sender's rank in the serving communicator
  std::chrono::steady_clock::time_point enqueued;
  double receive_us = 0;  ///< receive + unpack + checks, on the receiver thread
};

/// The queue of one model. Thread-safe: the receiver pushes, instance threads pop.
class BatchQueue {
 public:
  explicit BatchQueue(BatchPolicy policy) : policy_(std::move(policy)) {}
  void push(QueuedRequest item);
  /// Blocks until a batch is due (per decide_batch) or stop() was called and the
  /// queue is empty (then returns an empty batch).
  std::vector<QueuedRequest> next_batch();
  /// The batch due now (per decide_batch), or an empty one; never blocks. For a
  /// server that computes on its receiver thread.
  std::vector<QueuedRequest> due_batch();
  /// Drops every queued request of `client`; returns how many.
  size_t drop_client(int client);
  void stop();
  size_t size() const;
  const BatchPolicy& policy() const { return policy_; }

 private:
  BatchPolicy policy_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<QueuedRequest> queue_;
  bool stopped_ = false;
};

}  // namespace hpcml::launch::serve
