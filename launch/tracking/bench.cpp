// `hpcml bench model tracking`: the tracking pipeline's own benchmark
// (launch/tracking/tracking.hpp, docs/benchmarks.md).
#include "launch/tracking/tracking.hpp"

#include "launch/tracking/common.hpp"

namespace hpcml::launch {

using namespace tracking_detail;  // NOLINT(google-build-using-namespace): this folder's own helpers

int run_tracking_bench(Context& ctx, const TrackingBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, o.events >= 1 && o.reps >= 1 && o.threads >= 1,
                 "bench model tracking: --reps and --threads must be >= 1");
  if (ctx.world->rank() != 0) return 0;
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
  std::printf(
      "bench model tracking: %zu events (%.0f hits each), %d thread(s), best of %d by thread CPU time "
      "(wall-clock figures in brackets)\n",
      events.size(), hits / n, o.threads, o.reps);
  std::printf(
      "  graph construction (features, embedding MLP, Kokkos radius graph): %.1f events/s [%.1f] "
      "(%.0f edges/event)\n",
      n / graph_s, n / walls[0], graph_edges / n);
  std::printf(
      "  full inference pipeline (graph, filter, interaction network, connected components): %.1f events/s "
      "[%.1f]\n",
      n / pipeline_s, n / walls[1]);
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
