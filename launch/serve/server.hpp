/// @file
/// A model server rank of `hpcml serve`: receives requests from client ranks,
/// batches them per model, runs model instances on threads, replies to each client.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "collectives/backend.hpp"
#include "launch/serve/fill.hpp"
#include "launch/serve/protocol.hpp"

namespace hpcml::launch::serve {

/// A server's options. The serve.* keys take their defaults from these and convert into
/// them with ServeSection::server_options() (serve_config.hpp).
struct ServerOptions {
  std::string repository;                         ///< model repository directory
  std::int64_t max_request_bytes = 64ll << 20;    ///< larger requests get an error reply, unread
  double heartbeat_s = kDefaultHeartbeatS;        ///< heartbeat to clients with work pending
  double client_timeout_s = 60.0;                 ///< a client silent this long has vanished
  int intra_op_threads = 1;                       ///< LibTorch intra-op threads of this rank
  double drain_timeout_s = 60.0;                  ///< deadline for the last replies to go out
  /// Where batches run. "threads": each model's `instances` threads, fed by the
  /// receiver. "inline": the receiver thread runs due batches itself (one instance
  /// per model, no thread hand-off). "auto": inline when this process may run on one
  /// core only (mpirun --bind-to core, srun --cpus-per-task=1), else threads.
  std::string compute = "auto";
  /// Where the model instances live (runtime.device). On a GPU each instance thread
  /// has its own CUDA stream, and a batch's inputs are copied from pinned memory.
  c10::Device device{c10::kCPU};
};

/// What one server did, for metrics.
struct ServerReport {
  int rank = -1;
  std::string device = "cpu";  ///< where the instances ran (collectives::describe_device)
  double wall_s = 0;
  double busy_s = 0;  ///< model instance threads' time in batches (summed over instances)
  std::int64_t requests = 0;
  std::int64_t error_replies = 0;
  std::int64_t dropped = 0;  ///< requests of vanished clients, dropped
  std::vector<int> vanished_clients;
  std::map<std::string, std::map<std::int64_t, std::int64_t>> batch_rows_histogram;  ///< model -> rows -> batches
  /// model -> the throughput curve measured at start-up and the preferred sizes taken from it (fill.hpp)
  std::map<std::string, std::pair<std::vector<BatchPoint>, std::vector<int>>> measured_batch_sizes;
  std::vector<float> overhead_us;  ///< per request: receive, unpack, assembly share, scatter, reply pack and send
  double queue_us = 0, input_us = 0, infer_us = 0, output_us = 0;  ///< sums over requests
  /// As a JSON object (text).
  std::string to_json() const;
};

/// Serves until every client in `clients` has sent DONE or vanished (silent past
/// client_timeout_s). `comm` is the serving communicator (a duplicate of the world,
/// Backend::dup: ranks are world ranks); this rank must not be in `clients`. Blocks;
/// starts and joins its instance threads; only the calling thread uses `comm`.
/// Throws ConfigError / IoError when the repository cannot be loaded (before
/// serving anything). Bad requests never throw: they get error replies.
ServerReport run_server(collectives::BackendPtr comm, const std::vector<int>& clients, const ServerOptions& options);

}  // namespace hpcml::launch::serve
