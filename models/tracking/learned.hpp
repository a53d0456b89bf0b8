/// @file
/// The learned stages of the Exa.TrkX-style tracking pipeline (docs/tracking.md):
///
/// 1. a metric-learning **embedding** MLP, trained with a hinge loss on pairs, then a
///    radius graph in the embedding space (the Kokkos radius_graph of graph.hpp: a cell
///    list, never an N×N matrix);
/// 2. an **edge filter** MLP that prunes the candidate edges;
/// 3. an **interaction network** that scores the remaining edges by message passing
///    (index_add over packed graphs);
/// 4. track building: connected components (graph.hpp) on the edges above a cut.
///
/// Also: node and edge features, edge truth, the three losses, the whole inference
/// pipeline, weights to and from HDF5 (the Python twin models/twins/tracking.py reads
/// the same file), and events from `datagen tracking` files.
///
/// Tensors are CPU float32 (features, scores) and int64 (edges, (2, E), source first).
/// The modules live behind a pointer so that this header stays free of <torch/torch.h>.
/// Not thread-safe: one thread drives a LearnedPipeline.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/tracking/graph.hpp"

namespace hpcml::models::tracking {

using NamedTensor = std::pair<std::string, at::Tensor>;

/// Per hit: r (m), φ/π, z (m), cos φ, sin φ, η/2 with η = asinh(z/r) seen from the origin.
inline constexpr int64_t kNodeFeatures = 6;
/// Per directed edge (a -> b): the features of a and b, then Δr, Δφ/π (wrapped to
/// [-1, 1)), Δz, Δη, the φ slope 0.2·(Δφ/π)/max(Δr, 0.01) and the z intercept
/// 10·(z_a − r_a Δz / max(Δr, 0.01)), the last two clamped to [-20, 20].
inline constexpr int64_t kEdgeFeatures = 2 * kNodeFeatures + 6;

/// (N, kNodeFeatures) float32 features of an event's hits.
at::Tensor node_features(const TrackingEvent& event);

/// (E, kEdgeFeatures) float32 features of `edges` (2, E) int64 over `x` (N, kNodeFeatures).
at::Tensor edge_features(const at::Tensor& x, const at::Tensor& edges);

/// (E,) bool: which of `edges` (2, E) are true edges of `event` (true_edges()), as
/// unordered pairs.
at::Tensor edge_truth(const TrackingEvent& event, const at::Tensor& edges);

/// The three learned stages.
enum class Stage { kEmbedding, kFilter, kGnn };
/// "embedding", "filter", "gnn": also the prefixes of the parameter names in weights files.
const char* stage_name(Stage stage);

/// Architecture of the three networks. Every MLP is (Linear, LayerNorm, ReLU) per hidden
/// layer and a final Linear (names net.<i>.weight / .bias, as torch.nn.Sequential numbers them).
struct Architecture {
  int64_t embedding_dim = 8;
  std::vector<int64_t> embedding_hidden{128, 128, 128};
  std::vector<int64_t> filter_hidden{128, 128, 128};
  int64_t gnn_hidden = 64;
  int64_t gnn_iterations = 6;
  uint64_t seed = 0;  ///< initial weights
};

/// The embedding MLP, the filter MLP and the interaction network.
class LearnedPipeline {
 public:
  explicit LearnedPipeline(const Architecture& architecture);
  ~LearnedPipeline();
  LearnedPipeline(const LearnedPipeline&) = delete;
  LearnedPipeline& operator=(const LearnedPipeline&) = delete;

  /// (N, embedding_dim) embedding of node features `x` (N, kNodeFeatures).
  at::Tensor embed(const at::Tensor& x) const;
  /// (E,) filter logits of `edges` (2, E) over `x`.
  at::Tensor filter_logits(const at::Tensor& x, const at::Tensor& edges) const;
  /// (E,) interaction-network logits of `edges` over `x`. Several events form one packed
  /// graph: concatenate their nodes and offset each event's edges by its first node.
  at::Tensor gnn_logits(const at::Tensor& x, const at::Tensor& edges) const;

  /// One stage's parameters in registration order, named without the stage prefix.
  std::vector<NamedTensor> parameters(Stage stage) const;
  /// Every parameter, named "<stage>.<name>" (the weights-file names).
  std::vector<NamedTensor> state() const;
  /// Copies `state` (names as state() gives them) into the parameters. Throws
  /// hpcml::ConfigError naming a missing, unexpected or mis-shaped tensor.
  void load_state(const std::vector<NamedTensor>& state, const std::string& source);
  void set_training(bool on);
  const Architecture& architecture() const { return architecture_; }

 private:
  struct Modules;
  Architecture architecture_;
  std::unique_ptr<Modules> modules_;
};

// --- graph construction -------------------------------------------------------------

struct EmbeddingGraphOptions {
  double radius = 0.8;          ///< in embedding space
  int64_t max_neighbours = 32;  ///< per hit, the nearest (0: no cap)
};

/// Candidate edges of one event from its embedding (N, d): the Kokkos radius graph
/// (both directions, capped at max_neighbours per hit), made unique as unordered pairs
/// and oriented inner -> outer by the hit radius `x`[:, 0] (ties: lower index first).
/// Memory O(N + E): never an N×N matrix. (2, E) int64, sorted by (source, target).
at::Tensor embedding_graph(const at::Tensor& embedding, const at::Tensor& x, const EmbeddingGraphOptions& options);

// --- losses -----------------------------------------------------------------------------

struct EmbeddingLossOptions {
  double margin = 1.0;           ///< negatives are pushed beyond this distance
  int64_t random_pairs = 4000;   ///< random negative candidates per event
  double hard_radius = 1.0;      ///< hard negatives: pairs within this distance in the current embedding
  int64_t hard_neighbours = 16;  ///< ... at most this many per hit
  double negative_weight = 1.0;  ///< weight of the negatives' mean against the positives'
};

/// Hinge loss of one event: positives are its true edges (loss d²); negatives are pairs of
/// hits of different particles (or noise), random ones and the current embedding's
/// radius-graph neighbours (loss max(0, margin − d)²). Pairs of the same particle that
/// are not true edges are left out. Mean over positives + weight · mean over negatives.
/// `generator` draws the random pairs.
at::Tensor embedding_loss(const LearnedPipeline& pipeline, const at::Tensor& x, const TrackingEvent& event,
                          const at::Tensor& truth_edges, const EmbeddingLossOptions& options,
                          at::Generator generator);

/// Mean binary cross-entropy of `logits` against `truth` (bool), positives weighted by
/// `pos_weight`.
at::Tensor edge_loss(const at::Tensor& logits, const at::Tensor& truth, double pos_weight);

// --- inference ----------------------------------------------------------------------

struct PipelineCuts {
  EmbeddingGraphOptions graph;
  double filter = 0.1;  ///< keep edges with filter score > this
  double gnn = 0.5;     ///< track building: connected components on GNN scores > this
};

/// Every intermediate of one event through the pipeline.
struct PipelineOutput {
  at::Tensor x;               ///< (N, kNodeFeatures)
  at::Tensor embedding;       ///< (N, d)
  at::Tensor graph_edges;     ///< (2, E1) candidate edges from the embedding
  at::Tensor filter_scores;   ///< (E1,) sigmoid of the filter logits
  at::Tensor filter_edges;    ///< (2, E2) graph_edges with filter score > cuts.filter
  at::Tensor gnn_scores;      ///< (E2,) sigmoid of the GNN logits
  at::Tensor labels;          ///< (N,) connected components on gnn_scores > cuts.gnn
};

/// Runs the stages under no-grad, in eval mode (`pipeline` must be in eval mode).
PipelineOutput run_pipeline(const LearnedPipeline& pipeline, const TrackingEvent& event, const PipelineCuts& cuts);

// --- files --------------------------------------------------------------------------

/// Writes the pipeline's weights (state() names) and `attributes` (strings) to HDF5:
/// the file the Python twin reads (models/twins/tracking.py). Atomic (tmp + rename).
void save_weights(const std::string& path, const LearnedPipeline& pipeline,
                  const std::map<std::string, std::string>& attributes);

/// The root string attributes of a weights file.
std::map<std::string, std::string> read_weight_attributes(const std::string& path);
/// The datasets of a weights file whose names do not start with "__", as float32 tensors.
std::vector<NamedTensor> read_weights(const std::string& path);

/// Architecture attributes save_weights() records ("embedding_dim", "embedding_hidden" as
/// "128,128,128", ...) and their inverse (throws hpcml::IoError naming the attribute).
std::map<std::string, std::string> architecture_attributes(const Architecture& architecture);
Architecture architecture_from_attributes(const std::map<std::string, std::string>& attributes,
                                          const std::string& source);

/// The events of one `datagen tracking` HDF5 file (docs/datasets.md "## tracking").
/// Throws hpcml::IoError naming the file and dataset.
std::vector<TrackingEvent> read_tracking_file(const std::string& path);

}  // namespace hpcml::models::tracking
