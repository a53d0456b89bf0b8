#include "launch/serve/client.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"  // rank_tag
#include "launch/serve/repository.hpp"
#include "launch/serve/timing.hpp"

namespace hpcml::launch::serve {

namespace {

template <typename D>
std::string seconds_text(D d) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f", std::chrono::duration<double>(d).count());
  return text;
}

struct Pending {
  std::uint64_t id = 0;
  std::string model;
  std::shared_ptr<std::vector<char>> bytes;
  int server = -1;  // index into servers
  Clock::time_point called, sent;
  double pack_us = 0;
  std::promise<InferResult> promise;
  collectives::WorkPtr send;  // the request's send, once started
};

}  // namespace

struct Client::State {
  collectives::BackendPtr comm;
  std::vector<int> servers;
  ClientOptions options;

  std::mutex mutex;  // guards outbound, stopping, stats
  std::condition_variable cv;
  std::deque<std::unique_ptr<Pending>> outbound;
  bool stopping = false;
  bool finished = false;
  std::string broken;  // the progress thread's fatal error, if any
  ClientStats stats;
  std::atomic<std::uint64_t> next_id{1};
  std::thread progress;

  // Progress thread only.
  std::unordered_map<std::uint64_t, std::unique_ptr<Pending>> in_flight;
  std::vector<std::int64_t> load;
  std::vector<bool> dead;  // suspect: silent past server_timeout_s; asked again after retry_s or once heard
  std::vector<Clock::time_point> suspected_at;
  size_t next_server = 0;  // where the search for the least loaded server starts
  std::vector<Clock::time_point> last_heard;
  Clock::time_point last_heartbeat = Clock::now();
  Clock::time_point last_liveness_check = Clock::now();
  std::vector<char> bytes;  // receive buffer

  // Local fallback.
  std::mutex fallback_mutex;
  std::condition_variable fallback_cv;
  std::deque<std::unique_ptr<Pending>> fallback_queue;
  bool fallback_stop = false;
  std::thread fallback_thread;
  std::vector<ModelEntry> fallback_entries;
  std::map<std::string, std::unique_ptr<models::Model>> fallback_models;

  /// One round of progress: queued requests out, replies and heartbeats in, heartbeats
  /// out, silent servers declared dead. Returns whether anything moved.
  bool pass();
  /// Nothing queued, nothing in flight, and finish() was called.
  bool drained();
  void loop();  // the progress thread: pass() until drained(), idling politely
  void run();   // the progress thread's body
  void say_done();
  /// Fails everything in flight or queued with the error that stopped progress.
  void break_down(const std::exception& e);
  /// Caller-driven progress: pass(), or false once progress has broken down.
  bool caller_pass();
  void send_new(std::unique_ptr<Pending> p);
  /// Sends every request queued by infer_async; whether there was any.
  bool send_queued();
  void complete(int source, const std::vector<char>& bytes);
  void declare_dead(int server, const std::string& why);
  void give_up(std::unique_ptr<Pending> p, const std::string& why);
  void fallback_loop();
  void fail(Pending& p, const std::string& line) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      stats.errors += 1;
    }
    p.promise.set_exception(std::make_exception_ptr(ServeError(rank_tag() + " serve: " + line, __FILE__, __LINE__)));
  }
};

void Client::State::send_new(std::unique_ptr<Pending> p) {
  const auto now = Clock::now();
  for (size_t s = 0; s < servers.size(); ++s) {
    if (dead[s] && now - suspected_at[s] >= std::chrono::duration<double>(options.retry_s)) {
      dead[s] = false;  // retried: asked again, and suspected again if still silent
      last_heard[s] = now;
    }
  }
  // The live server with the fewest requests in flight; ties taken in turn, so an
  // idle service spreads requests over every server.
  int best = -1;
  for (size_t k = 0; k < servers.size(); ++k) {
    const size_t s = (next_server + k) % servers.size();
    if (!dead[s] && (best < 0 || load[s] < load[best])) best = static_cast<int>(s);
  }
  if (best >= 0) next_server = static_cast<size_t>(best) + 1;
  if (best < 0) {
    std::string ranks;
    for (int s : servers) ranks += (ranks.empty() ? "" : ", ") + std::to_string(s);
    const std::string why = "no live server for request " + std::to_string(p->id) + " of model '" + p->model +
                            "': server rank(s) " + ranks + " stopped answering";
    give_up(std::move(p), why);
    return;
  }
  p->server = best;
  p->sent = Clock::now();
  p->send = comm->send(p->bytes->data(), p->bytes->size(), servers[best], kTagRequest, kAsync);
  ++load[best];
  {
    std::lock_guard<std::mutex> lock(mutex);
    stats.sent += 1;
  }
  in_flight.emplace(p->id, std::move(p));
}

void Client::State::give_up(std::unique_ptr<Pending> p, const std::string& why) {
  if (options.fallback) {
    {
      std::lock_guard<std::mutex> lock(fallback_mutex);
      fallback_queue.push_back(std::move(p));
    }
    fallback_cv.notify_one();
    return;
  }
  fail(*p, why);
}

void Client::State::complete(int source, const std::vector<char>& bytes) {
  const auto t0 = Clock::now();
  Reply reply = parse_reply(bytes.data(), bytes.size());
  auto it = in_flight.find(reply.id);
  if (it == in_flight.end()) {
    // A late answer: to a request re-sent elsewhere and answered there, or given up on.
    std::lock_guard<std::mutex> lock(mutex);
    stats.duplicates += 1;
    return;
  }
  std::unique_ptr<Pending> p = std::move(it->second);
  in_flight.erase(it);
  if (p->server >= 0) --load[p->server];
  if (p->send) p->send->wait();  // the reply proves it arrived
  if (!reply.ok) {
    fail(*p, "server rank " + std::to_string(source) + " refused request " + std::to_string(p->id) + " for model '" +
                 p->model + "': " + reply.error);
    return;
  }
  InferResult r;
  r.output = std::move(reply.output);
  r.timing = reply.timing;
  r.server = source;
  const auto t1 = Clock::now();
  r.pack_us = p->pack_us + us_between(t0, t1);
  r.latency_us = us_between(p->called, t1);
  {
    std::lock_guard<std::mutex> lock(mutex);
    stats.replies += 1;
  }
  p->promise.set_value(std::move(r));
}

void Client::State::declare_dead(int server, const std::string& why) {
  dead[server] = true;
  suspected_at[server] = Clock::now();
  load[server] = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    stats.dead_servers.push_back(servers[server]);
  }
  std::vector<std::uint64_t> ids;
  for (const auto& [id, p] : in_flight)
    if (p->server == server) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  bool live = false;
  for (size_t s = 0; s < servers.size(); ++s) live |= !dead[s];
  HPCML_LOG_WARN("serve: {}{}", why,
                 ids.empty() ? "" : live ? "; re-sending its " + std::to_string(ids.size()) + " request(s) to another server"
                                         : std::string(options.fallback ? "; running them locally" : ""));
  for (auto id : ids) {
    auto p = std::move(in_flight[id]);
    in_flight.erase(id);
    // The send may never complete (the peer may be gone): the dropped Work detaches
    // it, and its buffer, which MPI may still read, is deliberately kept.
    if (p->send && !p->send->is_completed()) new std::shared_ptr<std::vector<char>>(p->bytes);
    p->send.reset();
    if (live) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        stats.rerouted += 1;
        stats.sent -= 1;  // send_new counts it again
      }
      send_new(std::move(p));  // the same id: whichever reply comes first wins
      continue;
    }
    const std::string line = why + " (request " + std::to_string(id) + " of model '" + p->model + "')";
    give_up(std::move(p), line);
  }
}

bool Client::State::drained() {
  std::lock_guard<std::mutex> lock(mutex);
  return outbound.empty() && stopping && in_flight.empty();
}

bool Client::State::send_queued() {
  std::deque<std::unique_ptr<Pending>> fresh;
  {
    std::lock_guard<std::mutex> lock(mutex);
    fresh.swap(outbound);
  }
  for (auto& p : fresh) send_new(std::move(p));
  return !fresh.empty();
}

bool Client::State::pass() {
  const auto timeout = std::chrono::duration<double>(options.server_timeout_s);
  const auto heartbeat = std::chrono::duration<double>(options.heartbeat_s);
  bool did = send_queued();
  // (Sends need no polling here: the probes below drive Open MPI's progress, and a
  // request's send is completed when its reply arrives.)
  // Only the two tags a client is sent: other traffic on the communicator (an
  // application's own) is not this thread's to take.
  for (int k = 0; k < 128; ++k) {
    std::optional<collectives::Message> message =
        comm->improbe(collectives::kAnySource, k % 2 == 0 ? kTagReply : kTagHeartbeat);
    if (!message) {
      if (k % 2 == 0) continue;
      break;
    }
    did = true;
    bytes.resize(message->bytes);
    comm->recv(*message, bytes.data(), bytes.size());
    const auto s = std::find(servers.begin(), servers.end(), message->source);
    if (s != servers.end()) {
      last_heard[s - servers.begin()] = Clock::now();
      dead[s - servers.begin()] = false;  // heard from: live again
    }
    if (message->tag == kTagReply) complete(message->source, bytes);
  }
  const auto now = Clock::now();
  if (options.send_heartbeats && now - last_heartbeat >= heartbeat) {
    last_heartbeat = now;
    // To suspect servers too: one that wakes up finds this client alive.
    for (size_t s = 0; s < servers.size(); ++s)
      comm->send(nullptr, 0, servers[s], kTagHeartbeat, kAsync);  // 0 bytes: the Work is dropped, the send detached
  }
  // A server holding our requests that has said nothing for server_timeout_s is
  // suspect (checked every few milliseconds: the timeout is seconds).
  if (now - last_liveness_check < std::chrono::milliseconds(2)) return did;
  last_liveness_check = now;
  for (size_t s = 0; s < servers.size(); ++s) {
    if (dead[s] || load[s] == 0) continue;
    Clock::time_point oldest = now;
    for (const auto& [id, p] : in_flight)
      if (p->server == static_cast<int>(s)) oldest = std::min(oldest, p->sent);
    const auto since = std::max(oldest, last_heard[s]);
    if (now - since > timeout) {
      declare_dead(static_cast<int>(s),
                   "server rank " + std::to_string(servers[s]) + " sent nothing for " + seconds_text(now - since) +
                       " s while holding requests of this client (serve.server_timeout_s = " +
                       seconds_text(timeout) + ")");
      did = true;
    }
  }
  return did;
}

void Client::State::loop() {
  int idle = 0;
  while (!drained()) {
    if (pass()) {
      idle = 0;
    } else if (in_flight.empty()) {
      std::unique_lock<std::mutex> lock(mutex);
      cv.wait_for(lock, std::chrono::milliseconds(1), [&] { return !outbound.empty() || stopping; });
    } else if (++idle < 2000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

void Client::State::say_done() {
  // DONE to every server, suspect ones too (a stalled server that wakes up must learn
  // that this client is done); 0-byte sends complete locally.
  for (size_t s = 0; s < servers.size(); ++s) comm->send(nullptr, 0, servers[s], kTagDone);
}

void Client::State::break_down(const std::exception& e) {
  const auto* own = dynamic_cast<const Error*>(&e);
  const std::string line =
      "the client's progress failed: " + (own != nullptr ? std::string(e.what()) : describe_foreign_exception(e));
  {
    std::lock_guard<std::mutex> lock(mutex);
    broken = line;
  }
  for (auto& [id, p] : in_flight) fail(*p, line);
  in_flight.clear();
  std::deque<std::unique_ptr<Pending>> rest;
  {
    std::lock_guard<std::mutex> lock(mutex);
    rest.swap(outbound);
  }
  for (auto& p : rest) fail(*p, line);
}

bool Client::State::caller_pass() {
  try {
    if (broken.empty()) return pass();
  } catch (const std::exception& e) {
    break_down(e);
  }
  return false;
}

void Client::State::run() {
  try {
    loop();
    say_done();
  } catch (const std::exception& e) {
    break_down(e);
  }
}

void Client::State::fallback_loop() {
  at::NoGradGuard no_grad;
  for (;;) {
    std::unique_ptr<Pending> p;
    {
      std::unique_lock<std::mutex> lock(fallback_mutex);
      fallback_cv.wait(lock, [&] { return fallback_stop || !fallback_queue.empty(); });
      if (fallback_queue.empty()) return;
      p = std::move(fallback_queue.front());
      fallback_queue.pop_front();
    }
    try {
      if (fallback_entries.empty()) fallback_entries = read_repository(options.repository);
      const ModelEntry& entry = find_entry(fallback_entries, p->model);
      auto& model = fallback_models[p->model];
      if (!model) model = load_model(entry);
      Request request = parse_request(p->bytes);
      InferResult r;
      r.output = run_local(*model, entry, request.inputs).clone();
      r.server = -1;
      r.pack_us = p->pack_us;
      r.latency_us = us_between(p->called, Clock::now());
      {
        std::lock_guard<std::mutex> lock(mutex);
        stats.fallbacks += 1;
      }
      p->promise.set_value(std::move(r));
    } catch (const std::exception& e) {
      const auto* err = dynamic_cast<const Error*>(&e);
      fail(*p, "local fallback for request " + std::to_string(p->id) + " of model '" + p->model +
                   "' failed: " + (err ? err->message() : std::string(e.what())));
    }
  }
}

Client::Client(collectives::BackendPtr comm, std::vector<int> servers, ClientOptions options)
    : state_(std::make_unique<State>()) {
  HPCML_CHECK_AS(ConfigError, comm != nullptr, "serve: a client needs a communicator");
  HPCML_CHECK_AS(ConfigError, !servers.empty(), "serve: a client needs at least one server rank");
  auto& s = *state_;
  s.comm = std::move(comm);
  s.servers = std::move(servers);
  s.options = std::move(options);
  s.load.assign(s.servers.size(), 0);
  s.dead.assign(s.servers.size(), false);
  s.suspected_at.assign(s.servers.size(), Clock::now());
  s.last_heard.assign(s.servers.size(), Clock::now());
  if (s.options.fallback) {
    HPCML_CHECK_AS(ConfigError, !s.options.repository.empty(),
                   "config error: key 'serve.repository': the client's local fallback needs the model repository");
    s.fallback_thread = std::thread([&s] { s.fallback_loop(); });
  }
  if (s.options.progress_thread) s.progress = std::thread([&s] { s.run(); });
}

Client::~Client() {
  try {
    finish();
  } catch (const std::exception& e) {
    HPCML_LOG_ERROR("serve: client shutdown failed: {}", e.what());
  }
}

std::future<InferResult> Client::infer_async(const std::string& model, const NamedInputs& inputs) {
  auto& s = *state_;
  auto p = std::make_unique<Pending>();
  p->called = Clock::now();
  p->id = s.next_id.fetch_add(1);
  p->model = model;
  p->bytes = std::make_shared<std::vector<char>>(pack_request(p->id, model, inputs));
  p->pack_us = us_between(p->called, Clock::now());
  auto future = p->promise.get_future();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.broken.empty())
      HPCML_THROW(ServeError, rank_tag(), " serve: ", s.broken);
    HPCML_CHECK_AS(ServeError, !s.stopping, rank_tag(), " serve: infer_async('", model, "') after finish()");
    s.outbound.push_back(std::move(p));
  }
  if (s.options.progress_thread) {
    s.cv.notify_one();
  } else if (s.broken.empty()) {
    // Caller-driven: send it now (replies are taken in wait() and poll()).
    try {
      s.send_queued();
    } catch (const std::exception& e) {
      s.break_down(e);
    }
  }
  return future;
}

std::future<InferResult> Client::infer_async(const std::string& model, const std::map<std::string, at::Tensor>& inputs) {
  return infer_async(model, fixed_inputs(inputs));
}

InferResult Client::infer(const std::string& model, const NamedInputs& inputs) {
  auto future = infer_async(model, inputs);
  return wait(future);
}

InferResult Client::wait(std::future<InferResult>& future) {
  auto& s = *state_;
  if (!s.options.progress_thread) {
    // Every pass either moves something or ages the in-flight requests towards
    // server_timeout_s, after which they fall back or fail: this loop ends.
    while (future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      if (s.caller_pass()) continue;
      HPCML_CHECK_AS(ServeError, s.broken.empty(), rank_tag(), " serve: ", s.broken);
      std::this_thread::yield();
    }
  }
  return future.get();
}

bool Client::poll() {
  auto& s = *state_;
  return s.options.progress_thread ? false : s.caller_pass();
}

void Client::finish() {
  auto& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.finished) return;
    s.finished = true;
    s.stopping = true;
  }
  s.cv.notify_all();
  if (s.progress.joinable()) s.progress.join();
  if (!s.options.progress_thread && s.broken.empty()) {
    try {
      while (!s.drained()) {
        if (!s.pass()) std::this_thread::yield();
      }
      s.say_done();
    } catch (const std::exception& e) {
      s.break_down(e);
    }
  }
  {
    std::lock_guard<std::mutex> lock(s.fallback_mutex);
    s.fallback_stop = true;
  }
  s.fallback_cv.notify_all();
  if (s.fallback_thread.joinable()) s.fallback_thread.join();
}

ClientStats Client::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

const std::vector<int>& Client::servers() const { return state_->servers; }

}  // namespace hpcml::launch::serve
