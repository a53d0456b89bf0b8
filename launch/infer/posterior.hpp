/// @file
/// `hpcml infer` today: importance-sampled posteriors of the GW flow (nsf-gw) for the
/// events of one strain file. Batch-inference campaigns land in this folder next.
#pragma once

#include <cstdint>
#include <string>

#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch {

/// What `hpcml infer` reads and writes.
struct InferOptions {
  std::string checkpoint;  ///< checkpoint file ("": the newest in run.dir)
  std::string input;       ///< HDF5 file with the strain field (datagen gw layout and attributes)
  std::string output;      ///< HDF5 file to write (atomically: a temporary name, then renamed)
  int64_t samples = 5000;  ///< proposal draws per event
  int64_t first = 0;       ///< first event (row) of `input`
  int64_t events = 1;      ///< events from `first` (0: to the end of the file)
  uint64_t seed = 1;       ///< event i draws from a generator seeded by (seed, i): independent of the ranks
};

/// Draws `samples` θ from the flow of `checkpoint` (model nsf-gw) for each event of
/// `input` and weights them against the toy model's exact likelihood and prior
/// (importance sampling, docs/flows.md). Collective: events are spread over the ranks
/// and gathered on rank 0, which prints each event's sample efficiency and log
/// evidence and writes `output` (schema hpcml.gw.posterior: row, samples, log_weights,
/// weights, ess, efficiency, log_evidence, and the true parameters when the input has
/// them) with provenance attributes. Returns 0.
int infer(Context& context, const TrainConfig& config, const InferOptions& options);

}  // namespace hpcml::launch
