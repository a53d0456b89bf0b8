// `hpcml tracking eval`: the pipeline's edge and track metrics on held-out events
// (launch/tracking/tracking.hpp, docs/tracking.md).
#include "launch/tracking/tracking.hpp"

#include "launch/tracking/common.hpp"

namespace hpcml::launch {

using namespace tracking_detail;  // NOLINT(google-build-using-namespace): this folder's own helpers

namespace {

// The baseline's windows, tuned on training events by rank 0 and broadcast (collective).
trk::BaselineWindows tuned_baseline(Context& ctx, const TrackingConfig& c) {
  at::Tensor windows = at::zeros({2}, at::kDouble);
  if (ctx.world->rank() == 0) {
    int64_t tuned = 0;
    std::vector<Sample> tune = load_shard(c.data.files, c.data.baseline_tune_events, 1, 0, 1, "data.files", tuned);
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
  return trk::BaselineWindows{windows[0].item<double>(), windows[1].item<double>()};
}

// What the evaluation of one weights file counts, over this rank's events and then,
// after reduce(), over all ranks.
struct Evaluation {
  std::string weights;
  double gnn_cut = 0;  // the train-tuned cut
  trk::PipelineCuts cuts;
  trk::BaselineWindows baseline;
  int64_t total = 0;  // validation events over all ranks
  trk::EdgeMetrics graph_m, filter_m, gnn_m, track_cut_m, base_m;
  trk::TrackMetrics tracks, base_tracks;
  ScoreHistogram hist;
  double pipeline_s = 0;  // summed over ranks after reduce()

  // One event: what the pipeline found (`out`), and the baseline run on it.
  void add(const Sample& s, const trk::PipelineOutput& out) {
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

  // Every count summed over the ranks (collective).
  void reduce(collectives::Backend& world) {
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
    const auto v = sum_over_ranks(world, local);
    hist.reduce(world);
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
    pipeline_s = v[23];
  }
};

// This rank's validation events through the pipeline and the baseline; with
// `dump_path`, rank 0 writes the first event's stages there.
void evaluate_shard(Evaluation& e, const trk::LearnedPipeline& pipeline, const std::vector<Sample>& shard, int rank,
                    const std::string& dump_path) {
  for (size_t k = 0; k < shard.size(); ++k) {
    const auto& s = shard[k];
    const auto t0 = Clock::now();
    const trk::PipelineOutput out = trk::run_pipeline(pipeline, s.event, e.cuts);
    e.pipeline_s += seconds_since(t0);
    if (k == 0 && rank == 0 && !dump_path.empty()) write_dump(dump_path, pipeline, s.event, out);
    e.add(s, out);
  }
}

// The "eval" object of summary.json.
Json eval_json(const Evaluation& e, const TrackingConfig& c, const ScoreHistogram::Point& exact, int size,
               double seconds) {
  const double events = static_cast<double>(e.total);
  Json eval = {{"weights", e.weights},
               {"validation_events", e.total},
               {"ranks", size},
               {"embedding", edge_json(e.graph_m, events)},
               {"filter", edge_json(e.filter_m, events)},
               {"gnn", edge_json(e.gnn_m, events)},
               {"gnn_at_track_threshold", edge_json(e.track_cut_m, events)},
               {"baseline", edge_json(e.base_m, events)},
               {"tracks",
                {{"efficiency", e.tracks.efficiency()},
                 {"fake_rate", e.tracks.fake_rate()},
                 {"particles", e.tracks.particles},
                 {"matched_particles", e.tracks.matched_particles},
                 {"candidates", e.tracks.candidates},
                 {"fake_candidates", e.tracks.fake_candidates},
                 {"threshold", e.cuts.gnn}}},
               {"baseline_tracks",
                {{"efficiency", e.base_tracks.efficiency()},
                 {"fake_rate", e.base_tracks.fake_rate()},
                 {"particles", e.base_tracks.particles},
                 {"matched_particles", e.base_tracks.matched_particles}}},
               {"pipeline_events_per_s_per_rank", e.pipeline_s > 0 ? events / e.pipeline_s * size : 0.0},
               {"seconds", seconds}};
  eval["gnn"]["cut"] = e.gnn_cut;
  eval["baseline"]["phi_slope"] = e.baseline.phi_slope;
  eval["baseline"]["z0"] = e.baseline.z0;
  eval["gnn_exact"] = {{"target_efficiency", c.eval.target_efficiency},
                       {"cut", exact.cut},
                       {"efficiency", exact.efficiency},
                       {"purity", exact.purity}};
  eval["target_purity_met"] = e.gnn_m.purity() > e.base_m.purity() && exact.purity > e.base_m.purity();
  eval["target_track_efficiency_met"] = e.tracks.efficiency() >= 0.90;
  return eval;
}

// The table on stdout (rank 0).
void print_evaluation(const Evaluation& e, const TrackingConfig& c, const ScoreHistogram::Point& exact, int size,
                      const Json& eval) {
  const double events = static_cast<double>(e.total);
  std::printf("hpcml tracking eval: %lld validation events on %d rank(s), weights %s\n",
              static_cast<long long>(e.total), size, e.weights.c_str());
  std::printf("  %-34s %10s %8s %12s\n", "stage (edges vs all true edges)", "efficiency", "purity", "edges/event");
  auto row = [&](const char* name, const trk::EdgeMetrics& m) {
    std::printf("  %-34s %10.4f %8.4f %12.1f\n", name, m.efficiency(), m.purity(), m.selected_edges / events);
  };
  row("1 embedding radius graph", e.graph_m);
  row("2 edge filter", e.filter_m);
  char label[96];
  std::snprintf(label, sizeof label, "3 GNN, cut %.4f (train-tuned)", e.gnn_cut);
  row(label, e.gnn_m);
  std::snprintf(label, sizeof label, "3 GNN, track cut %.2f", e.cuts.gnn);
  row(label, e.track_cut_m);
  std::snprintf(label, sizeof label, "baseline (phi %.2e, z0 %.1f)", e.baseline.phi_slope, e.baseline.z0);
  row(label, e.base_m);
  std::printf("  GNN purity at exactly %.3f efficiency on these events: %.4f (cut %.5f)\n", exact.efficiency,
              exact.purity, exact.cut);
  std::printf(
      "  tracks (pT > 1 GeV, double majority): GNN efficiency %.4f fake rate %.4f (%lld/%lld particles); "
      "baseline efficiency %.4f fake rate %.4f\n",
      e.tracks.efficiency(), e.tracks.fake_rate(), static_cast<long long>(e.tracks.matched_particles),
      static_cast<long long>(e.tracks.particles), e.base_tracks.efficiency(), e.base_tracks.fake_rate());
  std::printf("  targets: GNN purity > baseline purity at %.2f efficiency: %s; track efficiency >= 0.90: %s\n",
              c.eval.target_efficiency, eval["target_purity_met"].get<bool>() ? "met" : "NOT met",
              eval["target_track_efficiency_met"].get<bool>() ? "met" : "NOT met");
  std::fflush(stdout);
}

}  // namespace

int tracking_evaluate(Context& ctx, const TrackingConfig& c, const std::string& weights_arg,
                      const std::string& dump_path) {
  const int rank = ctx.world->rank(), size = ctx.world->size();
  const auto start = Clock::now();
  const fs::path dir = c.run.dir;
  Evaluation e;
  e.weights = weights_arg.empty() ? (dir / "weights.h5").string() : weights_arg;
  HPCML_CHECK_AS(IoError, fs::exists(e.weights), "tracking eval: weights file '", e.weights,
                 "' not found; run `hpcml tracking train` first or pass --weights");
  const auto attributes = trk::read_weight_attributes(e.weights);
  trk::LearnedPipeline pipeline(trk::architecture_from_attributes(attributes, e.weights));
  pipeline.load_state(trk::read_weights(e.weights), e.weights);
  pipeline.set_training(false);
  e.gnn_cut = attribute_number(attributes, "gnn_cut", e.weights);
  e.cuts.graph = graph_options(c);
  e.cuts.filter = c.filter.threshold;
  e.cuts.gnn = c.gnn.track_threshold;
  e.baseline = tuned_baseline(ctx, c);

  const std::vector<Sample> shard =
      load_shard(c.data.validation_files, c.data.validation_events, 1, rank, size, "data.validation_files", e.total);
  evaluate_shard(e, pipeline, shard, rank, dump_path);
  e.reduce(*ctx.world);
  const auto exact = e.hist.at_efficiency(c.eval.target_efficiency);
  if (rank != 0) return 0;

  const Json eval = eval_json(e, c, exact, size, seconds_since(start));
  print_evaluation(e, c, exact, size, eval);
  fs::create_directories(dir);
  Json summary = read_json(dir / "summary.json");
  summary["eval"] = eval;
  write_file_atomically((dir / "summary.json").string(), summary.dump(2) + "\n");
  return 0;
}

}  // namespace hpcml::launch
