/// @file
/// `hpcml serve` on every rank: the role plan, the servers, the built-in client
/// driver (an emulated event-processing job) and the job's metrics.
#pragma once

#include <algorithm>
#include <vector>

#include "launch/runtime.hpp"
#include "launch/serve/serve_config.hpp"

namespace hpcml::launch::serve {

/// The world as an MPI backend, for serving's point-to-point messages (which the
/// nccl backend does not carry): `context.world` when it is one, else a new one
/// (collective over the world) with the deadline `timeout_s`.
collectives::BackendPtr mpi_world(Context& context, double timeout_s);

/// Runs `hpcml serve` on this rank (every rank of the world calls it). Returns this
/// rank's exit code: 0; 1 (kExitError) for a client whose requests failed or whose
/// results differ from local inference, or a server that lost a client.
int run_serve(Context& context, const ServeConfig& config);

/// The p-quantile (0..1, nearest rank) of `values`; 0 when empty. Sorts `values`.
inline double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t i = std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  return values[i];
}

}  // namespace hpcml::launch::serve
