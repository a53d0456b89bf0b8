/// @file
/// Importance-sampled posteriors of the GW flow (nsf-gw): `hpcml infer -i/-o` for the
/// events of one strain file, and the per-event draws a campaign's units use.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "io/physics/gw_signal.hpp"
#include "io/table.hpp"
#include "launch/runtime.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::models::flows {
class NsfModel;
}

namespace hpcml::launch {

/// Event `row` of input `file` (its position in the input list; 0 for -i) draws from a
/// generator seeded by (seed, file, row): the draws do not depend on ranks or units.
uint64_t event_seed(uint64_t seed, uint64_t file, int64_t row);

/// The importance-weighted posteriors of some events of one file.
struct Posteriors {
  at::Tensor rows;         ///< (n,) int64: each event's row in its file
  at::Tensor samples;      ///< (n, draws, 5) float64: the values the weights were computed at
  at::Tensor log_q;        ///< (n, draws) float64: the proposal's log density of each draw
  at::Tensor log_weights;  ///< (n, draws) float64: log L + log π - log q; -inf outside the prior
  at::Tensor stats;        ///< (n, 3) float64: ess, efficiency, log evidence
};

/// Draws `draws` θ for each row of `strain` (n, T), the events `rows` of input `file`,
/// each from its event_seed, and weights them against the toy model (options `gw`).
Posteriors draw_posteriors(models::flows::NsfModel& model, const at::Tensor& strain, const std::vector<int64_t>& rows,
                           uint64_t file, uint64_t seed, int64_t draws, const io::gw::GwOptions& gw);

/// The output columns of `p`: row, samples (with units and names), log_q, log_weights,
/// weights (normalised per event; zero when every draw is outside the prior), ess,
/// efficiency, log_evidence.
std::vector<io::Column> posterior_columns(const Posteriors& p);

/// What `hpcml infer` reads and writes.
struct InferOptions {
  std::string checkpoint;  ///< checkpoint file ("": the newest in run.dir)
  std::string input;       ///< HDF5 file with the strain field (datagen gw layout and attributes)
  std::string output;      ///< HDF5 file to write (atomically: a temporary name, then renamed)
  int64_t samples = 5000;  ///< proposal draws per event
  int64_t first = 0;       ///< first event (row) of `input`
  int64_t events = 1;      ///< events from `first` (0: to the end of the file)
  uint64_t seed = 1;       ///< event i draws from event_seed(seed, 0, i): independent of the ranks
};

/// Draws `samples` θ from the flow of `checkpoint` (model nsf-gw) for each event of
/// `input` and weights them against the toy model's exact likelihood and prior
/// (importance sampling, docs/flows.md). Collective: events are spread over the ranks
/// and gathered on rank 0, which prints each event's sample efficiency and log
/// evidence and writes `output` (schema hpcml.gw.posterior: posterior_columns, and the
/// true parameters when the input has
/// them) with provenance attributes. Returns 0.
int infer(Context& context, const TrainConfig& config, const InferOptions& options);

}  // namespace hpcml::launch
