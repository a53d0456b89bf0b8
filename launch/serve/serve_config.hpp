/// @file
/// The config of `hpcml serve` (section `serve`, with the shared runtime and log sections).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "launch/run_config.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/server.hpp"

namespace hpcml::launch::serve {

/// What the built-in client driver does on each client rank.
struct DriverSection {
  std::string model = "facile";
  std::vector<std::string> files;
  std::map<std::string, std::string> fields;
  int rows_per_request = 16;
  std::int64_t events = 0;
  int in_flight = 4;
  std::string progress = ClientOptions{}.progress_thread ? "thread" : "caller";
  double cpu_work_us = 0;
  int warmup_events = 8;
  bool verify = true;
  double rtol = 1e-5;
  double atol = 1e-6;
  std::string metrics;
  std::int64_t seed = 1;

  template <typename V>
  void describe(V& v) {
    v.field("model", model, "the model (a folder of serve.repository) every event calls");
    v.field("files", files, "HDF5 files or glob patterns with the events; empty: seeded synthetic inputs (zoo models)");
    v.field("fields", fields, "model input -> dataset in the files (default: the zoo's field, e.g. x -> inputs)");
    v.field("rows_per_request", rows_per_request,
            "rows per event and request (FACILE: channels of a detector region; DeepCalo: images)",
            config::in_range(1, 1 << 20));
    v.field("events", events, "events over all clients; 0: every full event of the files (1000 when synthetic)",
            config::at_least<std::int64_t>(0));
    v.field("in_flight", in_flight, "events in flight per client (SONIC ExternalWork streams)", config::in_range(1, 4096));
    v.field("progress", progress,
            "thread: a progress thread moves requests while the event loop computes; caller: the event loop "
            "drives progress itself (no thread hand-off, for a client alone on its core; polls during CPU work)",
            config::one_of({"thread", "caller"}));
    v.field("cpu_work_us", cpu_work_us, "CPU work per event before its model call (the rest of reconstruction), us",
            config::in_range(0.0, 1e9));
    v.field("warmup_events", warmup_events, "events sent before timing starts (per client)", config::in_range(0, 1 << 20));
    v.field("verify", verify, "after serving, rerun every event locally and compare (rtol, atol)");
    v.field("rtol", rtol, "relative tolerance of the verification", config::in_range(0.0, 1.0));
    v.field("atol", atol, "absolute tolerance of the verification", config::in_range(0.0, 1e6));
    v.field("metrics", metrics, "JSON file the lowest client rank writes with every rank's metrics; empty: none");
    v.field("seed", seed, "seed of synthetic inputs");
  }
};

/// The serve section. Keys that set the roles', a server's or a client's options take
/// their defaults from RoleOptions, ServerOptions and ClientOptions, and convert into them
/// in role_options(), server_options() and client_options() only.
struct ServeSection {
  std::string repository;
  std::string roles = RoleOptions{}.mode;
  int servers = RoleOptions{}.servers;
  double server_ratio = RoleOptions{}.server_ratio;
  double max_request_mb = config::bytes_to_mib(ServerOptions{}.max_request_bytes);
  double heartbeat_s = kDefaultHeartbeatS;
  double client_timeout_s = ServerOptions{}.client_timeout_s;
  double server_timeout_s = ClientOptions{}.server_timeout_s;
  double retry_s = ClientOptions{}.retry_s;
  bool fallback = ClientOptions{}.fallback;
  int server_threads = ServerOptions{}.intra_op_threads;
  std::string server_compute = ServerOptions{}.compute;
  DriverSection client;

  template <typename V>
  void describe(V& v) {
    v.field("repository", repository, "model repository: one folder per model with its config.yaml (docs/serving.md)");
    v.field("roles", roles,
            "auto: a Slurm het job's last group or an mpirun MPMD line's last app context serves, else the count; "
            "count: always the last serve.servers ranks",
            config::one_of({"auto", "count"}));
    v.field("servers", servers, "server ranks (the last ranks) when the launch does not decide", config::at_least(1));
    v.field("server_ratio", server_ratio, "> 0: round(ratio * ranks) servers instead of serve.servers",
            config::in_range(0.0, 1.0));
    v.field("max_request_mb", max_request_mb, "largest request a server reads; larger ones get an error reply",
            config::in_range(0.001, 65536.0));
    v.field("heartbeat_s", heartbeat_s, "heartbeat period both ways", config::in_range(0.001, 3600.0));
    v.field("client_timeout_s", client_timeout_s,
            "a server drops the queued work of a client silent this long and serves the others",
            config::in_range(0.01, 86400.0));
    v.field("server_timeout_s", server_timeout_s,
            "a client suspects a server silent this long while holding its requests and re-sends them to "
            "another live server", config::in_range(0.01, 86400.0));
    v.field("retry_s", retry_s, "a suspect server gets requests again after this long (or as soon as it is heard)",
            config::in_range(0.0, 86400.0));
    v.field("fallback", fallback, "clients run the model locally when no server answers (else the request fails)");
    v.field("server_threads", server_threads, "LibTorch intra-op threads per server rank (shared by its instances)",
            config::in_range(1, 1024));
    v.field("server_compute", server_compute,
            "where batches run: threads (each model's instances threads), inline (the server's receiver thread, "
            "one instance per model, no hand-off), auto (inline when the server rank may use one core only)",
            config::one_of({"auto", "threads", "inline"}));
    v.section("client", client, "the built-in client driver (hpcml serve on client ranks)");
  }

  /// Which ranks serve, from these keys (checked).
  RoleOptions role_options() const {
    RoleOptions o;
    o.mode = roles;
    o.servers = servers;
    o.server_ratio = server_ratio;
    return o;
  }

  /// A server rank's options from these keys (checked). drain_timeout_s is not a serve
  /// key: it keeps ServerOptions' default unless the caller sets it.
  ServerOptions server_options() const {
    ServerOptions o;
    o.repository = repository;
    o.max_request_bytes = config::mib_to_bytes(max_request_mb);
    o.heartbeat_s = heartbeat_s;
    o.client_timeout_s = client_timeout_s;
    o.intra_op_threads = server_threads;
    o.compute = server_compute;
    return o;
  }

  /// A client rank's options from these keys (checked), the driver's progress mode included.
  ClientOptions client_options() const {
    ClientOptions o;
    o.server_timeout_s = server_timeout_s;
    o.retry_s = retry_s;
    o.heartbeat_s = heartbeat_s;
    o.fallback = fallback;
    o.repository = repository;
    o.progress_thread = client.progress == "thread";
    return o;
  }
};

struct ServeConfig {
  RuntimeOptions runtime;
  LogSection log;
  ServeSection serve;

  template <typename V>
  void describe(V& v) {
    v.section("runtime", runtime, "ranks, threads and deadlines");
    v.section("log", log, "logging");
    v.section("serve", serve, "inference as a service inside the job (docs/serving.md)");
  }
};

}  // namespace hpcml::launch::serve
