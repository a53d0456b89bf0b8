// `hpcml tracking train|eval` and `hpcml bench model tracking` (launch/tracking.hpp,
// docs/tracking.md). A stage loop of its own: the learned tracking stages train on
// events (ragged graphs), not on the fixed-shape batches of launch/trainer.cpp.
#include "launch/tracking.hpp"

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

namespace hpcml::launch {

namespace {

namespace trk = hpcml::models::tracking;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr int64_t kHistogramBins = 100000;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time of the calling thread: on a shared, loaded machine the wall clock measures the
// load as much as the code; at one intra-op thread every op runs on this thread.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One event with what every stage needs, computed once.
struct Sample {
  trk::TrackingEvent event;
  at::Tensor x;       // node features
  at::Tensor truth;   // true edges
  at::Tensor graph;   // embedding-graph edges (after stage 1)
  at::Tensor graph_y; // their truth
  at::Tensor kept;    // filtered edges (after stage 2)
  at::Tensor kept_y;
};

// The events at positions rank, rank + size, ... below `limit` (0: all) of `patterns`,
// read file by file in order. `total` receives how many positions there are.
std::vector<Sample> load_shard(const std::vector<std::string>& patterns, int64_t limit, int64_t multiple, int rank,
                               int size, const char* what, int64_t& total) {
  HPCML_CHECK_AS(ConfigError, !patterns.empty(), "tracking: ", what, " is empty; expected files from `hpcml datagen tracking`");
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
std::vector<double> sum_over_ranks(collectives::Backend& world, const std::vector<double>& values) {
  at::Tensor t = at::tensor(values, at::kDouble);
  world.allreduce(t)->wait();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

std::vector<double> counts(const trk::EdgeMetrics& m) {
  return {static_cast<double>(m.true_edges), static_cast<double>(m.selected_edges),
          static_cast<double>(m.true_selected)};
}
trk::EdgeMetrics edge_metrics_from(const std::vector<double>& v, size_t at) {
  trk::EdgeMetrics m;
  m.true_edges = static_cast<int64_t>(v[at]);
  m.selected_edges = static_cast<int64_t>(v[at + 1]);
  m.true_selected = static_cast<int64_t>(v[at + 2]);
  return m;
}

Json edge_json(const trk::EdgeMetrics& m, double events) {
  return {{"efficiency", m.efficiency()}, {"purity", m.purity()}, {"edges_per_event", m.selected_edges / events},
          {"true_edges", m.true_edges}, {"selected_edges", m.selected_edges}, {"true_selected", m.true_selected}};
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

at::Tensor select_edges(const at::Tensor& edges, const at::Tensor& scores, double cut) {
  return edges.index_select(1, scores.gt(cut).nonzero().squeeze(1));
}

// The events this rank takes at `step` of a stage: indices into its shard.
std::vector<int64_t> step_indices(int64_t step, int64_t per_rank, int64_t shard_size) {
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
void train_stage(Context& ctx, trk::LearnedPipeline& pipeline, trk::Stage stage, const TrackingStageSection& s,
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
      if (ctx.env.rank == 0) {
        HPCML_LOG_INFO("tracking {}: step {}/{} loss {:.5f} lr {:.2e} ({:.1f} s)", trk::stage_name(stage), step + 1,
                       s.steps, mean, lr, seconds_since(start));
      }
      log.write({{"stage", trk::stage_name(stage)}, {"step", step + 1}, {"loss", mean}, {"lr", lr},
                 {"elapsed_s", seconds_since(start)}});
      running = 0;
      counted = 0;
    }
  }
  pipeline.set_training(false);
}

// Edge metrics of one stage over the shards of all ranks (collective).
trk::EdgeMetrics reduce_edges(collectives::Backend& world, const trk::EdgeMetrics& local) {
  return edge_metrics_from(sum_over_ranks(world, counts(local)), 0);
}

trk::EmbeddingGraphOptions graph_options(const TrackingConfig& c) {
  trk::EmbeddingGraphOptions g;
  g.radius = c.embedding.radius;
  g.max_neighbours = c.embedding.max_neighbours;
  return g;
}

trk::Architecture architecture_of(const TrackingConfig& c) {
  trk::Architecture a;
  a.embedding_dim = c.embedding.dim;
  a.embedding_hidden.assign(c.embedding.hidden.begin(), c.embedding.hidden.end());
  a.filter_hidden.assign(c.filter.hidden.begin(), c.filter.hidden.end());
  a.gnn_hidden = c.gnn.hidden;
  a.gnn_iterations = c.gnn.iterations;
  a.seed = static_cast<uint64_t>(c.run.seed);
  return a;
}

void check_batches(const TrackingConfig& c, int size) {
  const std::vector<std::pair<const char*, const TrackingStageSection*>> stages{
      {"embedding", &c.embedding}, {"filter", &c.filter}, {"gnn", &c.gnn}};
  for (const auto& [name, s] : stages) {
    HPCML_CHECK_AS(ConfigError, s->events_per_step % size == 0, "tracking: ", name, ".events_per_step is ",
                   s->events_per_step, "; expected a multiple of the ", size, " rank(s)");
  }
}

Json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return Json::object();
  try {
    return Json::parse(in);
  } catch (const std::exception&) {
    return Json::object();
  }
}

// Weights, per-stage inputs and outputs of one event, for tests/cli/test_tracking.py.
void write_dump(const std::string& path, const trk::LearnedPipeline& pipeline, const trk::TrackingEvent& event,
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

double attribute_number(const std::map<std::string, std::string>& a, const std::string& key,
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

}  // namespace

std::string tracking_reference() { return config::reference_markdown(config::reference<TrackingConfig>()); }

int tracking_train(Context& ctx, const TrackingConfig& c) {
  const int rank = ctx.world->rank(), size = ctx.world->size();
  check_batches(c, size);
  const auto start = Clock::now();
  const fs::path dir = c.run.dir;
  // A run never mixes with another in one directory (as hpcml train).
  const std::string occupant =
      rank == 0 ? describe_run(dir.string(), {"config.yaml", "metrics.jsonl", "summary.json", "weights.h5"})
                : std::string();
  HPCML_CHECK_AS(ConfigError, occupant.empty() || c.run.overwrite, "config error: key 'run.dir': '", dir.string(),
                 "' holds another run (", occupant, "); choose another run.dir, or set run.overwrite: true to move "
                 "it aside");
  if (rank == 0) {
    if (!occupant.empty()) {
      const std::string aside = moved_aside_name(dir.string());
      fs::rename(dir, aside);
      HPCML_LOG_WARN("run.dir {} held another run ({}): moved it to {}", dir.string(), occupant, aside);
    }
    fs::create_directories(dir);
    write_file_atomically((dir / "config.yaml").string(), config::to_yaml(c));
    write_file_atomically((dir / "metrics.jsonl").string(), "");
  }
  ctx.world->barrier()->wait();
  MetricsLog log(dir / "metrics.jsonl", rank == 0);

  const int64_t multiple =
      std::lcm(std::lcm<int64_t>(c.embedding.events_per_step, c.filter.events_per_step), c.gnn.events_per_step);
  int64_t total = 0;
  std::vector<Sample> shard = load_shard(c.data.files, c.data.train_events, multiple, rank, size, "data.files", total);
  const auto shard_size = static_cast<int64_t>(shard.size());
  if (rank == 0) {
    HPCML_LOG_INFO("tracking: {} training events on {} rank(s) ({} each), loaded in {:.1f} s", total, size,
                   shard_size, seconds_since(start));
  }
  trk::LearnedPipeline pipeline(architecture_of(c));
  Json train_summary = {{"ranks", size}, {"train_events", total}};

  // Stage 1: embedding.
  trk::EmbeddingLossOptions lo;
  lo.margin = c.embedding.margin;
  lo.random_pairs = c.embedding.random_pairs;
  lo.hard_radius = c.embedding.margin;
  lo.hard_neighbours = c.embedding.hard_neighbours;
  auto stage_start = Clock::now();
  train_stage(ctx, pipeline, trk::Stage::kEmbedding, c.embedding, shard_size, c.run, log,
              [&](int64_t i, int64_t step) {
                // Random pairs from (seed, step, event position): the same at any rank count.
                const int64_t position = rank + i * size;
                auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(c.run.seed) * 1000003u +
                                                          static_cast<uint64_t>(step) * 7919u +
                                                          static_cast<uint64_t>(position));
                return trk::embedding_loss(pipeline, shard[i].x, shard[i].event, shard[i].truth, lo, gen);
              });
  const double embedding_s = seconds_since(stage_start);
  trk::EdgeMetrics graph_m;
  {
    at::NoGradGuard no_grad;
    for (auto& s : shard) {
      s.graph = trk::embedding_graph(pipeline.embed(s.x), s.x, graph_options(c));
      s.graph_y = trk::edge_truth(s.event, s.graph);
      graph_m += trk::edge_metrics(s.graph, s.truth);
    }
  }
  graph_m = reduce_edges(*ctx.world, graph_m);
  train_summary["embedding"] = edge_json(graph_m, static_cast<double>(total));
  train_summary["embedding"]["seconds"] = embedding_s;
  if (rank == 0) {
    HPCML_LOG_INFO("tracking embedding graph (training events): efficiency {:.4f} purity {:.4f}, {:.0f} edges/event",
                   graph_m.efficiency(), graph_m.purity(), graph_m.selected_edges / static_cast<double>(total));
  }

  // Stage 2: edge filter.
  stage_start = Clock::now();
  train_stage(ctx, pipeline, trk::Stage::kFilter, c.filter, shard_size, c.run, log, [&](int64_t i, int64_t) {
    return trk::edge_loss(pipeline.filter_logits(shard[i].x, shard[i].graph), shard[i].graph_y, c.filter.pos_weight);
  });
  const double filter_s = seconds_since(stage_start);
  trk::EdgeMetrics filter_m;
  {
    at::NoGradGuard no_grad;
    for (auto& s : shard) {
      const at::Tensor scores = pipeline.filter_logits(s.x, s.graph).sigmoid();
      const at::Tensor keep = scores.gt(c.filter.threshold).nonzero().squeeze(1);
      s.kept = s.graph.index_select(1, keep);
      s.kept_y = s.graph_y.index_select(0, keep);
      filter_m += trk::edge_metrics(s.kept, s.truth);
    }
  }
  filter_m = reduce_edges(*ctx.world, filter_m);
  train_summary["filter"] = edge_json(filter_m, static_cast<double>(total));
  train_summary["filter"]["seconds"] = filter_s;
  if (rank == 0) {
    HPCML_LOG_INFO("tracking filter (training events): efficiency {:.4f} purity {:.4f}, {:.0f} edges/event",
                   filter_m.efficiency(), filter_m.purity(), filter_m.selected_edges / static_cast<double>(total));
  }

  // Stage 3: interaction network on packed graphs; every event's mean loss weighs the same.
  stage_start = Clock::now();
  const int64_t gnn_per_rank = c.gnn.events_per_step / size;
  int64_t last_step = -1;
  std::vector<int64_t> batch;
  train_stage(ctx, pipeline, trk::Stage::kGnn, c.gnn, shard_size, c.run, log, [&](int64_t i, int64_t step) {
    // The first call of a step packs the step's events and returns their whole loss; the
    // others return zero (train_stage sums per-event losses).
    if (step == last_step) return at::zeros({});
    last_step = step;
    batch = step_indices(step, gnn_per_rank, shard_size);
    (void)i;
    std::vector<at::Tensor> xs, edges, ys, weights;
    int64_t offset = 0;
    for (const int64_t k : batch) {
      xs.push_back(shard[k].x);
      edges.push_back(shard[k].kept + offset);
      ys.push_back(shard[k].kept_y);
      const int64_t e = std::max<int64_t>(shard[k].kept.size(1), 1);
      weights.push_back(at::full({shard[k].kept.size(1)}, 1.0 / e, at::kFloat));
      offset += shard[k].x.size(0);
    }
    const at::Tensor logits = pipeline.gnn_logits(at::cat(xs), at::cat(edges, 1));
    const at::Tensor y = at::cat(ys).to(at::kFloat);
    const at::Tensor pos = at::full({1}, c.gnn.pos_weight, at::kFloat);
    const at::Tensor per_edge = at::binary_cross_entropy_with_logits(logits, y, {}, pos, at::Reduction::None);
    // Summed over the step's events; train_stage divides by their number.
    return (per_edge * at::cat(weights)).sum();
  });
  const double gnn_s = seconds_since(stage_start);

  // The GNN cut that reaches target + margin end to end on the training events.
  ScoreHistogram hist;
  {
    at::NoGradGuard no_grad;
    for (auto& s : shard) {
      hist.all_true += static_cast<double>(s.truth.size(1));
      if (s.kept.size(1)) hist.add(pipeline.gnn_logits(s.x, s.kept).sigmoid(), s.kept_y);
    }
  }
  hist.reduce(*ctx.world);
  const auto point = hist.at_efficiency(c.eval.target_efficiency + c.eval.margin);
  train_summary["gnn"] = {{"cut", point.cut},
                          {"efficiency", point.efficiency},
                          {"purity", point.purity},
                          {"seconds", gnn_s}};
  train_summary["seconds"] = seconds_since(start);
  if (rank == 0) {
    HPCML_LOG_INFO("tracking gnn (training events): cut {:.5f} for efficiency {:.4f} (target {} + margin {}): purity {:.4f}",
                   point.cut, point.efficiency, c.eval.target_efficiency, c.eval.margin, point.purity);
    HPCML_LOG_INFO("tracking: trained in {:.1f} s (embedding {:.1f} s, filter {:.1f} s, gnn {:.1f} s)",
                   seconds_since(start), embedding_s, filter_s, gnn_s);
    std::map<std::string, std::string> attributes{{"gnn_cut", std::to_string(point.cut)},
                                                  {"target_efficiency", std::to_string(c.eval.target_efficiency)},
                                                  {"graph_radius", std::to_string(c.embedding.radius)},
                                                  {"graph_max_neighbours", std::to_string(c.embedding.max_neighbours)},
                                                  {"filter_threshold", std::to_string(c.filter.threshold)},
                                                  {"track_threshold", std::to_string(c.gnn.track_threshold)}};
    trk::save_weights((dir / "weights.h5").string(), pipeline, attributes);
    Json summary = read_json(dir / "summary.json");
    summary["train"] = train_summary;
    write_file_atomically((dir / "summary.json").string(), summary.dump(2) + "\n");
  }
  ctx.world->barrier()->wait();
  shard.clear();
  if (c.data.validation_files.empty()) return 0;
  return tracking_evaluate(ctx, c, "", "");
}

int tracking_evaluate(Context& ctx, const TrackingConfig& c, const std::string& weights_arg,
                      const std::string& dump_path) {
  const int rank = ctx.world->rank(), size = ctx.world->size();
  const auto start = Clock::now();
  const fs::path dir = c.run.dir;
  const std::string weights = weights_arg.empty() ? (dir / "weights.h5").string() : weights_arg;
  HPCML_CHECK_AS(IoError, fs::exists(weights), "tracking eval: weights file '", weights,
                 "' not found; run `hpcml tracking train` first or pass --weights");
  const auto attributes = trk::read_weight_attributes(weights);
  trk::LearnedPipeline pipeline(trk::architecture_from_attributes(attributes, weights));
  pipeline.load_state(trk::read_weights(weights), weights);
  pipeline.set_training(false);
  const double gnn_cut = attribute_number(attributes, "gnn_cut", weights);
  trk::PipelineCuts cuts;
  cuts.graph = graph_options(c);
  cuts.filter = c.filter.threshold;
  cuts.gnn = c.gnn.track_threshold;

  // The baseline's windows, tuned on training events by rank 0 and broadcast.
  at::Tensor windows = at::zeros({2}, at::kDouble);
  if (rank == 0) {
    int64_t tuned = 0;
    std::vector<Sample> tune =
        load_shard(c.data.files, c.data.baseline_tune_events, 1, 0, 1, "data.files", tuned);
    std::vector<trk::TrackingEvent> events;
    for (auto& s : tune) events.push_back(std::move(s.event));
    trk::BaselineTuneOptions bo;
    bo.target_efficiency = c.eval.target_efficiency;
    bo.margin = c.eval.margin;
    const auto w = trk::tune_baseline(events, bo);
    windows[0] = w.phi_slope;
    windows[1] = w.z0;
  }
  ctx.world->broadcast(windows)->wait();
  const trk::BaselineWindows baseline{windows[0].item<double>(), windows[1].item<double>()};

  int64_t total = 0;
  std::vector<Sample> shard =
      load_shard(c.data.validation_files, c.data.validation_events, 1, rank, size, "data.validation_files", total);
  trk::EdgeMetrics graph_m, filter_m, gnn_m, track_cut_m, base_m;
  trk::TrackMetrics tracks, base_tracks;
  ScoreHistogram hist;
  double pipeline_s = 0;
  for (size_t k = 0; k < shard.size(); ++k) {
    const auto& s = shard[k];
    const auto t0 = Clock::now();
    const trk::PipelineOutput out = trk::run_pipeline(pipeline, s.event, cuts);
    pipeline_s += seconds_since(t0);
    if (k == 0 && rank == 0 && !dump_path.empty()) write_dump(dump_path, pipeline, s.event, out);
    graph_m += trk::edge_metrics(out.graph_edges, s.truth);
    filter_m += trk::edge_metrics(out.filter_edges, s.truth);
    gnn_m += trk::edge_metrics(select_edges(out.filter_edges, out.gnn_scores, gnn_cut), s.truth);
    track_cut_m += trk::edge_metrics(select_edges(out.filter_edges, out.gnn_scores, cuts.gnn), s.truth);
    hist.all_true += static_cast<double>(s.truth.size(1));
    if (out.filter_edges.size(1)) hist.add(out.gnn_scores, trk::edge_truth(s.event, out.filter_edges));
    tracks += trk::track_metrics(out.labels, s.event);
    const at::Tensor base_edges = trk::geometric_edges(s.event, baseline);
    base_m += trk::edge_metrics(base_edges, s.truth);
    base_tracks += trk::track_metrics(trk::connected_components(s.event.hits.size(0), base_edges), s.event);
  }
  std::vector<double> local;
  for (const auto* m : {&graph_m, &filter_m, &gnn_m, &track_cut_m, &base_m}) {
    const auto v = counts(*m);
    local.insert(local.end(), v.begin(), v.end());
  }
  for (const auto* t : {&tracks, &base_tracks}) {
    local.insert(local.end(), {static_cast<double>(t->particles), static_cast<double>(t->matched_particles),
                               static_cast<double>(t->candidates), static_cast<double>(t->fake_candidates)});
  }
  local.push_back(pipeline_s);
  const auto v = sum_over_ranks(*ctx.world, local);
  hist.reduce(*ctx.world);
  graph_m = edge_metrics_from(v, 0);
  filter_m = edge_metrics_from(v, 3);
  gnn_m = edge_metrics_from(v, 6);
  track_cut_m = edge_metrics_from(v, 9);
  base_m = edge_metrics_from(v, 12);
  auto track_from = [&](size_t at) {
    trk::TrackMetrics t;
    t.particles = static_cast<int64_t>(v[at]);
    t.matched_particles = static_cast<int64_t>(v[at + 1]);
    t.candidates = static_cast<int64_t>(v[at + 2]);
    t.fake_candidates = static_cast<int64_t>(v[at + 3]);
    return t;
  };
  tracks = track_from(15);
  base_tracks = track_from(19);
  const double events = static_cast<double>(total);
  const auto exact = hist.at_efficiency(c.eval.target_efficiency);
  if (rank != 0) return 0;

  Json eval = {{"weights", weights},
               {"validation_events", total},
               {"ranks", size},
               {"embedding", edge_json(graph_m, events)},
               {"filter", edge_json(filter_m, events)},
               {"gnn", edge_json(gnn_m, events)},
               {"gnn_at_track_threshold", edge_json(track_cut_m, events)},
               {"baseline", edge_json(base_m, events)},
               {"tracks",
                {{"efficiency", tracks.efficiency()},
                 {"fake_rate", tracks.fake_rate()},
                 {"particles", tracks.particles},
                 {"matched_particles", tracks.matched_particles},
                 {"candidates", tracks.candidates},
                 {"fake_candidates", tracks.fake_candidates},
                 {"threshold", cuts.gnn}}},
               {"baseline_tracks",
                {{"efficiency", base_tracks.efficiency()},
                 {"fake_rate", base_tracks.fake_rate()},
                 {"particles", base_tracks.particles},
                 {"matched_particles", base_tracks.matched_particles}}},
               {"pipeline_events_per_s_per_rank", v[23] > 0 ? events / v[23] * size : 0.0},
               {"seconds", seconds_since(start)}};
  eval["gnn"]["cut"] = gnn_cut;
  eval["baseline"]["phi_slope"] = baseline.phi_slope;
  eval["baseline"]["z0"] = baseline.z0;
  eval["gnn_exact"] = {{"target_efficiency", c.eval.target_efficiency},
                       {"cut", exact.cut},
                       {"efficiency", exact.efficiency},
                       {"purity", exact.purity}};
  eval["target_purity_met"] = gnn_m.purity() > base_m.purity() && exact.purity > base_m.purity();
  eval["target_track_efficiency_met"] = tracks.efficiency() >= 0.90;

  std::printf("hpcml tracking eval: %lld validation events on %d rank(s), weights %s\n",
              static_cast<long long>(total), size, weights.c_str());
  std::printf("  %-34s %10s %8s %12s\n", "stage (edges vs all true edges)", "efficiency", "purity", "edges/event");
  auto row = [&](const char* name, const trk::EdgeMetrics& m) {
    std::printf("  %-34s %10.4f %8.4f %12.1f\n", name, m.efficiency(), m.purity(), m.selected_edges / events);
  };
  row("1 embedding radius graph", graph_m);
  row("2 edge filter", filter_m);
  char label[96];
  std::snprintf(label, sizeof label, "3 GNN, cut %.4f (train-tuned)", gnn_cut);
  row(label, gnn_m);
  std::snprintf(label, sizeof label, "3 GNN, track cut %.2f", cuts.gnn);
  row(label, track_cut_m);
  std::snprintf(label, sizeof label, "baseline (phi %.2e, z0 %.1f)", baseline.phi_slope, baseline.z0);
  row(label, base_m);
  std::printf("  GNN purity at exactly %.3f efficiency on these events: %.4f (cut %.5f)\n", exact.efficiency,
              exact.purity, exact.cut);
  std::printf("  tracks (pT > 1 GeV, double majority): GNN efficiency %.4f fake rate %.4f (%lld/%lld particles); "
              "baseline efficiency %.4f fake rate %.4f\n",
              tracks.efficiency(), tracks.fake_rate(), static_cast<long long>(tracks.matched_particles),
              static_cast<long long>(tracks.particles), base_tracks.efficiency(), base_tracks.fake_rate());
  std::printf("  targets: GNN purity > baseline purity at %.2f efficiency: %s; track efficiency >= 0.90: %s\n",
              c.eval.target_efficiency, eval["target_purity_met"].get<bool>() ? "met" : "NOT met",
              eval["target_track_efficiency_met"].get<bool>() ? "met" : "NOT met");
  std::fflush(stdout);
  fs::create_directories(dir);
  Json summary = read_json(dir / "summary.json");
  summary["eval"] = eval;
  write_file_atomically((dir / "summary.json").string(), summary.dump(2) + "\n");
  return 0;
}

int run_tracking_bench(Context& ctx, const TrackingBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, o.events >= 1 && o.reps >= 1 && o.threads >= 1,
                 "bench model tracking: --reps and --threads must be >= 1");
  if (ctx.env.rank != 0) return 0;
  HPCML_CHECK_AS(IoError, fs::exists(o.weights), "bench model tracking: weights file '", o.weights,
                 "' not found; run `hpcml tracking train -c configs/tracking.yaml` first");
  at::set_num_threads(o.threads);
  const auto attributes = trk::read_weight_attributes(o.weights);
  trk::LearnedPipeline pipeline(trk::architecture_from_attributes(attributes, o.weights));
  pipeline.load_state(trk::read_weights(o.weights), o.weights);
  pipeline.set_training(false);
  trk::PipelineCuts cuts;
  cuts.graph.radius = attribute_number(attributes, "graph_radius", o.weights);
  cuts.graph.max_neighbours = static_cast<int64_t>(attribute_number(attributes, "graph_max_neighbours", o.weights));
  cuts.filter = attribute_number(attributes, "filter_threshold", o.weights);
  cuts.gnn = attribute_number(attributes, "track_threshold", o.weights);
  // Default `datagen tracking` events (seed 12345), generated in process.
  const auto events = trk::events_from_table(io::datagen::generate_tracking({}, 12345, 0, o.events));
  double hits = 0;
  for (const auto& e : events) hits += static_cast<double>(e.hits.size(0));

  // Best of the repetitions, by CPU time; the wall time of that repetition is kept too.
  std::vector<double> walls;
  auto best_of = [&](auto&& body) {
    double best = 1e300, wall = 0;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      const double c0 = thread_cpu_seconds();
      body();
      const double cpu = thread_cpu_seconds() - c0;
      if (cpu < best) {
        best = cpu;
        wall = seconds_since(t0);
      }
    }
    walls.push_back(wall);
    return best;
  };
  double graph_edges = 0;
  const double graph_s = best_of([&] {
    at::NoGradGuard no_grad;
    graph_edges = 0;
    for (const auto& e : events) {
      const at::Tensor x = trk::node_features(e);
      graph_edges += static_cast<double>(trk::embedding_graph(pipeline.embed(x), x, cuts.graph).size(1));
    }
  });
  std::vector<at::Tensor> gnn_edges, gnn_scores;
  const double pipeline_s = best_of([&] {
    gnn_edges.clear();
    gnn_scores.clear();
    for (const auto& e : events) {
      const auto out = trk::run_pipeline(pipeline, e, cuts);
      gnn_edges.push_back(out.filter_edges);
      gnn_scores.push_back(out.gnn_scores.contiguous());
    }
  });
  // Connected components on the pipeline's own graphs: Kokkos kernel against the plain reference.
  const double cc_kokkos_events_s = best_of([&] {
    for (size_t k = 0; k < events.size(); ++k) {
      trk::connected_components(events[k].hits.size(0), gnn_edges[k], gnn_scores[k], cuts.gnn);
    }
  });
  const double cc_reference_events_s = best_of([&] {
    for (size_t k = 0; k < events.size(); ++k) {
      trk::connected_components_reference(events[k].hits.size(0), gnn_edges[k], gnn_scores[k], cuts.gnn);
    }
  });
  // A large random graph (as benchmark_tracking's): 200k nodes, 400k edges, half above the cut.
  const int64_t big_nodes = 200000, big_edges_n = 400000;
  auto gen = at::detail::createCPUGenerator(1);
  const at::Tensor big_edges = at::randint(big_nodes, {2, big_edges_n}, gen, at::kLong);
  const at::Tensor big_scores = at::rand({big_edges_n}, gen, at::kFloat);
  at::Tensor big_labels, big_reference;
  const double big_kokkos_s =
      best_of([&] { big_labels = trk::connected_components(big_nodes, big_edges, big_scores, 0.5); });
  const double big_reference_s =
      best_of([&] { big_reference = trk::connected_components_reference(big_nodes, big_edges, big_scores, 0.5); });
  HPCML_CHECK(at::equal(big_labels, big_reference),
              "bench model tracking: Kokkos and reference connected components disagree on the random graph");

  const double n = static_cast<double>(events.size());
  const Json out = {{"model", "tracking"},
                    {"threads", o.threads},
                    {"events", events.size()},
                    {"hits_per_event", hits / n},
                    {"reps", o.reps},
                    {"graph_construction_events_per_s", n / graph_s},
                    {"graph_construction_events_per_wall_s", n / walls[0]},
                    {"graph_edges_per_event", graph_edges / n},
                    {"pipeline_events_per_s", n / pipeline_s},
                    {"pipeline_events_per_wall_s", n / walls[1]},
                    {"clock", "thread CPU time (wall time in *_per_wall_s)"},
                    {"cc_event_graphs_kokkos_us_per_event", cc_kokkos_events_s / n * 1e6},
                    {"cc_event_graphs_reference_us_per_event", cc_reference_events_s / n * 1e6},
                    {"cc_random_graph_nodes", big_nodes},
                    {"cc_random_graph_edges", big_edges_n},
                    {"cc_random_graph_kokkos_ms", big_kokkos_s * 1e3},
                    {"cc_random_graph_reference_ms", big_reference_s * 1e3},
                    {"weights", o.weights}};
  std::printf("bench model tracking: %zu events (%.0f hits each), %d thread(s), best of %d by thread CPU time "
              "(wall-clock figures in brackets)\n", events.size(), hits / n, o.threads, o.reps);
  std::printf("  graph construction (features, embedding MLP, Kokkos radius graph): %.1f events/s [%.1f] "
              "(%.0f edges/event)\n", n / graph_s, n / walls[0], graph_edges / n);
  std::printf("  full inference pipeline (graph, filter, interaction network, connected components): %.1f events/s "
              "[%.1f]\n", n / pipeline_s, n / walls[1]);
  std::printf("  connected components on the pipeline's graphs: Kokkos %.1f us/event, plain C++ %.1f us/event\n",
              cc_kokkos_events_s / n * 1e6, cc_reference_events_s / n * 1e6);
  std::printf("  connected components on %lld nodes / %lld random edges: Kokkos %.2f ms, plain C++ %.2f ms\n",
              static_cast<long long>(big_nodes), static_cast<long long>(big_edges_n), big_kokkos_s * 1e3,
              big_reference_s * 1e3);
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace hpcml::launch
