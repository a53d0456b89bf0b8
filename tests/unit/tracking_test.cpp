// The tracking core (models/tracking/graph.hpp): the Kokkos radius graph against a
// brute-force reference computed here in chunks, its memory (no N x N allocation), the
// Kokkos connected components against the plain reference and an independent BFS, the
// metrics on hand-made events, and the baseline and metrics end to end on events from
// `datagen tracking`.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <queue>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"
#include "models/tracking/graph.hpp"
#include "tests/support/ci.hpp"
#include "tests/support/memory_testing.hpp"

namespace {

namespace trk = hpcml::models::tracking;
using Edge = std::pair<int64_t, int64_t>;

std::vector<Edge> edge_list(const at::Tensor& edges) {
  EXPECT_EQ(edges.dim(), 2);
  EXPECT_EQ(edges.size(0), 2);
  const at::Tensor e = edges.contiguous();
  const int64_t m = e.size(1);
  const int64_t* p = e.data_ptr<int64_t>();
  std::vector<Edge> out;
  out.reserve(m);
  for (int64_t k = 0; k < m; ++k) out.emplace_back(p[k], p[m + k]);
  return out;
}

// Uniform points in the unit cube.
at::Tensor uniform_points(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  at::Tensor p = at::empty({n, d}, at::kFloat);
  float* x = p.data_ptr<float>();
  for (int64_t i = 0; i < n * d; ++i) x[i] = u(rng);
  return p;
}

// Clusters of `size` points (sigma) around centres uniform in the unit cube: an embedding-like set.
at::Tensor clustered_points(int64_t n, int64_t d, int64_t size, float sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::normal_distribution<float> g(0.0f, sigma);
  at::Tensor p = at::empty({n, d}, at::kFloat);
  float* x = p.data_ptr<float>();
  std::vector<float> centre(d);
  for (int64_t i = 0; i < n; ++i) {
    if (i % size == 0) {
      for (auto& c : centre) c = u(rng);
    }
    for (int64_t k = 0; k < d; ++k) x[i * d + k] = centre[k] + g(rng);
  }
  return p;
}

// Squared distances of rows [i0, i0 + rows) to all points, in float64, by ATen: (rows, N).
at::Tensor chunk_dist2(const at::Tensor& points64, int64_t i0, int64_t rows) {
  const at::Tensor a = points64.narrow(0, i0, rows).unsqueeze(1);  // (rows, 1, d)
  return (a - points64.unsqueeze(0)).pow(2).sum(-1);
}

// All pairs within r, both directions (or i < j), by chunked brute force; sorted.
// at::cdist in float64 without the matrix-multiply shortcut (compute_mode 2), on row
// chunks so that no N x N matrix exists here either.
std::vector<Edge> brute_force_pairs(const at::Tensor& points, double radius, bool once) {
  const at::Tensor p64 = points.to(at::kDouble);
  const int64_t n = points.size(0);
  std::vector<Edge> out;
  constexpr int64_t kChunk = 512;
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t rows = std::min(kChunk, n - i0);
    const at::Tensor dist = at::cdist(p64.narrow(0, i0, rows), p64, /*p=*/2, /*compute_mode=*/2);
    // nonzero() is column-major (strides {1, M}); make it row-major to read pairs.
    const at::Tensor hit = (dist <= radius).nonzero().contiguous();  // (M, 2)
    const int64_t* h = hit.data_ptr<int64_t>();
    for (int64_t k = 0; k < hit.size(0); ++k) {
      const int64_t i = i0 + h[2 * k], j = h[2 * k + 1];
      if (i == j || (once && j < i)) continue;
      out.emplace_back(i, j);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

using hpcml::testing::reset_peak_rss;
using hpcml::testing::status_kb;

}  // namespace

// --- radius graph ------------------------------------------------------------------

TEST(RadiusGraph, MatchesChunkedBruteForceOn10kPoints3d) {
  const at::Tensor points = uniform_points(10000, 3, /*seed=*/11);
  for (const auto direction : {trk::EdgeDirection::kBoth, trk::EdgeDirection::kOnce}) {
    trk::RadiusGraphOptions o;
    o.radius = 0.05;
    o.direction = direction;
    const at::Tensor edges = trk::radius_graph(points, o);
    ASSERT_EQ(edges.scalar_type(), at::kLong);
    const auto got = edge_list(edges);
    // The documented order: sources ascending, each source's targets ascending.
    EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
    const auto want = brute_force_pairs(points, o.radius, direction == trk::EdgeDirection::kOnce);
    EXPECT_GT(want.size(), 10000u) << "the radius should give several neighbours per point";
    EXPECT_EQ(got, want) << "direction " << static_cast<int>(direction) << ": got " << got.size()
                         << " edges, brute force " << want.size();
  }
}

TEST(RadiusGraph, MatchesBruteForceInAnEightDimensionalEmbedding) {
  // Binning uses the first 3 coordinates only; distances use all 8.
  const at::Tensor points = clustered_points(10000, 8, /*size=*/10, /*sigma=*/0.02f, /*seed=*/12);
  trk::RadiusGraphOptions o;
  o.radius = 0.08;
  const auto got = edge_list(trk::radius_graph(points, o));
  const auto want = brute_force_pairs(points, o.radius, /*once=*/false);
  EXPECT_GT(want.size(), 20000u);
  EXPECT_EQ(got, want);
}

TEST(RadiusGraph, CoarsenedCellListStillExact) {
  // A tiny cell_factor forces cells much larger than the radius.
  const at::Tensor points = uniform_points(3000, 2, /*seed=*/13);
  trk::RadiusGraphOptions o;
  o.radius = 0.02;
  o.cell_factor = 0.01;
  EXPECT_EQ(edge_list(trk::radius_graph(points, o)), brute_force_pairs(points, o.radius, /*once=*/false));
}

TEST(RadiusGraph, MaxNeighboursKeepsTheNearest) {
  const at::Tensor points = uniform_points(2000, 4, /*seed=*/14);
  const at::Tensor p64 = points.to(at::kDouble);
  trk::RadiusGraphOptions o;
  o.radius = 0.2;
  o.max_neighbours = 5;
  for (const auto direction : {trk::EdgeDirection::kBoth, trk::EdgeDirection::kOnce}) {
    o.direction = direction;
    const auto got = edge_list(trk::radius_graph(points, o));
    std::vector<Edge> want;
    const at::Tensor d2 = chunk_dist2(p64, 0, points.size(0));
    const double* dd = d2.data_ptr<double>();
    const int64_t n = points.size(0);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<std::pair<double, int64_t>> cand;
      for (int64_t j = 0; j < n; ++j) {
        if (j == i || (direction == trk::EdgeDirection::kOnce && j < i)) continue;
        if (dd[i * n + j] <= o.radius * o.radius) cand.emplace_back(dd[i * n + j], j);
      }
      std::sort(cand.begin(), cand.end());
      if (cand.size() > 5) cand.resize(5);
      std::vector<int64_t> js;
      for (const auto& c : cand) js.push_back(c.second);
      std::sort(js.begin(), js.end());
      for (const int64_t j : js) want.emplace_back(i, j);
    }
    EXPECT_EQ(got, want) << "direction " << static_cast<int>(direction);
  }
}

TEST(RadiusGraph, NoDenseAllocationFor10kPoints) {
  // A dense 10k x 10k float distance matrix is 400 MB. The peak RSS growth while
  // building the graph must stay far below it. The positive control proves the
  // measurement sees a 100 MB allocation.
  const at::Tensor points = clustered_points(10000, 8, /*size=*/10, /*sigma=*/0.02f, /*seed=*/15);
  trk::RadiusGraphOptions o;
  o.radius = 0.08;
  (void)trk::radius_graph(points.narrow(0, 0, 100), o);  // Kokkos initialised outside the measurement
  if (!reset_peak_rss()) HPCML_CANNOT_RUN("cannot reset VmHWM through /proc/self/clear_refs");

  int64_t before = status_kb("VmHWM");
  {
    const at::Tensor dense = at::ones({5000, 5000}, at::kFloat);  // 100 MB, touched
    EXPECT_EQ(dense.sum().item<double>(), 25e6);
  }
  const int64_t control_growth_kb = status_kb("VmHWM") - before;
  std::cout << "control: a touched 100 MB tensor raised the peak RSS by " << control_growth_kb << " kB\n";
  EXPECT_GE(control_growth_kb, 90 * 1024) << "the measurement must see a 100 MB allocation";

  ASSERT_TRUE(reset_peak_rss());
  before = status_kb("VmHWM");
  const at::Tensor edges = trk::radius_graph(points, o);
  const int64_t growth_kb = status_kb("VmHWM") - before;
  RecordProperty("radius_graph_peak_rss_growth_kB", std::to_string(growth_kb));
  std::cout << "radius_graph on 10k x 8 points: " << edges.size(1) << " edges, peak RSS growth " << growth_kb
            << " kB (dense N x N float would be 390625 kB)\n";
  EXPECT_LT(growth_kb, 50 * 1024);
}

TEST(RadiusGraph, RejectsBadInputWithOneLineMessages) {
  trk::RadiusGraphOptions o;
  try {
    (void)trk::radius_graph(at::zeros({10, 3}, at::kDouble), o);
    FAIL() << "double points accepted";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("'points'"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("Float"), std::string::npos) << e.message();
    EXPECT_EQ(e.message().find('\n'), std::string::npos);
  }
  at::Tensor bad = uniform_points(10, 3, 1);
  bad[3][1] = std::nanf("");
  EXPECT_THROW((void)trk::radius_graph(bad, o), hpcml::ConfigError);
  o.radius = 0;
  EXPECT_THROW((void)trk::radius_graph(uniform_points(10, 3, 1), o), hpcml::ConfigError);
  o.radius = 1;
  EXPECT_EQ(trk::radius_graph(at::empty({0, 3}, at::kFloat), o).sizes(), (std::vector<int64_t>{2, 0}));
  // Non-contiguous input: read through a contiguous copy, same result.
  const at::Tensor p = uniform_points(500, 6, 2);
  o.radius = 0.3;
  EXPECT_TRUE(trk::radius_graph(p.narrow(1, 1, 3), o).equal(trk::radius_graph(p.narrow(1, 1, 3).contiguous(), o)));
}

// --- connected components --------------------------------------------------------------

namespace {

// Labels by BFS over the kept edges: the smallest node reached first, so the label is the
// component's minimum index.
at::Tensor bfs_labels(int64_t n, const at::Tensor& edges, const at::Tensor& scores, double threshold) {
  std::vector<std::vector<int64_t>> adj(n);
  const auto list = edge_list(edges);
  const float* s = scores.defined() ? scores.data_ptr<float>() : nullptr;
  for (size_t e = 0; e < list.size(); ++e) {
    if (s != nullptr && !(s[e] > static_cast<float>(threshold))) continue;
    adj[list[e].first].push_back(list[e].second);
    adj[list[e].second].push_back(list[e].first);
  }
  at::Tensor labels = at::full({n}, -1, at::kLong);
  int64_t* l = labels.data_ptr<int64_t>();
  for (int64_t root = 0; root < n; ++root) {
    if (l[root] >= 0) continue;
    std::queue<int64_t> q;
    q.push(root);
    l[root] = root;
    while (!q.empty()) {
      const int64_t u = q.front();
      q.pop();
      for (const int64_t v : adj[u]) {
        if (l[v] < 0) {
          l[v] = root;
          q.push(v);
        }
      }
    }
  }
  return labels;
}

}  // namespace

TEST(ConnectedComponents, KokkosEqualsReferenceAndBfsOnRandomGraphs) {
  std::mt19937_64 rng(21);
  struct Case {
    int64_t nodes, edges;
    bool with_scores;
  };
  for (const Case c : {Case{1, 0, false}, Case{50, 10, true}, Case{1000, 500, true}, Case{1000, 1500, false},
                       Case{20000, 15000, true}, Case{20000, 40000, true}, Case{5000, 20000, false}}) {
    std::uniform_int_distribution<int64_t> node(0, c.nodes - 1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    at::Tensor edges = at::empty({2, c.edges}, at::kLong);
    at::Tensor scores = c.with_scores ? at::empty({c.edges}, at::kFloat) : at::Tensor();
    for (int64_t k = 0; k < 2 * c.edges; ++k) edges.data_ptr<int64_t>()[k] = node(rng);
    for (int64_t k = 0; c.with_scores && k < c.edges; ++k) scores.data_ptr<float>()[k] = u(rng);
    const at::Tensor kokkos = trk::connected_components(c.nodes, edges, scores, /*threshold=*/0.4);
    const at::Tensor ref = trk::connected_components_reference(c.nodes, edges, scores, /*threshold=*/0.4);
    const at::Tensor bfs = bfs_labels(c.nodes, edges, scores, 0.4);
    EXPECT_TRUE(kokkos.equal(ref)) << c.nodes << " nodes, " << c.edges << " edges";
    EXPECT_TRUE(kokkos.equal(bfs)) << c.nodes << " nodes, " << c.edges << " edges";
  }
}

TEST(ConnectedComponents, ThresholdSelfLoopsDuplicatesAndErrors) {
  // 0-1 (score 0.9), 1-2 (0.5: not > 0.5), 3-3 self loop, 4-5 twice, 5-4 reversed.
  const at::Tensor edges = at::tensor({0, 1, 3, 4, 4, 5, 1, 2, 3, 5, 5, 4}, at::kLong).view({2, 6});
  const at::Tensor scores = at::tensor({0.9f, 0.5f, 1.0f, 0.7f, 0.8f, 0.1f}, at::kFloat);
  const at::Tensor want = at::tensor({0, 0, 2, 3, 4, 4, 6}, at::kLong);
  EXPECT_TRUE(trk::connected_components(7, edges, scores, 0.5).equal(want));
  EXPECT_TRUE(trk::connected_components_reference(7, edges, scores, 0.5).equal(want));
  EXPECT_TRUE(trk::connected_components(7, edges).equal(at::tensor({0, 0, 0, 3, 4, 4, 6}, at::kLong)));
  EXPECT_EQ(trk::connected_components(0, at::empty({2, 0}, at::kLong)).numel(), 0);

  const at::Tensor out_of_range = at::tensor({0, 7}, at::kLong).view({2, 1});
  EXPECT_THROW((void)trk::connected_components(7, out_of_range), hpcml::ConfigError);
  EXPECT_THROW((void)trk::connected_components_reference(7, out_of_range), hpcml::ConfigError);
  try {
    (void)trk::connected_components(7, edges, at::ones({5}, at::kFloat));
    FAIL() << "scores of the wrong length accepted";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("'scores'"), std::string::npos) << e.message();
  }
  EXPECT_THROW((void)trk::connected_components(7, edges.to(at::kInt)), hpcml::ConfigError);
}

// --- metrics on hand-made events ---------------------------------------------------------

namespace {

// An event with the given per-hit particle ids; hits are placed on layers in order.
trk::TrackingEvent toy_event(const std::vector<int64_t>& pids, const std::vector<int64_t>& particles,
                             const std::vector<float>& pts) {
  trk::TrackingEvent ev;
  const auto n = static_cast<int64_t>(pids.size());
  ev.hits = at::zeros({n, 3}, at::kFloat);
  ev.layer = at::zeros({n}, at::kInt);
  for (int64_t i = 0; i < n; ++i) {
    ev.hits[i][0] = 30.0f * static_cast<float>(i + 1);
    ev.layer[i] = static_cast<int32_t>(i);
  }
  ev.particle_id = at::tensor(pids, at::kLong);
  ev.particles = at::tensor(particles, at::kLong);
  ev.particle_pt = at::tensor(pts, at::kFloat);
  return ev;
}

}  // namespace

TEST(TrackMetrics, DoubleMajorityOnHandMadeCandidates) {
  // hit:       0  1  2  3 | 4  5  6  7 | 8  9 10 | 11 12 13 | 14
  // particle:  1  1  1  1 | 2  2  2  2 | 3  3  3 |  4  4  4 | noise   (pT 2, 2, 0.5, 3 GeV)
  // candidate: 0  0  0  3 | 4  4  6  6 | 8  8  8 | 11 11 13 | 13
  // p1: candidate 0 holds 3/4 of it and is 3/3 p1 -> found. p2: split 2 + 2; candidate 4
  // holds 2/4 (>= 50% is inclusive) and is 2/2 p2 -> found. p3: pT 0.5, not counted.
  // p4: candidate 11 holds 2/3 and is 2/2 p4 -> found. Candidate 13 = {p4 hit, noise}:
  // 1/3 of p4's hits is no majority of p4 -> it matches nothing -> fake.
  const auto ev = toy_event({1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 0}, {1, 2, 3, 4}, {2, 2, 0.5f, 3});
  at::Tensor labels = at::tensor({0, 0, 0, 3, 4, 4, 6, 6, 8, 8, 8, 11, 11, 13, 13}, at::kLong);
  trk::TrackMetricsOptions o;
  o.min_candidate_hits = 2;
  auto m = trk::track_metrics(labels, ev, o);
  EXPECT_EQ(m.particles, 3);
  EXPECT_EQ(m.matched_particles, 3);
  // Candidates with >= 2 hits: 0, 4, 6, 8, 11, 13 (3 has one hit); 13 is the fake.
  EXPECT_EQ(m.candidates, 6);
  EXPECT_EQ(m.fake_candidates, 1);

  // Merge p1 and p2 into one candidate of 8 hits: each is 4/8 = 50% of it and it holds
  // all of each: both still found. Add a noise hit to it: 4/9 < 50% -> both lost.
  labels = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 11, 11, 11, 14}, at::kLong);
  m = trk::track_metrics(labels, ev, o);
  EXPECT_EQ(m.matched_particles, 3);
  labels = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 8, 8, 8, 11, 11, 11, 0}, at::kLong);
  m = trk::track_metrics(labels, ev, o);
  EXPECT_EQ(m.particles, 3);
  EXPECT_EQ(m.matched_particles, 1);  // p4 only
  EXPECT_EQ(m.candidates, 3);
  EXPECT_EQ(m.fake_candidates, 1);  // the merged 9-hit candidate
  EXPECT_DOUBLE_EQ(m.efficiency(), 1.0 / 3.0);
}

TEST(EdgeMetrics, UnorderedPairsDirectionAndDuplicatesIgnored) {
  const at::Tensor truth = at::tensor({0, 1, 2, 1, 2, 3}, at::kLong).view({2, 3});  // 0-1, 1-2, 2-3
  // Selected: 1-0 (reversed true), 0-1 again, 2-1 (true), 0-3 (false).
  const at::Tensor sel = at::tensor({1, 0, 2, 0, 0, 1, 1, 3}, at::kLong).view({2, 4});
  const auto m = trk::edge_metrics(sel, truth);
  EXPECT_EQ(m.true_edges, 3);
  EXPECT_EQ(m.selected_edges, 3);
  EXPECT_EQ(m.true_selected, 2);
  EXPECT_DOUBLE_EQ(m.efficiency(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.purity(), 2.0 / 3.0);
}

// --- end to end on datagen tracking events ------------------------------------------------

namespace {

std::vector<trk::TrackingEvent> generated_events(uint64_t seed, int64_t first, int64_t count) {
  hpcml::io::datagen::TrackingOptions o;
  return trk::events_from_table(hpcml::io::datagen::generate_tracking(o, seed, first, count));
}

}  // namespace

TEST(TrackingEvents, TrueEdgesAreConsecutiveHitsOfEachParticle) {
  const auto events = generated_events(/*seed=*/7, 0, 3);
  ASSERT_EQ(events.size(), 3u);
  for (const auto& ev : events) {
    ASSERT_EQ(ev.hits.size(1), 3);
    const at::Tensor truth = trk::true_edges(ev);
    // One edge fewer than hits per particle.
    const at::Tensor pid = ev.particle_id;
    const int64_t true_hits = (pid > 0).sum().item<int64_t>();
    const int64_t with_hits = std::get<0>(at::_unique(pid.masked_select(pid > 0))).numel();
    EXPECT_EQ(truth.size(1), true_hits - with_hits);
    for (const auto& [a, b] : edge_list(truth)) {
      EXPECT_EQ(pid[a].item<int64_t>(), pid[b].item<int64_t>());
      EXPECT_EQ(ev.layer[b].item<int32_t>(), ev.layer[a].item<int32_t>() + 1);
    }
  }
}

TEST(TrackingEndToEnd, BaselineTunedTo95PercentHoldsOnOtherEvents) {
  const auto train = generated_events(/*seed=*/100, 0, 20);
  const auto test = generated_events(/*seed=*/100, 20, 20);
  const trk::BaselineWindows w = trk::tune_baseline(train, {});
  trk::EdgeMetrics on_train, on_test;
  for (const auto& ev : train) on_train += trk::edge_metrics(trk::geometric_edges(ev, w), trk::true_edges(ev));
  for (const auto& ev : test) on_test += trk::edge_metrics(trk::geometric_edges(ev, w), trk::true_edges(ev));
  std::cout << "baseline windows: phi_slope " << w.phi_slope << " rad/mm, z0 " << w.z0 << " mm\n"
            << "  train: efficiency " << on_train.efficiency() << ", purity " << on_train.purity() << " ("
            << on_train.selected_edges << " edges)\n"
            << "  test:  efficiency " << on_test.efficiency() << ", purity " << on_test.purity() << " ("
            << on_test.true_edges << " true, " << on_test.selected_edges << " selected)\n";
  RecordProperty("baseline_test_efficiency", std::to_string(on_test.efficiency()));
  RecordProperty("baseline_test_purity", std::to_string(on_test.purity()));
  EXPECT_GE(on_train.efficiency(), 0.955);
  EXPECT_GE(on_test.efficiency(), 0.95);
  // Not a degenerate "select everything" baseline: far fewer edges than all adjacent-layer pairs.
  EXPECT_GT(on_test.purity(), 0.05);
}

TEST(TrackingEndToEnd, TruthEdgesThroughConnectedComponentsFindEveryTrack) {
  const auto events = generated_events(/*seed=*/200, 0, 10);
  trk::TrackMetrics total;
  for (const auto& ev : events) {
    const at::Tensor truth = trk::true_edges(ev);
    const at::Tensor scores = at::ones({truth.size(1)}, at::kFloat);
    const at::Tensor labels = trk::connected_components(ev.hits.size(0), truth, scores, /*threshold=*/0.5);
    EXPECT_TRUE(labels.equal(trk::connected_components_reference(ev.hits.size(0), truth, scores, 0.5)));
    total += trk::track_metrics(labels, ev);
  }
  std::cout << "truth tracks: " << total.matched_particles << "/" << total.particles << " particles (pT > 1 GeV), "
            << total.fake_candidates << "/" << total.candidates << " fake candidates\n";
  EXPECT_GT(total.particles, 200);
  EXPECT_GE(total.efficiency(), 0.99);
  EXPECT_LE(total.fake_rate(), 0.01);

  // The same events with the baseline's edges: fewer tracks, some fakes, honest numbers.
  trk::BaselineWindows wide;
  wide.phi_slope = 1e-3;
  wide.z0 = 300;
  trk::TrackMetrics merged;
  for (const auto& ev : events) {
    const at::Tensor labels = trk::connected_components(ev.hits.size(0), trk::geometric_edges(ev, wide));
    merged += trk::track_metrics(labels, ev);
  }
  EXPECT_LT(merged.efficiency(), total.efficiency()) << "wide windows merge tracks";
}

// --- benchmark ----------------------------------------------------------------------------

TEST(TrackingBench, SmallRunReportsPositiveTimes) {
  trk::TrackingBenchOptions o;
  o.cc_nodes = 20000;
  o.cc_edges = 30000;
  o.graph_points = 2000;
  o.graph_events = 2;
  o.repeats = 2;
  const auto r = trk::benchmark_tracking(o);
  EXPECT_GT(r.cc_kokkos_s, 0);
  EXPECT_GT(r.cc_reference_s, 0);
  EXPECT_GT(r.cc_components, 0);
  EXPECT_GT(r.graph_events_per_s, 0);
  EXPECT_GT(r.graph_mean_edges, 0);
  std::cout << "cc: kokkos " << r.cc_kokkos_s * 1e3 << " ms, reference " << r.cc_reference_s * 1e3
            << " ms; radius graph " << r.graph_events_per_s << " events/s, " << r.graph_mean_edges << " edges/event\n";
}

// The figures of docs/tracking.md at the default (full) sizes, at 1 thread. Manual:
//   tracking_test --gtest_also_run_disabled_tests --gtest_filter='*FullSize*'
TEST(TrackingBench, DISABLED_FullSizeFigures) {
  at::set_num_threads(1);
  const auto r = trk::benchmark_tracking({});
  const trk::TrackingBenchOptions o;
  std::cout << "connected components, " << o.cc_nodes << " nodes, " << o.cc_edges << " edges (half above the cut), "
            << r.cc_components << " components: Kokkos " << r.cc_kokkos_s * 1e3 << " ms, reference "
            << r.cc_reference_s * 1e3 << " ms\n"
            << "radius graph, " << o.graph_points << " points x " << o.graph_dim << " dims, r " << o.graph_radius
            << ": " << r.graph_events_per_s << " events/s, " << r.graph_mean_edges << " edges/event\n";

  // The baseline on 100 training and 100 held-out events (default datagen options).
  const auto train = generated_events(/*seed=*/300, 0, 100);
  const auto test = generated_events(/*seed=*/300, 100, 100);
  for (const double margin : {0.0, 0.005}) {
    trk::BaselineTuneOptions to;
    to.margin = margin;
    const auto w = trk::tune_baseline(train, to);
    trk::EdgeMetrics edges;
    trk::TrackMetrics tracks;
    for (const auto& ev : test) {
      const at::Tensor selected = trk::geometric_edges(ev, w);
      edges += trk::edge_metrics(selected, trk::true_edges(ev));
      tracks += trk::track_metrics(trk::connected_components(ev.hits.size(0), selected), ev);
    }
    std::cout << "baseline, margin " << margin << ": phi_slope " << w.phi_slope << " rad/mm, z0 " << w.z0
              << " mm; held-out edge efficiency " << edges.efficiency() << ", purity " << edges.purity() << " ("
              << edges.selected_edges << " edges); CC on them: track efficiency " << tracks.efficiency() << " ("
              << tracks.matched_particles << "/" << tracks.particles << "), fake rate " << tracks.fake_rate() << " ("
              << tracks.fake_candidates << "/" << tracks.candidates << ")\n";
  }
}
