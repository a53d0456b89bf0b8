#include "launch/serve/batcher.hpp"

#include <algorithm>

namespace hpcml::launch::serve {

BatchDecision decide_batch(const BatchPolicy& policy, const std::vector<std::int64_t>& rows,
                           std::chrono::microseconds oldest_age) {
  BatchDecision d;
  if (rows.empty()) return d;
  if (!policy.dynamic) {
    d.take = 1;
    return d;
  }
  // Longest prefix that fits; a single request always fits (the server refuses
  // requests larger than max_batch_size).
  size_t fit = 0;
  std::int64_t sum = 0;
  size_t preferred_take = 0;
  while (fit < rows.size() && (fit == 0 || sum + rows[fit] <= policy.max_batch_size)) {
    sum += rows[fit++];
    if (std::binary_search(policy.preferred.begin(), policy.preferred.end(), static_cast<int>(sum)))
      preferred_take = fit;
  }
  if (fit < rows.size() || sum >= policy.max_batch_size) {
    d.take = fit;
  } else if (preferred_take > 0) {
    d.take = preferred_take;
  } else if (oldest_age >= policy.max_delay) {
    d.take = fit;
  } else {
    d.wait = policy.max_delay - oldest_age;
  }
  return d;
}

void BatchQueue::push(QueuedRequest item) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(item));
  }
  cv_.notify_one();
}

std::vector<QueuedRequest> BatchQueue::next_batch() {
  std::unique_lock<std::mutex> lock(mutex_);
  std::vector<std::int64_t> rows;
  for (;;) {
    if (queue_.empty()) {
      if (stopped_) return {};
      cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
      continue;
    }
    rows.clear();
    for (const auto& q : queue_) rows.push_back(q.request.rows);
    const auto age =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - queue_.front().enqueued);
    // At shutdown nothing more will come: run what is queued.
    BatchDecision d = decide_batch(policy_, rows, stopped_ ? policy_.max_delay : age);
    if (d.take == 0) {
      const size_t before = queue_.size();
      cv_.wait_for(lock, d.wait, [&] { return stopped_ || queue_.size() != before; });
      continue;
    }
    std::vector<QueuedRequest> batch;
    batch.reserve(d.take);
    for (size_t i = 0; i < d.take; ++i) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    // Another instance may take the rest at once.
    if (!queue_.empty()) cv_.notify_one();
    return batch;
  }
}

std::vector<QueuedRequest> BatchQueue::due_batch() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (queue_.empty()) return {};
  std::vector<std::int64_t> rows;
  rows.reserve(queue_.size());
  for (const auto& q : queue_) rows.push_back(q.request.rows);
  const auto age =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - queue_.front().enqueued);
  const BatchDecision d = decide_batch(policy_, rows, stopped_ ? policy_.max_delay : age);
  std::vector<QueuedRequest> batch;
  batch.reserve(d.take);
  for (size_t i = 0; i < d.take; ++i) {
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return batch;
}

size_t BatchQueue::drop_client(int client) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t before = queue_.size();
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [&](const QueuedRequest& q) { return q.client == client; }),
               queue_.end());
  return before - queue_.size();
}

void BatchQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
  }
  cv_.notify_all();
}

size_t BatchQueue::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

}  // namespace hpcml::launch::serve
