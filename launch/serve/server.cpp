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
#include <optional>
#include <thread>

#include <sched.h>

#include "collectives/device.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"  // rank_tag
#include "core/watchdog.hpp"
#include "launch/serve/batcher.hpp"
#include "launch/serve/protocol.hpp"
#include "launch/serve/repository.hpp"
#include "launch/serve/timing.hpp"

namespace hpcml::launch::serve {

namespace {

struct Outgoing {
  int dest = -1;
  std::vector<char> bytes;
  double overhead_us = 0;  // so far: receive, assembly share, scatter (send added by the receiver)
  bool counted = true;     // an answer to a queued request (not a refusal at receive time)
  collectives::WorkPtr send;  // the reply's send, once started
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

enum class ClientState { kActive, kDone, kGone };

// Whether a reply's send has completed (a failed one rethrows its error).
bool finished(Outgoing& o) {
  if (!o.send->is_completed()) return false;
  if (auto error = o.send->exception()) std::rethrow_exception(error);
  return true;
}

// A reply to a client that is gone: nobody waits for its send. The dropped Work
// detaches the send; its buffer, which MPI may still read, is deliberately kept.
void detach(Outgoing& o) {
  if (!o.send->is_completed()) new std::vector<char>(std::move(o.bytes));
  o.send.reset();
}

// One server rank's loop: receive requests, batch them per model (on instance threads
// or inline), send the replies, watch the clients' liveness; then drain the last
// replies. Only the thread that calls run() uses the communicator.
class Server {
 public:
  Server(collectives::BackendPtr comm, const std::vector<int>& clients, const ServerOptions& options,
         Clock::time_point start)
      : comm_(std::move(comm)), clients_(clients), options_(options), start_(start) {}

  ServerReport run();

 private:
  void load_models();
  void start_instance_threads();
  bool receive_message();
  void enqueue_request(collectives::Message& message, Clock::time_point t0);
  bool run_due_batches();
  bool send_replies();
  void reap_finished_sends();
  void watch_liveness();
  void drop_client(int c, Clock::time_point now);
  void wait_idle(bool did);
  void drain_replies();
  void refuse(int dest, uint64_t id, const std::string& line);

  const collectives::BackendPtr comm_;
  const std::vector<int>& clients_;
  const ServerOptions& options_;
  const Clock::time_point start_;
  int rank_ = 0;
  std::vector<std::unique_ptr<Served>> served_;
  std::vector<ModelEntry> entries_;
  Outbox outbox_;
  Stats stats_;
  ServerReport& report_ = stats_.report;
  int cores_ = 1;
  bool inline_compute_ = false;
  std::vector<std::thread> threads_;
  std::vector<ClientState> state_;
  std::vector<Clock::time_point> last_heard_;
  std::vector<int64_t> pending_;
  size_t active_ = 0;
  int64_t in_flight_ = 0;  // queued or computing, reply not yet sent
  std::list<Outgoing> sending_;
  Clock::time_point last_heartbeat_;
  int idle_ = 0;
};

ServerReport Server::run() {
  if (options_.intra_op_threads > 0) at::set_num_threads(options_.intra_op_threads);
  rank_ = comm_->rank();
  const int size = comm_->size();
  load_models();
  stats_.report.rank = rank_;
  stats_.report.device = collectives::describe_device(options_.device);
  cores_ = usable_cores();
  // Resolved by the schema (serve.server_compute, one of these three): a contract here.
  HPCML_EXPECTS(options_.compute == "auto" || options_.compute == "threads" || options_.compute == "inline");
  inline_compute_ = options_.compute == "inline" || (options_.compute == "auto" && cores_ == 1);
  if (!inline_compute_) start_instance_threads();

  state_.assign(size, ClientState::kDone);
  last_heard_.assign(size, start_);
  pending_.assign(size, 0);
  for (int c : clients_) state_[c] = ClientState::kActive;
  active_ = clients_.size();
  last_heartbeat_ = start_;
  while (active_ > 0 || in_flight_ > 0) {
    bool did = false;
    // Incoming messages, a bounded number per round so replies keep flowing.
    for (int k = 0; k < 64 && receive_message(); ++k) did = true;
    // Inline: due batches run here, between receiving and replying.
    if (inline_compute_ && run_due_batches()) did = true;
    if (send_replies()) did = true;
    reap_finished_sends();
    watch_liveness();
    wait_idle(did);
  }
  for (auto& s : served_) s->queue->stop();
  for (auto& t : threads_) t.join();
  drain_replies();
  report_.wall_s = std::chrono::duration<double>(Clock::now() - start_).count();
  return report_;
}

// Every model of the repository with its batch queue and instances, loaded before
// serving so that a bad repository fails at start-up.
void Server::load_models() {
  for (auto& entry : read_repository(options_.repository)) {
    auto s = std::make_unique<Served>();
    s->device = options_.device;
    for (int i = 0; i < entry.config.instances; ++i) {
      s->instances.push_back(load_model(entry));
      s->instances.back()->to(options_.device);
    }
    if (measures_batch_sizes(entry.config, options_.device)) {  // before any batch: the queue's policy
      const auto curve = measure_batch_curve(*s->instances.front(), entry, options_.device);
      entry.config.preferred_batch_sizes = filling_sizes(curve);
      report_.measured_batch_sizes[entry.name] = {curve, entry.config.preferred_batch_sizes};
      HPCML_LOG_INFO("serve: server rank {}: model '{}' on {}: preferred batch sizes {} (throughput within 10% of "
                     "its best, measured at start-up)", rank_, entry.name, options_.device.str(),
                     fmt::join(entry.config.preferred_batch_sizes, ", "));
    }
    s->entry = entry;
    s->queue = std::make_unique<BatchQueue>(entry.config.batch_policy());
    served_.push_back(std::move(s));
  }
  for (const auto& s : served_) entries_.push_back(s->entry);
  HPCML_LOG_DEBUG("serve: server rank {} serves {} model(s) for {} client(s)", rank_, served_.size(),
                  clients_.size());
}

// One thread per model instance; a failure there ends the job with its message.
void Server::start_instance_threads() {
  for (auto& s : served_) {
    for (auto& m : s->instances) {
      threads_.emplace_back([&s = *s, &model = *m, &outbox = outbox_, &stats = stats_] {
        try {
          instance_loop(s, model, outbox, stats);
        } catch (const std::exception& e) {
          const auto* own = dynamic_cast<const Error*>(&e);
          abort_job(std::string("hpcml: ") + rank_tag() + " serve: model instance thread failed: " +
                        (own != nullptr ? own->message() : describe_foreign_exception(e)),
                    1);
        }
      });
    }
  }
}

// Receives one message if there is one (returns false when none): a request is queued
// or refused; DONE retires its client; a message from a client thought gone revives it.
bool Server::receive_message() {
  std::optional<collectives::Message> message = comm_->improbe();
  if (!message) return false;
  const auto t0 = Clock::now();
  const int src = message->source;
  const int tag = message->tag;
  last_heard_[src] = t0;
  if (state_[src] == ClientState::kGone && tag != kTagDone) {
    // Slow, not dead (e.g. a long start-up): serve it again; what was dropped stays dropped.
    state_[src] = ClientState::kActive;
    ++active_;
    auto& v = report_.vanished_clients;
    v.erase(std::remove(v.begin(), v.end(), src), v.end());
    HPCML_LOG_WARN("serve: server rank {}: client rank {} is back; serving it again", rank_, src);
  }
  if (tag != kTagRequest) {
    comm_->recv_prefix(*message, nullptr, 0);  // done, heartbeat (0 bytes) or anything else: dropped
    if (tag == kTagDone && state_[src] == ClientState::kActive) {
      state_[src] = ClientState::kDone;
      --active_;
    }
    return true;
  }
  const size_t bytes = message->bytes;
  if (static_cast<int64_t>(bytes) > options_.max_request_bytes) {
    // Not held in memory: the prefix (for the request id) is kept, the rest dropped.
    char prefix[kRequestPrefixBytes] = {};
    const size_t kept = comm_->recv_prefix(*message, prefix, sizeof prefix);
    refuse(src, peek_request_id(prefix, kept),
           "request of " + std::to_string(bytes) + " bytes exceeds serve.max_request_bytes=" +
               std::to_string(options_.max_request_bytes) + " of server rank " + std::to_string(rank_));
    return true;
  }
  enqueue_request(*message, t0);
  return true;
}

// A request received at `t0`: parsed, checked against its model and queued, or refused
// with an error reply naming what is wrong.
void Server::enqueue_request(collectives::Message& message, Clock::time_point t0) {
  const int src = message.source;
  auto buffer = std::make_shared<std::vector<char>>(message.bytes);
  comm_->recv(message, buffer->data(), buffer->size());
  uint64_t id = peek_request_id(buffer->data(), buffer->size());
  try {
    Request request = parse_request(buffer);
    id = request.id;
    Served* target = nullptr;
    for (auto& s : served_)
      if (s->entry.name == request.model) target = s.get();
    if (!target) find_entry(entries_, request.model);  // throws naming the models served
    validate_inputs(target->entry, request.inputs, request.rows);
    QueuedRequest q;
    q.request = std::move(request);
    q.client = src;
    q.enqueued = Clock::now();
    q.receive_us = us_between(t0, q.enqueued);
    ++pending_[src];
    ++in_flight_;
    target->queue->push(std::move(q));
  } catch (const RequestError& e) {
    refuse(src, id, e.message() + " (server rank " + std::to_string(rank_) + ")");
  }
}

// Inline compute: runs every due batch on the receiver thread. Returns whether any ran.
bool Server::run_due_batches() {
  bool did = false;
  at::NoGradGuard no_grad;
  for (auto& s : served_) {
    for (auto batch = s->queue->due_batch(); !batch.empty(); batch = s->queue->due_batch()) {
      did = true;
      run_batch(s->entry, s->device, *s->instances.front(), batch, outbox_, stats_);
    }
  }
  return did;
}

// Sends every queued reply (none to a client that is gone). Returns whether there was any.
bool Server::send_replies() {
  bool did = false;
  for (Outgoing o; outbox_.pop(o);) {
    did = true;
    if (o.counted) {
      --in_flight_;
      --pending_[o.dest];
    }
    if (state_[o.dest] == ClientState::kGone) continue;  // nobody to answer
    const auto s0 = Clock::now();
    sending_.push_back(std::move(o));
    Outgoing& out = sending_.back();
    out.send = comm_->send(out.bytes.data(), out.bytes.size(), out.dest, kTagReply, kAsync);
    if (out.counted) {
      report_.requests += 1;
      const float total = static_cast<float>(out.overhead_us + us_between(s0, Clock::now()));
      std::lock_guard<std::mutex> lock(stats_.mutex);
      report_.overhead_us.push_back(total);
    }
  }
  return did;
}

void Server::reap_finished_sends() {
  for (auto it = sending_.begin(); it != sending_.end();) it = finished(*it) ? sending_.erase(it) : std::next(it);
}

// Liveness both ways, once per heartbeat: a heartbeat to each active client with work
// pending, and a client silent past serve.client_timeout_s dropped.
void Server::watch_liveness() {
  const auto now = Clock::now();
  if (now - last_heartbeat_ < std::chrono::duration<double>(options_.heartbeat_s)) return;
  last_heartbeat_ = now;
  for (int c : clients_) {
    if (state_[c] != ClientState::kActive || pending_[c] == 0) continue;
    comm_->send(nullptr, 0, c, kTagHeartbeat, kAsync);  // 0 bytes: the Work is dropped, the send detached
  }
  for (int c : clients_) {
    if (state_[c] != ClientState::kActive ||
        now - last_heard_[c] < std::chrono::duration<double>(options_.client_timeout_s)) {
      continue;
    }
    drop_client(c, now);
  }
}

// Client `c` has vanished: its queued requests are dropped; the others are served on.
void Server::drop_client(int c, Clock::time_point now) {
  state_[c] = ClientState::kGone;
  --active_;
  size_t dropped = 0;
  for (auto& s : served_) dropped += s->queue->drop_client(c);
  in_flight_ -= static_cast<int64_t>(dropped);
  pending_[c] -= static_cast<int64_t>(dropped);
  report_.dropped += static_cast<int64_t>(dropped);
  report_.vanished_clients.push_back(c);
  HPCML_LOG_WARN("serve: server rank {}: client rank {} sent nothing for {:.1f} s (serve.client_timeout_s); "
                 "dropped its {} queued request(s), serving the others",
                 rank_, c, std::chrono::duration<double>(now - last_heard_[c]).count(), dropped);
}

// After a round that did nothing: park, yield, or (long idle) sleep.
void Server::wait_idle(bool did) {
  if (did) {
    idle_ = 0;
  } else if (outbox_.computing() >= cores_) {
    // Every core computes: polling would only slow the model down (the receiver
    // shares a core with the instances). Park until a reply is ready; requests
    // arriving meanwhile wait in MPI and join the next batch.
    outbox_.park(cores_, std::chrono::microseconds(500));
  } else if (++idle_ < 2000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// The last replies: wait for them under a deadline (clients that vanished are not waited for).
void Server::drain_replies() {
  const auto drain_timeout = std::chrono::duration<double>(options_.drain_timeout_s);
  const auto drain_deadline = Clock::now() + drain_timeout;
  while (!sending_.empty()) {
    for (auto it = sending_.begin(); it != sending_.end();) {
      if (state_[it->dest] == ClientState::kGone) {
        detach(*it);
        it = sending_.erase(it);
      } else {
        it = finished(*it) ? sending_.erase(it) : std::next(it);
      }
    }
    if (Clock::now() > drain_deadline)
      deadline_expired("serve reply drain", "server rank " + std::to_string(rank_),
                       Clock::now() - (drain_deadline - drain_timeout), drain_timeout);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// An error reply at receive time (not counted as a served request).
void Server::refuse(int dest, uint64_t id, const std::string& line) {
  Outgoing o;
  o.dest = dest;
  o.bytes = pack_error_reply(id, line);
  o.counted = false;
  outbox_.push(std::move(o));
  std::lock_guard<std::mutex> lock(stats_.mutex);
  report_.error_replies += 1;
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
  nlohmann::json measured = nlohmann::json::object();
  for (const auto& [model, m] : measured_batch_sizes) {
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& p : m.first) curve.push_back({p.rows, p.rows_per_s});
    measured[model] = {{"curve", curve}, {"preferred", m.second}};
  }
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
          {"measured_batch_sizes", measured},
          {"overhead_us", {{"p50", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)}}},
          {"mean_us", {{"queue", queue_us / n}, {"compute_input", input_us / n}, {"compute_infer", infer_us / n},
                       {"compute_output", output_us / n}}}};
  return out.dump();
}

ServerReport run_server(collectives::BackendPtr comm, const std::vector<int>& clients, const ServerOptions& options) {
  const auto start = Clock::now();
  Server server(std::move(comm), clients, options, start);
  return server.run();
}

}  // namespace hpcml::launch::serve
