/// @file
/// `hpcml tracking train|eval`: data-parallel training and evaluation of the learned
/// stages of the tracking pipeline (models/tracking/learned.hpp, docs/tracking.md), and
/// the `hpcml bench model tracking` benchmark.
///
/// Config keys: `hpcml tracking reference` (also in docs/tracking.md).
#pragma once

#include <string>
#include <vector>

#include "launch/run_config.hpp"
#include "launch/runtime.hpp"

namespace hpcml::launch {

struct TrackingDataSection {
  std::vector<std::string> files;
  std::vector<std::string> validation_files;
  int train_events = 0;
  int validation_events = 0;
  int baseline_tune_events = 100;
  template <typename V>
  void describe(V& v) {
    v.field("files", files, "training files or glob patterns (`hpcml datagen tracking`)");
    v.field("validation_files", validation_files, "evaluation files or glob patterns");
    v.field("train_events", train_events,
            "training events used (0: all), rounded down to a multiple of every stage's events_per_step",
            config::at_least(0));
    v.field("validation_events", validation_events, "evaluation events used (0: all)", config::at_least(0));
    v.field("baseline_tune_events", baseline_tune_events,
            "training events on which the geometric baseline's windows are tuned", config::at_least(1));
  }
};

/// Optimiser and loop settings shared by the three stages.
struct TrackingStageSection {
  int steps = 200;
  int events_per_step = 2;
  double lr = 1e-3;
  double lr_final_ratio = 0.1;
  double pos_weight = 1.0;
  template <typename V>
  void describe_loop(V& v) {
    v.field("steps", steps, "optimizer steps (every rank runs the same number)", config::at_least(0));
    v.field("events_per_step", events_per_step,
            "global batch: events per step over all ranks (a multiple of the rank count; each rank takes its share)",
            config::at_least(1));
    v.field("lr", lr, "Adam learning rate", config::positive<double>());
    v.field("lr_final_ratio", lr_final_ratio, "cosine decay of the learning rate to lr * this at the last step",
            config::in_range(0.0, 1.0));
  }
};

struct TrackingEmbeddingSection : TrackingStageSection {
  int dim = 8;
  std::vector<int> hidden{128, 128, 128};
  double margin = 1.0;
  int random_pairs = 4000;
  int hard_neighbours = 16;
  double radius = 0.8;
  int max_neighbours = 32;
  template <typename V>
  void describe(V& v) {
    describe_loop(v);
    v.field("dim", dim, "embedding dimension", config::in_range(1, 64));
    v.field("hidden", hidden, "hidden layer widths of the embedding MLP");
    v.field("margin", margin, "hinge margin: hits of different particles are pushed this far apart",
            config::positive<double>());
    v.field("random_pairs", random_pairs, "random negative pairs per event and step", config::at_least(0));
    v.field("hard_neighbours", hard_neighbours,
            "hard negatives: each hit's nearest hits (within margin) in the current embedding", config::at_least(0));
    v.field("radius", radius, "radius of the graph built in the embedding space (inference)",
            config::positive<double>());
    v.field("max_neighbours", max_neighbours, "graph: at most this many nearest neighbours per hit (0: no cap)",
            config::at_least(0));
  }
};

struct TrackingFilterSection : TrackingStageSection {
  std::vector<int> hidden{128, 128, 128};
  double threshold = 0.1;
  template <typename V>
  void describe(V& v) {
    describe_loop(v);
    v.field("hidden", hidden, "hidden layer widths of the filter MLP");
    v.field("pos_weight", pos_weight, "weight of true edges in the binary cross-entropy", config::positive<double>());
    v.field("threshold", threshold, "edges with filter score > threshold go on to the GNN",
            config::in_range(0.0, 1.0));
  }
};

struct TrackingGnnSection : TrackingStageSection {
  int hidden = 64;
  int iterations = 6;
  double track_threshold = 0.5;
  template <typename V>
  void describe(V& v) {
    describe_loop(v);
    v.field("hidden", hidden, "width of the interaction network's node and edge states", config::in_range(1, 4096));
    v.field("iterations", iterations, "message-passing rounds (shared weights)", config::in_range(0, 64));
    v.field("pos_weight", pos_weight, "weight of true edges in the binary cross-entropy", config::positive<double>());
    v.field("track_threshold", track_threshold,
            "track building: connected components on edges with GNN score > this", config::in_range(0.0, 1.0));
  }
};

struct TrackingEvalSection {
  double target_efficiency = 0.95;
  double margin = 0.005;
  template <typename V>
  void describe(V& v) {
    v.field("target_efficiency", target_efficiency,
            "operating point: end-to-end edge efficiency at which GNN and baseline purities are compared",
            config::in_range(0.01, 1.0));
    v.field("margin", margin,
            "the GNN cut and the baseline windows are set on training events for target + margin",
            config::in_range(0.0, 0.5));
  }
};

struct TrackingRunSection {
  std::string dir = "runs/tracking";
  bool overwrite = false;
  int seed = 1;
  int log_every = 50;
  template <typename V>
  void describe(V& v) {
    v.field("dir", dir, "run directory: config.yaml, weights.h5, metrics.jsonl, summary.json");
    v.field("overwrite", overwrite,
            "train into a dir that holds another run: false refuses; true moves that run aside to "
            "<dir>.replaced-<UTC time> (nothing is deleted)");
    v.field("seed", seed, "seed of the initial weights and of the random pairs", config::at_least(0));
    v.field("log_every", log_every, "log the loss every this many steps", config::at_least(1));
  }
};

struct TrackingConfig {
  RuntimeOptions runtime;
  LogSection log;
  TrackingDataSection data;
  TrackingEmbeddingSection embedding;
  TrackingFilterSection filter;
  TrackingGnnSection gnn;
  TrackingEvalSection eval;
  TrackingRunSection run;
  TrackingConfig() {
    embedding.steps = 400;
    embedding.events_per_step = 2;
    embedding.lr = 2e-3;
    filter.steps = 300;
    filter.events_per_step = 2;
    filter.lr = 1e-3;
    filter.pos_weight = 2.0;
    gnn.steps = 400;
    gnn.events_per_step = 2;
    gnn.lr = 1e-3;
  }
  template <typename V>
  void describe(V& v) {
    v.section("runtime", runtime, "ranks, threads and deadlines");
    v.section("log", log, "logging");
    v.section("data", data, "events from `hpcml datagen tracking`");
    v.section("embedding", embedding, "stage 1: metric-learning embedding and the radius graph in its space");
    v.section("filter", filter, "stage 2: the edge-filter MLP");
    v.section("gnn", gnn, "stage 3: the interaction network, and track building");
    v.section("eval", eval, "evaluation against the geometric baseline");
    v.section("run", run, "the run directory");
  }
};

/// Trains the three stages in turn on every rank of `context.world` (collective): rank r
/// takes the events r, r+W, ... of each global batch, gradients are averaged by the
/// GradientReducer, every rank runs the same steps. Then sets the GNN operating cut on
/// the training events, writes run.dir/weights.h5 (rank 0) and evaluates (as
/// tracking_evaluate). Returns 0.
int tracking_train(Context& context, const TrackingConfig& config);

/// Evaluates `weights` (default run.dir/weights.h5) on data.validation_files over all
/// ranks (collective): per-stage edge efficiency and purity, purity at the target
/// efficiency against the tuned geometric baseline, track efficiency and fake rate.
/// Rank 0 prints them and writes them under "eval" in run.dir/summary.json. With
/// `dump_path`, rank 0 also writes the weights and the first validation event's
/// per-stage inputs and outputs to that HDF5 file (for the Python twin test). Returns 0.
int tracking_evaluate(Context& context, const TrackingConfig& config, const std::string& weights,
                      const std::string& dump_path);

/// The key reference of TrackingConfig (Markdown), as `hpcml tracking reference` prints it.
std::string tracking_reference();

struct TrackingBenchOptions {
  std::string weights = "runs/tracking/weights.h5";
  int events = 20;
  int reps = 3;
  int threads = 1;
  std::string json_path;
};

/// `hpcml bench model tracking`, on rank 0: events/s of graph construction (features,
/// embedding, radius graph) and of the whole inference pipeline on generated events, and
/// Kokkos connected components against the plain C++ reference. Returns 0.
int run_tracking_bench(Context& context, const TrackingBenchOptions& options);

}  // namespace hpcml::launch
