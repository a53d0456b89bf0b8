/// @file
/// The client library of `hpcml serve`: offload model calls from a client rank to
/// the server ranks of the same MPI job.
///
/// @code
/// auto serve_comm = world->dup("serve");  // a communicator of the service's own
/// serve::Client client(serve_comm, plan.servers, options);
/// auto future = client.infer_async("facile", {{"x", rows}});  // returns at once
/// ... other work ...
/// at::Tensor y = future.get().output;  // or a ServeError naming the server rank
/// client.finish();                     // DONE to every server
/// @endcode
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "collectives/backend.hpp"
#include "core/error.hpp"
#include "launch/serve/protocol.hpp"

namespace hpcml::launch::serve {

/// A request that failed: an error reply (unknown model, bad input...) or a server
/// that stopped answering. The message names this rank, the server rank, the
/// model and the request.
class ServeError : public Error {
  using Error::Error;
};

struct ClientOptions {
  /// A server that has this client's requests and sends nothing (no reply, no
  /// heartbeat) for this long is suspect: its requests are re-sent to another live
  /// server (the first reply to a request wins; a late duplicate is dropped by its
  /// request id). With no live server left they fall back or fail.
  double server_timeout_s = 30.0;
  /// A suspect server gets requests again this long after it was suspected, or as
  /// soon as it is heard from (a reply or a heartbeat).
  double retry_s = 10.0;
  double heartbeat_s = kDefaultHeartbeatS;  ///< heartbeat to every live server (so servers can tell a vanished client)
  bool fallback = false;      ///< run the model locally when no server can answer
  std::string repository;     ///< model repository for the fallback (same layout as the servers')
  bool send_heartbeats = true;  ///< false only in tests (a client that looks vanished)
  /// true: a progress thread makes every call on the client's communicator, so
  /// requests move while the caller computes. false (caller-driven): no thread; infer_async sends at once and
  /// progress happens inside wait(), infer(), poll() and finish(), all called from
  /// one thread. No hand-off between threads, so a client on one core issues
  /// requests several times faster; replies wait while the caller computes.
  bool progress_thread = true;
};

/// The answer to one request.
struct InferResult {
  at::Tensor output;
  ServerTiming timing;    ///< the server's breakdown (zero for a local fallback)
  int server = -1;        ///< the server's rank; -1: computed locally (fallback)
  double latency_us = 0;  ///< infer_async call -> result ready
  double pack_us = 0;     ///< packing the request and unpacking the reply (S)
};

/// Counters of one client.
struct ClientStats {
  std::int64_t sent = 0;
  std::int64_t replies = 0;
  std::int64_t errors = 0;     ///< error replies and timeouts delivered as ServeError
  std::int64_t fallbacks = 0;  ///< requests computed locally
  std::int64_t rerouted = 0;   ///< requests re-sent to another server after theirs was suspected
  std::int64_t duplicates = 0;  ///< late replies to requests already answered, dropped
  std::vector<int> dead_servers;  ///< servers suspected (silent past server_timeout_s), once per suspicion
};

/// With a progress thread (the default): thread-safe, infer_async may be called from
/// several threads; that thread makes every call on `comm` (Open MPI has no
/// progress thread of its own), so requests move and replies arrive while the caller
/// computes. Caller-driven (ClientOptions::progress_thread = false): one thread only.
class Client {
 public:
  /// `comm`: the serving communicator (same on servers: a Backend::dup of the world,
  /// for instance); `servers`: their ranks in it. The client shares `comm`.
  Client(collectives::BackendPtr comm, std::vector<int> servers, ClientOptions options = {});
  /// finish() if not called; never throws.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Sends the request to the live server with the fewest requests in flight and
  /// returns at once. The future yields the result or throws ServeError. Inputs
  /// are copied before returning; the caller may reuse them.
  std::future<InferResult> infer_async(const std::string& model, const NamedInputs& inputs);
  std::future<InferResult> infer_async(const std::string& model, const std::map<std::string, at::Tensor>& inputs);
  /// infer_async(...) then wait().
  InferResult infer(const std::string& model, const NamedInputs& inputs);
  /// The result of a future from infer_async (throws ServeError). With a progress
  /// thread this is future.get(); caller-driven, it drives progress until the reply
  /// (or server_timeout_s) arrives.
  InferResult wait(std::future<InferResult>& future);
  /// Caller-driven: one round of progress (sends, replies, heartbeats, timeouts);
  /// returns whether anything moved. With a progress thread: does nothing, false.
  /// An event loop that computes between requests calls it now and then.
  bool poll();

  /// Waits for the requests in flight (each bounded by server_timeout_s), sends DONE
  /// to every live server and stops the progress thread. Idempotent.
  void finish();

  ClientStats stats() const;
  const std::vector<int>& servers() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace hpcml::launch::serve
