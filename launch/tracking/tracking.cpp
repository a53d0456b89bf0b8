// `hpcml tracking train` (launch/tracking/tracking.hpp, docs/tracking.md). A stage loop of
// its own: the learned tracking stages train on events (ragged graphs), not on the
// fixed-shape batches of launch/train/trainer.cpp.
#include "launch/tracking/tracking.hpp"

#include "launch/tracking/common.hpp"

namespace hpcml::launch {

using namespace tracking_detail;  // NOLINT(google-build-using-namespace): this folder's own helpers

std::string tracking_reference() { return config::reference_markdown(config::reference<TrackingConfig>()); }

namespace {

// A run never mixes with another in one directory (as hpcml train): refused, or with
// run.overwrite moved aside; then rank 0 starts run.dir (collective).
void prepare_run_dir(Context& ctx, const TrackingConfig& c) {
  const int rank = ctx.world->rank();
  const fs::path dir = c.run.dir;
  const std::string occupant =
      rank == 0 ? describe_run(dir.string(), {"config.yaml", "metrics.jsonl", "summary.json", "weights.h5"})
                : std::string();
  HPCML_CHECK_AS(ConfigError, occupant.empty() || c.run.overwrite, "config error: key 'run.dir': '", dir.string(),
                 "' holds another run (", occupant,
                 "); choose another run.dir, or set run.overwrite: true to move "
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
}

// Stage 1: the embedding; then each event's graph in the embedding space and its
// truth. Returns the stage's summary (edge metrics of the graphs over all ranks, seconds).
Json train_embedding(Context& ctx, const TrackingConfig& c, trk::LearnedPipeline& pipeline, std::vector<Sample>& shard,
                     int64_t total, MetricsLog& log) {
  const int rank = ctx.world->rank(), size = ctx.world->size();
  trk::EmbeddingLossOptions lo;
  lo.margin = c.embedding.margin;
  lo.random_pairs = c.embedding.random_pairs;
  lo.hard_radius = c.embedding.margin;
  lo.hard_neighbours = c.embedding.hard_neighbours;
  const auto stage_start = Clock::now();
  const auto shard_size = static_cast<int64_t>(shard.size());
  train_stage(ctx, pipeline, trk::Stage::kEmbedding, c.embedding, shard_size, c.run, log, [&](int64_t i, int64_t step) {
    // Random pairs from (seed, step, event position): the same at any rank count.
    const int64_t position = rank + i * size;
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(c.run.seed) * 1000003u +
                                              static_cast<uint64_t>(step) * 7919u + static_cast<uint64_t>(position));
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
  Json summary = edge_json(graph_m, static_cast<double>(total));
  summary["seconds"] = embedding_s;
  if (rank == 0) {
    HPCML_LOG_INFO("tracking embedding graph (training events): efficiency {:.4f} purity {:.4f}, {:.0f} edges/event",
                   graph_m.efficiency(), graph_m.purity(), graph_m.selected_edges / static_cast<double>(total));
  }
  return summary;
}

// Stage 2: the edge filter; then each event's kept edges and their truth. Returns the
// stage's summary as train_embedding.
Json train_filter(Context& ctx, const TrackingConfig& c, trk::LearnedPipeline& pipeline, std::vector<Sample>& shard,
                  int64_t total, MetricsLog& log) {
  const auto stage_start = Clock::now();
  const auto shard_size = static_cast<int64_t>(shard.size());
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
  Json summary = edge_json(filter_m, static_cast<double>(total));
  summary["seconds"] = filter_s;
  if (ctx.world->rank() == 0) {
    HPCML_LOG_INFO("tracking filter (training events): efficiency {:.4f} purity {:.4f}, {:.0f} edges/event",
                   filter_m.efficiency(), filter_m.purity(), filter_m.selected_edges / static_cast<double>(total));
  }
  return summary;
}

// Stage 3: the interaction network on packed graphs; every event's mean loss weighs the
// same. Returns the stage's seconds.
double train_gnn(Context& ctx, const TrackingConfig& c, trk::LearnedPipeline& pipeline, const std::vector<Sample>& shard,
                 MetricsLog& log) {
  const auto stage_start = Clock::now();
  const auto shard_size = static_cast<int64_t>(shard.size());
  const int64_t gnn_per_rank = c.gnn.events_per_step / ctx.world->size();
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
  return seconds_since(stage_start);
}

// The GNN cut that reaches target + margin end to end on the training events (collective).
ScoreHistogram::Point gnn_operating_point(Context& ctx, const TrackingConfig& c, trk::LearnedPipeline& pipeline,
                                          const std::vector<Sample>& shard) {
  ScoreHistogram hist;
  {
    at::NoGradGuard no_grad;
    for (auto& s : shard) {
      hist.all_true += static_cast<double>(s.truth.size(1));
      if (s.kept.size(1)) hist.add(pipeline.gnn_logits(s.x, s.kept).sigmoid(), s.kept_y);
    }
  }
  hist.reduce(*ctx.world);
  return hist.at_efficiency(c.eval.target_efficiency + c.eval.margin);
}

// Rank 0: run.dir/weights.h5 with the cuts as attributes, and "train" in summary.json.
void write_trained(const TrackingConfig& c, const trk::LearnedPipeline& pipeline, double gnn_cut,
                   const Json& train_summary) {
  const fs::path dir = c.run.dir;
  std::map<std::string, std::string> attributes{{"gnn_cut", std::to_string(gnn_cut)},
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

}  // namespace

int tracking_train(Context& ctx, const TrackingConfig& c) {
  const int rank = ctx.world->rank(), size = ctx.world->size();
  check_batches(c, size);
  const auto start = Clock::now();
  prepare_run_dir(ctx, c);
  MetricsLog log(fs::path(c.run.dir) / "metrics.jsonl", rank == 0);

  const int64_t multiple =
      std::lcm(std::lcm<int64_t>(c.embedding.events_per_step, c.filter.events_per_step), c.gnn.events_per_step);
  int64_t total = 0;
  std::vector<Sample> shard = load_shard(c.data.files, c.data.train_events, multiple, rank, size, "data.files", total);
  if (rank == 0) {
    HPCML_LOG_INFO("tracking: {} training events on {} rank(s) ({} each), loaded in {:.1f} s", total, size,
                   static_cast<int64_t>(shard.size()), seconds_since(start));
  }
  trk::LearnedPipeline pipeline(architecture_of(c));
  Json train_summary = {{"ranks", size}, {"train_events", total}};
  train_summary["embedding"] = train_embedding(ctx, c, pipeline, shard, total, log);
  train_summary["filter"] = train_filter(ctx, c, pipeline, shard, total, log);
  const double gnn_s = train_gnn(ctx, c, pipeline, shard, log);
  const auto point = gnn_operating_point(ctx, c, pipeline, shard);
  train_summary["gnn"] = {
      {"cut", point.cut}, {"efficiency", point.efficiency}, {"purity", point.purity}, {"seconds", gnn_s}};
  train_summary["seconds"] = seconds_since(start);
  if (rank == 0) {
    HPCML_LOG_INFO(
        "tracking gnn (training events): cut {:.5f} for efficiency {:.4f} (target {} + margin {}): purity {:.4f}",
        point.cut, point.efficiency, c.eval.target_efficiency, c.eval.margin, point.purity);
    HPCML_LOG_INFO("tracking: trained in {:.1f} s (embedding {:.1f} s, filter {:.1f} s, gnn {:.1f} s)",
                   seconds_since(start), train_summary["embedding"]["seconds"].get<double>(),
                   train_summary["filter"]["seconds"].get<double>(), gnn_s);
    write_trained(c, pipeline, point.cut, train_summary);
  }
  ctx.world->barrier()->wait();
  shard.clear();
  if (c.data.validation_files.empty()) return 0;
  return tracking_evaluate(ctx, c, "", "");
}

}  // namespace hpcml::launch
