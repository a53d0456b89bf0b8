/// @file
/// The non-learned core of the Exa.TrkX-style tracking pipeline (docs/tracking.md):
/// radius-graph construction in an embedding space and connected components as Kokkos
/// kernels, a plain C++ connected-components reference, the geometric baseline
/// (adjacent-layer φ-slope / z0 windows) with its tuner, edge and track metrics, and a
/// timing function for `hpcml bench model tracking`.
///
/// Tensors: every function takes CPU tensors. Inputs must have the dtype named on the
/// declaration (a mismatch throws hpcml::ConfigError naming the tensor, expected vs found);
/// non-contiguous inputs are made contiguous (one copy), contiguous ones are read in
/// place. Outputs are new tensors owned by the caller.
///
/// Kokkos: the kernels run on Kokkos's default execution space, which is Serial in this
/// build (Debian's Kokkos 3.4.1), so they are single-threaded and synchronous. Kokkos is
/// initialised on first use if the program has not done so, and finalised at exit.
/// Execution on a device backend is unverified (docs/tracking.md).
///
/// Thread safety: the functions are re-entrant; the Kokkos kernels serialise on the
/// Serial execution space.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "io/table.hpp"

namespace hpcml::models::tracking {

// --- radius graph -----------------------------------------------------------------

/// Which of the two directed pairs of a neighbour pair {i, j} the radius graph lists.
enum class EdgeDirection {
  kOnce,  ///< (i, j) with i < j only: each unordered pair once
  kBoth,  ///< (i, j) and (j, i): a directed graph, symmetric unless max_neighbours cuts it
};

struct RadiusGraphOptions {
  double radius = 1.0;                           ///< pairs with Euclidean distance <= radius
  EdgeDirection direction = EdgeDirection::kBoth;
  /// At most this many edges out of each source point, the nearest ones (ties by index);
  /// 0 for no limit. With kOnce only targets j > i compete.
  int64_t max_neighbours = 0;
  /// The cell list bins the first min(d, 3) coordinates; it is coarsened (cells larger
  /// than `radius`) so that it has at most max(cell_factor * N, 1) cells.
  double cell_factor = 2.0;
};

/// Neighbour pairs within `options.radius` of `points` (N, d) float32, d >= 1.
///
/// A Kokkos cell list over the first min(d, 3) coordinates, then two passes (count the
/// edges of each source, exclusive prefix sum, fill), so the output is allocated once at
/// its exact size; memory is O(N + cells + E), never O(N^2). Distances are accumulated in
/// double over all d coordinates. `points` is read in place through an unmanaged View.
///
/// @param[in] points (N, d) float32 CPU tensor; all values finite.
/// @returns (2, E) int64: row 0 the sources in ascending order, row 1 each source's
///          targets in ascending index order.
at::Tensor radius_graph(const at::Tensor& points, const RadiusGraphOptions& options);

// --- connected components ---------------------------------------------------------

/// Component labels of the graph on `num_nodes` nodes with the edges of `edges` whose
/// score is > `threshold` (all of them when `scores` is undefined). Edge direction is
/// ignored. Label = smallest node index in the component, so labels are canonical and
/// comparable between implementations.
///
/// Kokkos kernel: parallel union-find (hook the larger root to the smaller one with an
/// atomic compare-and-swap, retry on conflict), then pointer jumping to the root. The
/// labels tensor itself is the union-find parent array (an unmanaged View over it).
///
/// @param[in] edges (2, E) int64 CPU, indices in [0, num_nodes).
/// @param[in] scores (E,) float32 CPU, or an undefined tensor for "keep every edge".
/// @returns (num_nodes,) int64 labels.
at::Tensor connected_components(int64_t num_nodes, const at::Tensor& edges, const at::Tensor& scores = {},
                                double threshold = 0.5);

/// The same algorithm, sequential and in plain C++ over the tensors' memory (union by
/// smaller index, path halving): the reference for the Kokkos kernel and the benchmark.
at::Tensor connected_components_reference(int64_t num_nodes, const at::Tensor& edges, const at::Tensor& scores = {},
                                          double threshold = 0.5);

// --- events -----------------------------------------------------------------------

/// One tracking event (schema hpcml.tracking, docs/datasets.md "## tracking").
struct TrackingEvent {
  at::Tensor hits;         ///< (N, 3) float32: x, y, z in mm
  at::Tensor layer;        ///< (N,) int32: layer index
  at::Tensor particle_id;  ///< (N,) int64: 1..n, 0 for noise
  at::Tensor particles;    ///< (P,) int64: the particle ids of the event
  at::Tensor particle_pt;  ///< (P,) float32: pT in GeV, aligned with `particles`
};

/// The events of a `datagen tracking` table (io::datagen::generate_tracking), copied
/// into tensors. Throws hpcml::IoError when a /hits or /particles dataset is missing or
/// has the wrong dtype or shape.
std::vector<TrackingEvent> events_from_table(const io::Table& table);

/// True edges: consecutive hits of each particle (particle_id > 0) ordered by layer,
/// then by radius. (2, T) int64, inner hit first; sorted by (source, target).
at::Tensor true_edges(const TrackingEvent& event);

// --- geometric baseline -----------------------------------------------------------

/// Windows of the geometric edge selection between hits on layers l and l + 1:
/// keep (a, b) when |Δφ| / Δr <= phi_slope (Δφ wrapped to (-π, π]) and the z
/// intercept at r = 0 of the straight line through both, |z_a - r_a Δz / Δr|, is <= z0.
struct BaselineWindows {
  double phi_slope = 6e-4;  ///< rad per mm
  double z0 = 200;          ///< mm
};

/// The baseline's edges of one event: (2, E) int64, inner hit first, sorted.
at::Tensor geometric_edges(const TrackingEvent& event, const BaselineWindows& windows);

struct BaselineTuneOptions {
  double target_efficiency = 0.95;  ///< edge efficiency the windows must reach
  /// Tuned to target + margin on the training events, so that held-out events,
  /// which fluctuate around the training value, still reach the target.
  double margin = 0.005;
  /// Trade-off points tried along the efficiency contour (quantile of the φ-slope
  /// window); the one with the fewest selected edges on the training events wins.
  int grid = 16;
};

/// The windows that reach `options.target_efficiency + margin` on `events` with the
/// fewest edges: for each φ-slope quantile on a grid, the smallest z0 quantile that
/// reaches the target (bisection), then the pair that selects the fewest edges. The
/// windows are quantiles of the true edges' |Δφ|/Δr and |z0|. Throws hpcml::ConfigError
/// when the target is unreachable (true edges that skip a layer cannot be selected).
BaselineWindows tune_baseline(const std::vector<TrackingEvent>& events, const BaselineTuneOptions& options = {});

// --- metrics ----------------------------------------------------------------------

/// Counts, so that events can be summed before the ratios are taken.
struct EdgeMetrics {
  int64_t true_edges = 0;      ///< unordered true pairs
  int64_t selected_edges = 0;  ///< unordered selected pairs (duplicates and both directions count once)
  int64_t true_selected = 0;   ///< selected pairs that are true pairs
  double efficiency() const { return true_edges ? static_cast<double>(true_selected) / true_edges : 0.0; }
  double purity() const { return selected_edges ? static_cast<double>(true_selected) / selected_edges : 0.0; }
  EdgeMetrics& operator+=(const EdgeMetrics& other);
};

/// Efficiency and purity of `selected` (2, E) against `truth` (2, T), both int64, as
/// unordered pairs (direction and duplicates ignored; self-loops never count as true).
EdgeMetrics edge_metrics(const at::Tensor& selected, const at::Tensor& truth);

struct TrackMetricsOptions {
  double pt_min = 1.0;             ///< GeV: particles in the efficiency denominator have pT > pt_min
  int64_t min_particle_hits = 3;   ///< ... and at least this many hits
  int64_t min_candidate_hits = 3;  ///< candidates with fewer hits are not counted for the fake rate
};

struct TrackMetrics {
  int64_t particles = 0;           ///< denominator of the efficiency
  int64_t matched_particles = 0;   ///< of those, matched by a candidate (double majority)
  int64_t candidates = 0;          ///< candidates with >= min_candidate_hits hits
  int64_t fake_candidates = 0;     ///< of those, matched to no particle
  double efficiency() const { return particles ? static_cast<double>(matched_particles) / particles : 0.0; }
  double fake_rate() const { return candidates ? static_cast<double>(fake_candidates) / candidates : 0.0; }
  TrackMetrics& operator+=(const TrackMetrics& other);
};

/// Track efficiency and fake rate of the candidates `labels` (N,) int64 (one component
/// label per hit, e.g. from connected_components) on `event`, by double majority: a
/// candidate c and a particle p match when c holds >= 50% of p's hits and p makes >= 50%
/// of c's hits (noise hits count in the candidate's size). A particle with pT > pt_min
/// and >= min_particle_hits hits is found when some candidate matches it; a candidate
/// with >= min_candidate_hits hits is fake when it matches no particle (of any pT).
TrackMetrics track_metrics(const at::Tensor& labels, const TrackingEvent& event, const TrackMetricsOptions& options = {});

// --- benchmark --------------------------------------------------------------------

struct TrackingBenchOptions {
  int64_t cc_nodes = 200000;        ///< random graph for connected components
  int64_t cc_edges = 400000;
  int64_t graph_points = 10000;     ///< points per radius-graph event
  int64_t graph_dim = 8;            ///< embedding dimension
  double graph_radius = 0.1;        ///< clusters of 10 points, sigma 0.02, centres uniform in [0, 1]^d
  int64_t graph_events = 5;
  int repeats = 5;                  ///< best of this many timed runs
  uint64_t seed = 1;
};

struct TrackingBenchResult {
  double cc_kokkos_s = 0;           ///< best time of connected_components
  double cc_reference_s = 0;        ///< best time of connected_components_reference
  int64_t cc_components = 0;
  double graph_events_per_s = 0;    ///< radius_graph events per second (best repeat)
  double graph_mean_edges = 0;      ///< edges per radius-graph event
};

/// Times connected components (Kokkos vs reference, on the same random graph, checking
/// that they agree) and the radius graph, on the calling thread. Call
/// at::set_num_threads(1) first for 1-thread figures (the kernels are single-threaded
/// on the Serial backend; input generation uses ATen).
TrackingBenchResult benchmark_tracking(const TrackingBenchOptions& options = {});

}  // namespace hpcml::models::tracking
