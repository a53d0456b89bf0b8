#include "launch/serve/server.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include <sched.h>

#include "collectives/device.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"
#include "core/watchdog.hpp"
#include "launch/serve/batcher.hpp"
#include "launch/serve/protocol.hpp"
#include "launch/serve/repository.hpp"

namespace hpcml::launch::serve {

namespace {

using Clock = std::chrono::steady_clock;

double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

constexpr int kSinkChunk = 4096;

// Receives an oversized request without holding it: its first kRequestPrefixBytes
// land in scratch[0..16), every later 4 KiB chunk on top of the same scratch bytes
// (a zero-extent datatype), so memory stays bounded whatever the sender sent.
// (A short receive buffer is no option: Open MPI 4.1's single-copy shared-memory
// path writes past the buffer of a truncated receive.)
void receive_prefix_only(MPI_Message& message, int count, std::vector<char>& scratch) {
  MPI_Datatype chunk, sink, whole;
  HPCML_MPI_CHECK(MPI_Type_contiguous(kSinkChunk, MPI_BYTE, &chunk));
  HPCML_MPI_CHECK(MPI_Type_create_resized(chunk, 0, 0, &sink));
  const int chunks = (count - static_cast<int>(kRequestPrefixBytes) + kSinkChunk - 1) / kSinkChunk;
  int lengths[2] = {static_cast<int>(kRequestPrefixBytes), chunks};
  MPI_Aint displacements[2] = {0, static_cast<MPI_Aint>(kRequestPrefixBytes)};
  MPI_Datatype types[2] = {MPI_BYTE, sink};
  HPCML_MPI_CHECK(MPI_Type_create_struct(2, lengths, displacements, types, &whole));
  HPCML_MPI_CHECK(MPI_Type_commit(&whole));
  const int rc = MPI_Mrecv(scratch.data(), 1, whole, &message, MPI_STATUS_IGNORE);
  MPI_Type_free(&whole);
  MPI_Type_free(&sink);
  MPI_Type_free(&chunk);
  HPCML_MPI_CHECK(rc);
}

struct Outgoing {
  int dest = -1;
  std::vector<char> bytes;
  double overhead_us = 0;  // so far: receive, assembly share, scatter (send added by the receiver)
  bool counted = true;     // an answer to a queued request (not a refusal at receive time)
  MPI_Request request = MPI_REQUEST_NULL;
};

// Replies from the instance threads to the receiver, and how many instances are
// computing. The receiver parks on it while every core of this rank computes.
class Outbox {
 public:
  void push(Outgoing o) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.push_back(std::move(o));
  }
  void computing(bool on) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      computing_ += on ? 1 : -1;
    }
    if (!on) ready_.notify_one();
  }
  int computing() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return computing_;
  }
  // Until a reply is queued, fewer than `cores` instances compute, or `timeout`.
  void park(int cores, std::chrono::microseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait_for(lock, timeout, [&] { return !items_.empty() || computing_ < cores; });
  }
  bool pop(Outgoing& o) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (items_.empty()) return false;
    o = std::move(items_.front());
    items_.pop_front();
    return true;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Outgoing> items_;
  int computing_ = 0;
};

struct Served {
  ModelEntry entry;
  c10::Device device{c10::kCPU};
  std::unique_ptr<BatchQueue> queue;
  std::vector<std::unique_ptr<models::Model>> instances;
};

struct Stats {
  std::mutex mutex;
  ServerReport report;
};

// Runs one batch on `model` and queues its replies (or one error reply per request).
void run_batch(const ModelEntry& entry, const c10::Device& device, models::Model& model,
               std::vector<QueuedRequest>& batch, Outbox& outbox, Stats& stats) {
  {
    const auto t0 = Clock::now();
    const auto n = static_cast<double>(batch.size());
    int64_t rows = 0;
    for (const auto& q : batch) rows += q.request.rows;
    std::vector<Outgoing> replies;
    replies.reserve(batch.size());
    double input_us = 0, infer_us = 0;
    try {
      std::vector<const NamedInputs*> parts;
      parts.reserve(batch.size());
      for (const auto& q : batch) parts.push_back(&q.request.inputs);
      models::Inputs inputs = assemble_batch(entry, parts);
      for (auto& [name, t] : inputs) t = collectives::to_device(t, device);
      const auto t1 = Clock::now();
      at::Tensor output = model.forward(inputs).to(at::kCPU);  // waits for the device
      const auto t2 = Clock::now();
      input_us = us_between(t0, t1);
      infer_us = us_between(t1, t2);
      HPCML_CHECK_AS(RequestError, output.dim() >= 1 && output.size(0) == rows, "model '", entry.name,
                     "' returned an output of shape ", output.sizes(), " for a batch of ", rows, " rows");
      output = output.contiguous();
      int64_t start = 0;
      for (const auto& q : batch) {
        const auto s0 = Clock::now();
        ServerTiming t;
        t.queue_us = us_between(q.enqueued, t0);
        t.input_us = input_us / n;
        t.infer_us = infer_us;
        t.batch_rows = static_cast<int32_t>(rows);
        t.batch_requests = static_cast<int32_t>(batch.size());
        Outgoing o;
        o.dest = q.client;
        // Overhead and output time are known only after packing: pack, then patch
        // them in (the fields sit at fixed offsets after the 20-byte prefix).
        o.bytes = pack_reply(q.request.id, t, output.narrow(0, start, q.request.rows));
        start += q.request.rows;
        const double scatter_us = us_between(s0, Clock::now());
        t.output_us = scatter_us;
        t.overhead_us = q.receive_us + input_us / n + scatter_us;
        std::memcpy(o.bytes.data() + 20 + 3 * sizeof(double), &t.output_us, sizeof(double));
        std::memcpy(o.bytes.data() + 20 + 4 * sizeof(double), &t.overhead_us, sizeof(double));
        o.overhead_us = t.overhead_us;
        replies.push_back(std::move(o));
      }
    } catch (const std::exception& e) {
      const std::string what = dynamic_cast<const Error*>(&e) ? static_cast<const Error&>(e).message() : e.what();
      const std::string line = "model '" + entry.name + "' failed on a batch of " + std::to_string(rows) +
                               " rows: " + what.substr(0, what.find('\n'));
      HPCML_LOG_WARN("serve: {}", line);
      replies.clear();
      for (const auto& q : batch) {
        Outgoing o;
        o.dest = q.client;
        o.bytes = pack_error_reply(q.request.id, line);
        o.overhead_us = q.receive_us;
        replies.push_back(std::move(o));
      }
    }
    const auto t3 = Clock::now();
    // The compute share of each request: the batch's input + infer + output time over its requests.
    const double share = us_between(t0, t3) / n;
    for (auto& o : replies) std::memcpy(o.bytes.data() + 20 + 5 * sizeof(double), &share, sizeof(double));
    {
      std::lock_guard<std::mutex> lock(stats.mutex);
      auto& r = stats.report;
      r.busy_s += us_between(t0, t3) * 1e-6;
      r.batch_rows_histogram[entry.name][rows] += 1;
      for (const auto& q : batch) r.queue_us += us_between(q.enqueued, t0);
      r.input_us += input_us;
      r.infer_us += infer_us * n;
      r.output_us += us_between(t0, t3) - input_us - infer_us;
    }
    for (auto& o : replies) outbox.push(std::move(o));
  }
}

// One model instance thread: takes batches, runs them, queues the replies.
void instance_loop(Served& served, models::Model& model, Outbox& outbox, Stats& stats) {
  at::NoGradGuard no_grad;
  collectives::StreamScope stream(served.device);  // this instance's own CUDA stream on a GPU
  for (;;) {
    std::vector<QueuedRequest> batch = served.queue->next_batch();
    if (batch.empty()) return;
    outbox.computing(true);
    run_batch(served.entry, served.device, model, batch, outbox, stats);
    outbox.computing(false);
  }
}

// CPUs this process may run on (1 under mpirun --bind-to core).
int usable_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace

std::string ServerReport::to_json() const {
  nlohmann::json hist = nlohmann::json::object();
  for (const auto& [model, h] : batch_rows_histogram) {
    nlohmann::json m = nlohmann::json::object();
    for (const auto& [rows, count] : h) m[std::to_string(rows)] = count;
    hist[model] = m;
  }
  std::vector<float> sorted = overhead_us;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) {
    return sorted.empty() ? 0.0 : static_cast<double>(sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))]);
  };
  const double n = std::max<double>(1, static_cast<double>(requests));
  const nlohmann::json out = {{"rank", rank},
          {"device", device},
          {"wall_s", wall_s},
          {"busy_s", busy_s},
          {"utilisation", wall_s > 0 ? busy_s / wall_s : 0.0},
          {"requests", requests},
          {"error_replies", error_replies},
          {"dropped", dropped},
          {"vanished_clients", vanished_clients},
          {"batch_rows_histogram", hist},
          {"overhead_us", {{"p50", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)}}},
          {"mean_us", {{"queue", queue_us / n}, {"compute_input", input_us / n}, {"compute_infer", infer_us / n},
                       {"compute_output", output_us / n}}}};
  return out.dump();
}

ServerReport run_server(MPI_Comm comm, const std::vector<int>& clients, const ServerOptions& options) {
  const auto start = Clock::now();
  if (options.intra_op_threads > 0) at::set_num_threads(options.intra_op_threads);
  int rank = 0, size = 0;
  HPCML_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  HPCML_MPI_CHECK(MPI_Comm_size(comm, &size));
  // Load every model before serving, so a bad repository fails at start-up.
  std::vector<std::unique_ptr<Served>> served;
  for (auto& entry : read_repository(options.repository)) {
    auto s = std::make_unique<Served>();
    s->entry = entry;
    BatchPolicy policy;
    policy.max_batch_size = entry.config.max_batch_size;
    policy.dynamic = entry.config.dynamic_batching;
    policy.preferred = entry.config.preferred_batch_sizes;
    policy.max_delay = std::chrono::microseconds(entry.config.max_queue_delay_us);
    s->queue = std::make_unique<BatchQueue>(policy);
    s->device = options.device;
    for (int i = 0; i < entry.config.instances; ++i) {
      s->instances.push_back(load_model(entry));
      s->instances.back()->to(options.device);
    }
    served.push_back(std::move(s));
  }
  std::vector<ModelEntry> entries;
  for (const auto& s : served) entries.push_back(s->entry);
  HPCML_LOG_DEBUG("serve: server rank {} serves {} model(s) for {} client(s)", rank, served.size(), clients.size());

  Outbox outbox;
  Stats stats;
  stats.report.rank = rank;
  stats.report.device = collectives::describe_device(options.device);
  const int cores = usable_cores();
  HPCML_CHECK_AS(ConfigError, options.compute == "auto" || options.compute == "threads" || options.compute == "inline",
                 "config error: key 'serve.server_compute': expected one of [auto, threads, inline], found '",
                 options.compute, "'");
  const bool inline_compute = options.compute == "inline" || (options.compute == "auto" && cores == 1);
  std::vector<std::thread> threads;
  if (!inline_compute)
    for (auto& s : served)
    for (auto& m : s->instances) threads.emplace_back([&s = *s, &model = *m, &outbox, &stats] {
      try {
        instance_loop(s, model, outbox, stats);
      } catch (const std::exception& e) {
        const auto* own = dynamic_cast<const Error*>(&e);
        abort_job(std::string("hpcml: ") + rank_tag() + " serve: model instance thread failed: " +
                      (own != nullptr ? own->message() : describe_foreign_exception(e)),
                  1);
      }
    });

  enum class ClientState { kActive, kDone, kGone };
  std::vector<ClientState> state(size, ClientState::kDone);
  std::vector<Clock::time_point> last_heard(size, start);
  std::vector<int64_t> pending(size, 0);
  for (int c : clients) state[c] = ClientState::kActive;
  size_t active = clients.size();
  int64_t in_flight = 0;  // queued or computing, reply not yet sent
  std::list<Outgoing> sending;
  auto last_heartbeat = start;
  const auto heartbeat = std::chrono::duration<double>(options.heartbeat_s);
  const auto client_timeout = std::chrono::duration<double>(options.client_timeout_s);
  std::vector<char> scratch(kRequestPrefixBytes + kSinkChunk);
  int idle = 0;
  ServerReport& report = stats.report;

  auto refuse = [&](int dest, uint64_t id, const std::string& line) {
    Outgoing o;
    o.dest = dest;
    o.bytes = pack_error_reply(id, line);
    o.counted = false;
    outbox.push(std::move(o));
    std::lock_guard<std::mutex> lock(stats.mutex);
    report.error_replies += 1;
  };

  while (active > 0 || in_flight > 0) {
    bool did = false;
    // Incoming messages, a bounded number per round so replies keep flowing.
    for (int k = 0; k < 64; ++k) {
      int flag = 0;
      MPI_Message message;
      MPI_Status status;
      HPCML_MPI_CHECK(MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm, &flag, &message, &status));
      if (!flag) break;
      did = true;
      const auto t0 = Clock::now();
      const int src = status.MPI_SOURCE;
      last_heard[src] = t0;
      int count = 0;
      HPCML_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &count));
      if (state[src] == ClientState::kGone && status.MPI_TAG != kTagDone) {
        // Slow, not dead (e.g. a long start-up): serve it again; what was dropped stays dropped.
        state[src] = ClientState::kActive;
        ++active;
        auto& v = report.vanished_clients;
        v.erase(std::remove(v.begin(), v.end(), src), v.end());
        HPCML_LOG_WARN("serve: server rank {}: client rank {} is back; serving it again", rank, src);
      }
      if (status.MPI_TAG != kTagRequest) {
        std::vector<char> sink(static_cast<size_t>(std::max(count, 1)));
        HPCML_MPI_CHECK(MPI_Mrecv(sink.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE));
        if (status.MPI_TAG == kTagDone && state[src] == ClientState::kActive) {
          state[src] = ClientState::kDone;
          --active;
        }
        continue;
      }
      if (static_cast<int64_t>(count) > options.max_request_bytes) {
        receive_prefix_only(message, count, scratch);
        refuse(src, peek_request_id(scratch.data(), scratch.size()),
               "request of " + std::to_string(count) + " bytes exceeds serve.max_request_bytes=" +
                   std::to_string(options.max_request_bytes) + " of server rank " + std::to_string(rank));
        continue;
      }
      auto buffer = std::make_shared<std::vector<char>>(static_cast<size_t>(count));
      HPCML_MPI_CHECK(MPI_Mrecv(buffer->data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE));
      uint64_t id = peek_request_id(buffer->data(), buffer->size());
      try {
        Request request = parse_request(buffer);
        id = request.id;
        Served* target = nullptr;
        for (auto& s : served)
          if (s->entry.name == request.model) target = s.get();
        if (!target) find_entry(entries, request.model);  // throws naming the models served
        validate_inputs(target->entry, request.inputs, request.rows);
        QueuedRequest q;
        q.request = std::move(request);
        q.client = src;
        q.enqueued = Clock::now();
        q.receive_us = us_between(t0, q.enqueued);
        ++pending[src];
        ++in_flight;
        target->queue->push(std::move(q));
      } catch (const RequestError& e) {
        refuse(src, id, e.message() + " (server rank " + std::to_string(rank) + ")");
      }
    }
    // Inline: due batches run here, between receiving and replying.
    if (inline_compute) {
      at::NoGradGuard no_grad;
      for (auto& s : served) {
        for (auto batch = s->queue->due_batch(); !batch.empty(); batch = s->queue->due_batch()) {
          did = true;
          run_batch(s->entry, s->device, *s->instances.front(), batch, outbox, stats);
        }
      }
    }
    // Replies out; finished sends reaped.
    for (Outgoing o; outbox.pop(o);) {
      did = true;
      if (o.counted) {
        --in_flight;
        --pending[o.dest];
      }
      if (state[o.dest] == ClientState::kGone) continue;  // nobody to answer
      const auto s0 = Clock::now();
      sending.push_back(std::move(o));
      Outgoing& out = sending.back();
      HPCML_MPI_CHECK(MPI_Isend(out.bytes.data(), static_cast<int>(out.bytes.size()), MPI_BYTE, out.dest, kTagReply,
                                comm, &out.request));
      if (out.counted) {
        report.requests += 1;
        const float total = static_cast<float>(out.overhead_us + us_between(s0, Clock::now()));
        std::lock_guard<std::mutex> lock(stats.mutex);
        report.overhead_us.push_back(total);
      }
    }
    for (auto it = sending.begin(); it != sending.end();) {
      int done = 0;
      HPCML_MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
      it = done ? sending.erase(it) : std::next(it);
    }
    // Liveness both ways.
    const auto now = Clock::now();
    if (now - last_heartbeat >= heartbeat) {
      last_heartbeat = now;
      for (int c : clients) {
        if (state[c] != ClientState::kActive || pending[c] == 0) continue;
        MPI_Request r;
        HPCML_MPI_CHECK(MPI_Isend(nullptr, 0, MPI_BYTE, c, kTagHeartbeat, comm, &r));
        HPCML_MPI_CHECK(MPI_Request_free(&r));
      }
      for (int c : clients) {
        if (state[c] != ClientState::kActive || now - last_heard[c] < client_timeout) continue;
        state[c] = ClientState::kGone;
        --active;
        size_t dropped = 0;
        for (auto& s : served) dropped += s->queue->drop_client(c);
        in_flight -= static_cast<int64_t>(dropped);
        pending[c] -= static_cast<int64_t>(dropped);
        report.dropped += static_cast<int64_t>(dropped);
        report.vanished_clients.push_back(c);
        HPCML_LOG_WARN("serve: server rank {}: client rank {} sent nothing for {:.1f} s (serve.client_timeout_s); "
                       "dropped its {} queued request(s), serving the others",
                       rank, c, std::chrono::duration<double>(now - last_heard[c]).count(), dropped);
      }
    }
    if (did) {
      idle = 0;
    } else if (outbox.computing() >= cores) {
      // Every core computes: polling would only slow the model down (the receiver
      // shares a core with the instances). Park until a reply is ready; requests
      // arriving meanwhile wait in MPI and join the next batch.
      outbox.park(cores, std::chrono::microseconds(500));
    } else if (++idle < 2000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  for (auto& s : served) s->queue->stop();
  for (auto& t : threads) t.join();
  // The last replies: wait for them under a deadline (clients that vanished are not waited for).
  const auto drain_deadline = Clock::now() + std::chrono::duration<double>(options.drain_timeout_s);
  while (!sending.empty()) {
    for (auto it = sending.begin(); it != sending.end();) {
      int done = 0;
      if (state[it->dest] == ClientState::kGone) {
        HPCML_MPI_CHECK(MPI_Request_free(&it->request));
        done = 1;
      } else {
        HPCML_MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
      }
      it = done ? sending.erase(it) : std::next(it);
    }
    if (Clock::now() > drain_deadline)
      deadline_expired("serve reply drain", "server rank " + std::to_string(rank),
                       Clock::now() - (drain_deadline - std::chrono::duration<double>(options.drain_timeout_s)),
                       std::chrono::duration<double>(options.drain_timeout_s));
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  report.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  return report;
}

}  // namespace hpcml::launch::serve
