/// @file
/// What `hpcml tracking train`, `tracking eval` and `bench model tracking` share
/// (internal to launch/tracking/): loading event shards, edge metrics reduced over the
/// ranks, the score histogram behind the GNN's operating cut, one stage's optimisation
/// loop, and the weights file's attributes.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "collectives/gradient_reducer.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/log.hpp"
#include "io/datagen/datagen.hpp"
#include "io/h5_dataset.hpp"
#include "io/h5_tensors.hpp"
#include "models/tracking/graph.hpp"
#include "models/tracking/learned.hpp"

#include "launch/tracking/tracking.hpp"

namespace hpcml::launch::tracking_detail {

namespace trk = hpcml::models::tracking;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

inline constexpr int64_t kHistogramBins = 100000;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time of the calling thread: on a shared, loaded machine the wall clock measures the
// load as much as the code; at one intra-op thread every op runs on this thread.
inline double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One event with what every stage needs, computed once.
struct Sample {
  trk::TrackingEvent event;
  at::Tensor x;        // node features
  at::Tensor truth;    // true edges
  at::Tensor graph;    // embedding-graph edges (after stage 1)
  at::Tensor graph_y;  // their truth
  at::Tensor kept;     // filtered edges (after stage 2)
  at::Tensor kept_y;
};

// The events at positions rank, rank + size, ... below `limit` (0: all) of `patterns`,
// read file by file in order. `total` receives how many positions there are.
inline std::vector<Sample> load_shard(const std::vector<std::string>& patterns, int64_t limit, int64_t multiple,
                                      int rank, int size, const char* what, int64_t& total) {
  HPCML_CHECK_AS(ConfigError, !patterns.empty(), "tracking: ", what,
                 " is empty; expected files from `hpcml datagen tracking`");
  std::vector<trk::TrackingEvent> all;
  for (const auto& path : io::expand_files(patterns)) {
    if (limit > 0 && static_cast<int64_t>(all.size()) >= limit) break;
    auto events = trk::read_tracking_file(path);
    for (auto& e : events) all.push_back(std::move(e));
  }
  total = limit > 0 ? std::min<int64_t>(limit, static_cast<int64_t>(all.size())) : static_cast<int64_t>(all.size());
  total -= total % multiple;
  HPCML_CHECK_AS(ConfigError, total >= multiple && total > 0, "tracking: ", what, " holds ", all.size(),
                 " event(s) (limit ", limit, "); expected at least ", std::max<int64_t>(multiple, 1));
  std::vector<Sample> shard;
  for (int64_t p = rank; p < total; p += size) {
    Sample s;
    s.event = std::move(all[p]);
    s.x = trk::node_features(s.event);
    s.truth = trk::true_edges(s.event);
    shard.push_back(std::move(s));
  }
  return shard;
}

// Sums `values` over the ranks (collective; every rank passes the same length).
inline std::vector<double> sum_over_ranks(collectives::Backend& world, const std::vector<double>& values) {
  at::Tensor t = at::tensor(values, at::kDouble);
  world.allreduce(t)->wait();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

inline std::vector<double> counts(const trk::EdgeMetrics& m) {
  return {static_cast<double>(m.true_edges), static_cast<double>(m.selected_edges),
          static_cast<double>(m.true_selected)};
}
inline trk::EdgeMetrics edge_metrics_from(const std::vector<double>& v, size_t at) {
  trk::EdgeMetrics m;
  m.true_edges = static_cast<int64_t>(v[at]);
  m.selected_edges = static_cast<int64_t>(v[at + 1]);
  m.true_selected = static_cast<int64_t>(v[at + 2]);
  return m;
}

inline Json edge_json(const trk::EdgeMetrics& m, double events) {
  return {{"efficiency", m.efficiency()},
          {"purity", m.purity()},
          {"edges_per_event", m.selected_edges / events},
          {"true_edges", m.true_edges},
          {"selected_edges", m.selected_edges},
          {"true_selected", m.true_selected}};
}

// Scores of true and false edges, binned on [0, 1].
struct ScoreHistogram {
  std::vector<double> true_counts = std::vector<double>(kHistogramBins, 0.0);
  std::vector<double> false_counts = std::vector<double>(kHistogramBins, 0.0);
  double all_true = 0;  // every true edge of the events, selected by earlier stages or not
  void add(const at::Tensor& scores, const at::Tensor& truth) {
    const at::Tensor s = scores.contiguous();
    const at::Tensor y = truth.contiguous();
    const float* sp = s.data_ptr<float>();
    const bool* yp = y.data_ptr<bool>();
    for (int64_t i = 0; i < s.numel(); ++i) {
      const auto bin = std::clamp<int64_t>(static_cast<int64_t>(sp[i] * kHistogramBins), 0, kHistogramBins - 1);
      (yp[i] ? true_counts : false_counts)[bin] += 1;
    }
  }
  void reduce(collectives::Backend& world) {
    std::vector<double> v = true_counts;
    v.insert(v.end(), false_counts.begin(), false_counts.end());
    v.push_back(all_true);
    v = sum_over_ranks(world, v);
    std::copy_n(v.begin(), kHistogramBins, true_counts.begin());
    std::copy_n(v.begin() + kHistogramBins, kHistogramBins, false_counts.begin());
    all_true = v.back();
  }
  // The highest cut (a bin edge) whose selection "score > cut" keeps at least `target`
  // of all true edges; with the efficiency and purity there.
  struct Point {
    double cut = 0, efficiency = 0, purity = 0;
  };
  Point at_efficiency(double target) const {
    double t = 0, f = 0;
    for (int64_t k = kHistogramBins - 1; k >= 0; --k) {
      t += true_counts[k];
      f += false_counts[k];
      if (all_true > 0 && t / all_true >= target) {
        return {static_cast<double>(k) / kHistogramBins, t / all_true, t + f > 0 ? t / (t + f) : 0.0};
      }
    }
    return {0.0, all_true > 0 ? t / all_true : 0.0, t + f > 0 ? t / (t + f) : 0.0};
  }
};

inline at::Tensor select_edges(const at::Tensor& edges, const at::Tensor& scores, double cut) {
  return edges.index_select(1, scores.gt(cut).nonzero().squeeze(1));
}

// The events this rank takes at `step` of a stage: indices into its shard.
inline std::vector<int64_t> step_indices(int64_t step, int64_t per_rank, int64_t shard_size) {
  std::vector<int64_t> out;
  for (int64_t k = 0; k < per_rank; ++k) out.push_back((step * per_rank + k) % shard_size);
  return out;
}

class MetricsLog {
 public:
  MetricsLog(const fs::path& path, bool on) {
    if (on) out_.open(path, std::ios::app);
  }
  void write(const Json& line) {
    if (out_.is_open()) out_ << line.dump() << "\n" << std::flush;
  }

 private:
  std::ofstream out_;
};

// One stage's optimisation loop. `loss_of(shard_index, global_position_seed)` returns this
// event's loss; the rank's loss is the mean over its events, the reducer averages over
// ranks, so the step follows the mean over the global batch at any rank count.
template <typename LossFn>
inline void train_stage(Context& ctx, trk::LearnedPipeline& pipeline, trk::Stage stage, const TrackingStageSection& s,
                        int64_t shard_size, const TrackingRunSection& run, MetricsLog& log, LossFn&& loss_of) {
  const int size = ctx.world->size();
  const int64_t per_rank = s.events_per_step / size;
  const auto named = pipeline.parameters(stage);
  std::vector<at::Tensor> params;
  for (const auto& [n, p] : named) params.push_back(p);
  collectives::ReducerOptions ro;
  ro.overlap = collectives::Overlap::kNever;
  collectives::GradientReducer reducer(named, {}, ctx.world, ro);
  torch::optim::Adam optimizer(params, torch::optim::AdamOptions(s.lr));
  pipeline.set_training(true);
  const auto start = Clock::now();
  double running = 0;
  int64_t counted = 0;
  for (int64_t step = 0; step < s.steps; ++step) {
    const double progress = s.steps > 1 ? static_cast<double>(step) / (s.steps - 1) : 1.0;
    const double lr = s.lr * (s.lr_final_ratio + (1 - s.lr_final_ratio) * 0.5 * (1 + std::cos(M_PI * progress)));
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    reducer.zero_grad();
    at::Tensor loss = at::zeros({});
    for (const int64_t i : step_indices(step, per_rank, shard_size)) loss = loss + loss_of(i, step);
    loss = loss / static_cast<double>(per_rank);
    reducer.backward(loss);
    optimizer.step();
    running += loss.item<double>();
    ++counted;
    if ((step + 1) % run.log_every == 0 || step + 1 == s.steps) {
      const double mean = sum_over_ranks(*ctx.world, {running / counted})[0] / size;
      if (ctx.world->rank() == 0) {
        HPCML_LOG_INFO("tracking {}: step {}/{} loss {:.5f} lr {:.2e} ({:.1f} s)", trk::stage_name(stage), step + 1,
                       s.steps, mean, lr, seconds_since(start));
      }
      log.write({{"stage", trk::stage_name(stage)},
                 {"step", step + 1},
                 {"loss", mean},
                 {"lr", lr},
                 {"elapsed_s", seconds_since(start)}});
      running = 0;
      counted = 0;
    }
  }
  pipeline.set_training(false);
}

// Edge metrics of one stage over the shards of all ranks (collective).
inline trk::EdgeMetrics reduce_edges(collectives::Backend& world, const trk::EdgeMetrics& local) {
  return edge_metrics_from(sum_over_ranks(world, counts(local)), 0);
}

inline trk::EmbeddingGraphOptions graph_options(const TrackingConfig& c) {
  trk::EmbeddingGraphOptions g;
  g.radius = c.embedding.radius;
  g.max_neighbours = c.embedding.max_neighbours;
  return g;
}

inline trk::Architecture architecture_of(const TrackingConfig& c) {
  trk::Architecture a;
  a.embedding_dim = c.embedding.dim;
  a.embedding_hidden.assign(c.embedding.hidden.begin(), c.embedding.hidden.end());
  a.filter_hidden.assign(c.filter.hidden.begin(), c.filter.hidden.end());
  a.gnn_hidden = c.gnn.hidden;
  a.gnn_iterations = c.gnn.iterations;
  a.seed = static_cast<uint64_t>(c.run.seed);
  return a;
}

inline void check_batches(const TrackingConfig& c, int size) {
  const std::vector<std::pair<const char*, const TrackingStageSection*>> stages{
      {"embedding", &c.embedding}, {"filter", &c.filter}, {"gnn", &c.gnn}};
  for (const auto& [name, s] : stages) {
    HPCML_CHECK_AS(ConfigError, s->events_per_step % size == 0, "tracking: ", name, ".events_per_step is ",
                   s->events_per_step, "; expected a multiple of the ", size, " rank(s)");
  }
}

inline Json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return Json::object();
  try {
    return Json::parse(in);
  } catch (const std::exception&) {
    return Json::object();
  }
}

// Weights, per-stage inputs and outputs of one event, for tests/cli/test_tracking.py.
inline void write_dump(const std::string& path, const trk::LearnedPipeline& pipeline, const trk::TrackingEvent& event,
                       const trk::PipelineOutput& out) {
  at::NoGradGuard no_grad;
  auto tensors = pipeline.state();
  tensors.emplace_back("__hits__", event.hits);
  tensors.emplace_back("__x__", out.x);
  tensors.emplace_back("__embedding__", out.embedding);
  tensors.emplace_back("__graph_edges__", out.graph_edges);
  tensors.emplace_back("__filter_logits__", pipeline.filter_logits(out.x, out.graph_edges));
  tensors.emplace_back("__filter_edges__", out.filter_edges);
  tensors.emplace_back("__gnn_logits__", pipeline.gnn_logits(out.x, out.filter_edges));
  auto attributes = trk::architecture_attributes(pipeline.architecture());
  attributes["format"] = "hpcml.tracking.dump";
  io::write_tensors_h5(path, tensors, attributes);
}

inline double attribute_number(const std::map<std::string, std::string>& a, const std::string& key,
                               const std::string& source) {
  const auto it = a.find(key);
  HPCML_CHECK_AS(IoError, it != a.end(), source, ": attribute '", key,
                 "' is missing; expected a weights file written by `hpcml tracking train`");
  try {
    return std::stod(it->second);
  } catch (const std::exception&) {
    HPCML_THROW(IoError, source, ": attribute '", key, "' is '", it->second, "'; expected a number");
  }
}

}  // namespace hpcml::launch::tracking_detail
