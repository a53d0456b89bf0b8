// The learned tracking stages (models/tracking/learned.hpp): features, edge truth, the
// graph built in the embedding space (against brute force, and its memory on a 10k-hit
// event: no N x N allocation), packed message passing, the losses, and the weights file.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"
#include "models/tracking/graph.hpp"
#include "models/tracking/learned.hpp"
#include "tests/support/ci.hpp"
#include "tests/support/memory_testing.hpp"

namespace {

namespace trk = hpcml::models::tracking;
using Edge = std::pair<int64_t, int64_t>;

std::vector<trk::TrackingEvent> make_events(int64_t count, double mean_particles = 100, uint64_t seed = 7) {
  hpcml::io::datagen::TrackingOptions o;
  o.mean_particles = mean_particles;
  return trk::events_from_table(hpcml::io::datagen::generate_tracking(o, seed, 0, count));
}

std::vector<Edge> edge_list(const at::Tensor& edges) {
  const at::Tensor e = edges.contiguous();
  const int64_t m = e.size(1);
  const int64_t* p = e.data_ptr<int64_t>();
  std::vector<Edge> out;
  for (int64_t k = 0; k < m; ++k) out.emplace_back(p[k], p[m + k]);
  return out;
}

trk::Architecture small_architecture() {
  trk::Architecture a;
  a.embedding_dim = 4;
  a.embedding_hidden = {16, 16};
  a.filter_hidden = {16};
  a.gnn_hidden = 8;
  a.gnn_iterations = 2;
  a.seed = 3;
  return a;
}

using hpcml::testing::reset_peak_rss;
using hpcml::testing::status_kb;

}  // namespace

TEST(TrackingFeatures, NodeAndEdgeFeatures) {
  trk::TrackingEvent e;
  // Two hits at r = 100 mm and 200 mm, on either side of phi = +-pi.
  e.hits = at::tensor({-100.0f, 1.0f, 50.0f, -200.0f, -3.0f, 120.0f}).view({2, 3});
  const at::Tensor x = trk::node_features(e);
  ASSERT_EQ(x.sizes(), (at::IntArrayRef{2, trk::kNodeFeatures}));
  EXPECT_NEAR(x[0][0].item<double>(), std::hypot(100.0, 1.0) / 1000, 1e-6);
  EXPECT_NEAR(x[0][1].item<double>(), std::atan2(1.0, -100.0) / M_PI, 1e-6);
  EXPECT_NEAR(x[0][2].item<double>(), 0.05, 1e-6);
  EXPECT_NEAR(x[0][5].item<double>(), std::asinh(50.0 / std::hypot(100.0, 1.0)) / 2, 1e-6);
  const at::Tensor f = trk::edge_features(x, at::tensor({int64_t{0}, int64_t{1}}).view({2, 1}));
  ASSERT_EQ(f.sizes(), (at::IntArrayRef{1, trk::kEdgeFeatures}));
  // dphi wraps across the +-pi boundary: a small angle, not ~2 pi.
  const double dphi = std::atan2(-3.0, -200.0) - std::atan2(1.0, -100.0) + 2 * M_PI;
  EXPECT_NEAR(f[0][2 * trk::kNodeFeatures + 1].item<double>(), dphi / M_PI, 1e-6);
  EXPECT_THROW(trk::edge_features(x, at::tensor({int64_t{0}, int64_t{5}}).view({2, 1})), hpcml::ConfigError);
}

TEST(TrackingFeatures, EdgeTruthIgnoresDirection) {
  const auto event = make_events(1).front();
  const at::Tensor truth = trk::true_edges(event);
  ASSERT_GT(truth.size(1), 100);
  EXPECT_TRUE(trk::edge_truth(event, truth).all().item<bool>());
  EXPECT_TRUE(trk::edge_truth(event, truth.flip(0)).all().item<bool>());
  // Pairs of hits two apart on the same particle are not true edges.
  const at::Tensor skip = at::stack({truth[0].narrow(0, 0, truth.size(1) - 1), truth[1].narrow(0, 1, truth.size(1) - 1)});
  const at::Tensor y = trk::edge_truth(event, skip);
  EXPECT_LT(y.sum().item<int64_t>(), skip.size(1));
}

TEST(EmbeddingGraph, EqualsBruteForceUniqueAndOriented) {
  const auto event = make_events(1).front();
  const at::Tensor x = trk::node_features(event);
  const int64_t n = x.size(0);
  auto gen = at::detail::createCPUGenerator(5);
  const at::Tensor emb = at::rand({n, 3}, gen);
  trk::EmbeddingGraphOptions o;
  o.radius = 0.08;
  o.max_neighbours = 0;
  const auto got = edge_list(trk::embedding_graph(emb, x, o));
  // Brute force: every unordered pair within the radius, inner hit (radius, then index) first.
  const at::Tensor d = at::cdist(emb.to(at::kDouble), emb.to(at::kDouble));
  const at::Tensor r = x.select(1, 0);
  std::vector<Edge> expected;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      if (d[i][j].item<double>() > o.radius) continue;
      const bool swap = r[i].item<float>() > r[j].item<float>();
      expected.emplace_back(swap ? j : i, swap ? i : j);
    }
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_GT(expected.size(), 100u);
  EXPECT_EQ(got, expected);
}

// The memory requirement: graph construction of a 10k-hit event (features,
// embedding MLP, radius graph, unique pairs, orientation) allocates nothing of N x N size.
TEST(EmbeddingGraph, TenThousandHitEventHasNoNSquaredAllocation) {
  const auto event = make_events(1, /*mean_particles=*/1300, /*seed=*/11).front();
  const int64_t n = event.hits.size(0);
  ASSERT_GE(n, 10000);
  ASSERT_LE(n, 14000);
  trk::LearnedPipeline pipeline(trk::Architecture{});  // the default (configs/tracking.yaml) architecture
  pipeline.set_training(false);
  trk::EmbeddingGraphOptions o;  // the default radius and cap
  at::NoGradGuard no_grad;
  trk::node_features(event);  // warm-up: first-use allocations out of the measurement
  if (!reset_peak_rss()) HPCML_CANNOT_RUN("cannot reset VmHWM through /proc/self/clear_refs");
  int64_t before = status_kb("VmHWM");
  {
    const at::Tensor dense = at::ones({n, n}, at::kFloat);  // the N x N float matrix it must not allocate
    EXPECT_GT(dense.sum().item<double>(), 0);
  }
  const int64_t dense_kb = status_kb("VmHWM") - before;
  EXPECT_GE(dense_kb, n * n * 4 / 1024 * 9 / 10) << "the measurement must see an N x N allocation";
  ASSERT_TRUE(reset_peak_rss());
  before = status_kb("VmHWM");
  const at::Tensor x = trk::node_features(event);
  const at::Tensor edges = trk::embedding_graph(pipeline.embed(x), x, o);
  const int64_t growth_kb = status_kb("VmHWM") - before;
  std::printf("graph construction, %lld hits: %lld edges, peak RSS growth %lld kB; an N x N float matrix: %lld kB\n",
              static_cast<long long>(n), static_cast<long long>(edges.size(1)), static_cast<long long>(growth_kb),
              static_cast<long long>(dense_kb));
  RecordProperty("graph_construction_peak_rss_growth_kB", std::to_string(growth_kb));
  EXPECT_LE(edges.size(1), n * o.max_neighbours);
  // Linear terms: about 10k x 128 floats per MLP layer (5 MB) and O(E) edge buffers.
  EXPECT_LT(growth_kb, dense_kb / 4);
  EXPECT_LT(growth_kb, 80 * 1024);
}

TEST(InteractionNetwork, PackedGraphsEqualSeparateGraphs) {
  trk::LearnedPipeline pipeline(small_architecture());
  pipeline.set_training(false);
  const auto events = make_events(2);
  std::vector<at::Tensor> xs, edges, separate;
  int64_t offset = 0;
  at::NoGradGuard no_grad;
  for (const auto& e : events) {
    const at::Tensor x = trk::node_features(e);
    const at::Tensor t = trk::true_edges(e);
    separate.push_back(pipeline.gnn_logits(x, t));
    xs.push_back(x);
    edges.push_back(t + offset);
    offset += x.size(0);
  }
  const at::Tensor packed = pipeline.gnn_logits(at::cat(xs), at::cat(edges, 1));
  EXPECT_TRUE(at::allclose(packed, at::cat(separate), 1e-5, 1e-6));
  // Edge order does not matter: index_add sums the same messages.
  const at::Tensor all = at::cat(edges, 1);
  const at::Tensor perm = at::randperm(all.size(1), at::detail::createCPUGenerator(1), at::kLong);
  const at::Tensor permuted = pipeline.gnn_logits(at::cat(xs), all.index_select(1, perm));
  EXPECT_TRUE(at::allclose(permuted, packed.index_select(0, perm), 1e-4, 1e-5));
}

// A few plain gradient steps reduce each stage's loss: the losses are wired to the modules.
TEST(TrackingLosses, GradientStepsReduceEachLoss) {
  trk::LearnedPipeline pipeline(small_architecture());
  pipeline.set_training(true);
  const auto event = make_events(1).front();
  const at::Tensor x = trk::node_features(event);
  const at::Tensor truth = trk::true_edges(event);
  trk::EmbeddingLossOptions lo;
  lo.random_pairs = 2000;
  // Candidate edges: the true ones and random ones.
  const at::Tensor random = at::randint(x.size(0), {2, 3000}, at::detail::createCPUGenerator(2), at::kLong);
  const at::Tensor edges = at::cat({truth, random}, 1);
  const at::Tensor y = trk::edge_truth(event, edges);
  auto descend = [&](trk::Stage stage, auto&& loss_fn, double lr) {
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
      for (auto& [n, p] : pipeline.parameters(stage)) p.mutable_grad() = at::Tensor();
      const at::Tensor loss = loss_fn();
      loss.backward();
      at::NoGradGuard no_grad;
      for (auto& [n, p] : pipeline.parameters(stage)) p.sub_(p.grad() * lr);
      (step == 0 ? first : last) = loss.item<double>();
    }
    return std::make_pair(first, last);
  };
  const auto [e0, e1] = descend(trk::Stage::kEmbedding, [&] {
    return trk::embedding_loss(pipeline, x, event, truth, lo, at::detail::createCPUGenerator(4));
  }, 0.05);
  EXPECT_LT(e1, e0 * 0.9) << "embedding loss " << e0 << " -> " << e1;
  const auto [f0, f1] = descend(trk::Stage::kFilter, [&] {
    return trk::edge_loss(pipeline.filter_logits(x, edges), y, 2.0);
  }, 0.05);
  EXPECT_LT(f1, f0 * 0.9) << "filter loss " << f0 << " -> " << f1;
  const auto [g0, g1] = descend(trk::Stage::kGnn, [&] {
    return trk::edge_loss(pipeline.gnn_logits(x, edges), y, 1.0);
  }, 0.05);
  EXPECT_LT(g1, g0 * 0.9) << "gnn loss " << g0 << " -> " << g1;
}

TEST(TrackingWeights, RoundTripAndMismatchErrors) {
  const auto dir = std::filesystem::temp_directory_path() / ("tracking_weights_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "weights.h5").string();
  trk::LearnedPipeline a(small_architecture());
  trk::save_weights(path, a, {{"gnn_cut", "0.25"}});
  const auto attributes = trk::read_weight_attributes(path);
  EXPECT_EQ(attributes.at("gnn_cut"), "0.25");
  const trk::Architecture arch = trk::architecture_from_attributes(attributes, path);
  EXPECT_EQ(arch.embedding_hidden, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(arch.gnn_iterations, 2);
  auto other = small_architecture();
  other.seed = 99;
  trk::LearnedPipeline b(other);
  b.load_state(trk::read_weights(path), path);
  a.set_training(false);
  b.set_training(false);
  const auto event = make_events(1).front();
  const at::Tensor x = trk::node_features(event);
  const at::Tensor t = trk::true_edges(event);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(a.embed(x), b.embed(x)));
  EXPECT_TRUE(at::equal(a.gnn_logits(x, t), b.gnn_logits(x, t)));
  // A different architecture: the first mis-shaped tensor is named.
  auto wider = small_architecture();
  wider.gnn_hidden = 9;
  trk::LearnedPipeline c(wider);
  try {
    c.load_state(trk::read_weights(path), path);
    FAIL() << "expected ConfigError";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("tensor 'gnn."), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("expected"), std::string::npos) << e.message();
  }
  std::filesystem::remove_all(dir);
}

TEST(TrackingPipeline, RunsEndToEnd) {
  trk::LearnedPipeline pipeline(small_architecture());
  pipeline.set_training(false);
  const auto event = make_events(1).front();
  trk::PipelineCuts cuts;
  cuts.graph.radius = 0.3;
  cuts.graph.max_neighbours = 8;
  cuts.filter = 0.0;  // keep every edge: the GNN sees the whole graph
  const auto out = trk::run_pipeline(pipeline, event, cuts);
  const int64_t n = event.hits.size(0);
  EXPECT_EQ(out.embedding.sizes(), (at::IntArrayRef{n, 4}));
  EXPECT_EQ(out.filter_scores.numel(), out.graph_edges.size(1));
  EXPECT_EQ(out.filter_edges.size(1), out.graph_edges.size(1));
  EXPECT_EQ(out.gnn_scores.numel(), out.filter_edges.size(1));
  EXPECT_EQ(out.labels.numel(), n);
  // Oriented inner -> outer.
  const at::Tensor r = out.x.select(1, 0);
  EXPECT_TRUE(r.index_select(0, out.graph_edges[0]).le(r.index_select(0, out.graph_edges[1])).all().item<bool>());
}
