// The performance model (perf/): allreduce costs against hand arithmetic, the alpha/beta fit,
// the reducer's bucketing, the overlap simulation, strong vs weak scaling, service sizing.
// Every expected value is worked out in the comments from the equations of docs/scaling.md.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "perf/perf.hpp"

namespace hpcml::perf {
namespace {

constexpr double kRel = 1e-12;

// One node of p ranks: alpha 1 us, beta 1 ns/byte, gamma 0.1 ns/byte; n = 1e6 bytes.
Topology one_node(int ranks) {
  Topology t;
  t.ranks_per_node = ranks;
  t.intra = {1e-6, 1e-9};
  t.network = {1e-6, 1e-9};
  t.gamma_s_per_byte = 1e-10;
  return t;
}

void expect_rel(double actual, double expected) { EXPECT_NEAR(actual, expected, std::abs(expected) * kRel); }

TEST(PerfAllreduce, OneNodePowerOfTwo) {
  const Topology t = one_node(4);
  // ring, p=4: 2*3*1e-6 + 2*(3/4)*1e6*1e-9 + (3/4)*1e6*1e-10 = 6e-6 + 1.5e-3 + 7.5e-5
  expect_rel(allreduce_seconds(Algorithm::kRing, 1e6, 4, t), 6e-6 + 1.5e-3 + 7.5e-5);
  // recursive doubling, log2 4 = 2 steps of (alpha + n beta + n gamma): 2*(1e-6 + 1e-3 + 1e-4)
  expect_rel(allreduce_seconds(Algorithm::kRecursiveDoubling, 1e6, 4, t), 2 * (1e-6 + 1e-3 + 1e-4));
  // Rabenseifner: 2*2*1e-6 + 2*(3/4)*1e-3 + (3/4)*1e-4
  expect_rel(allreduce_seconds(Algorithm::kRabenseifner, 1e6, 4, t), 4e-6 + 1.5e-3 + 7.5e-5);
  // NCCL tree in one node (a chain): 2*(4-1)*1e-6 + 2*1e6*1e-9 + 1e6*1e-10
  expect_rel(allreduce_seconds(Algorithm::kTree, 1e6, 4, t), 6e-6 + 2e-3 + 1e-4);
  // hierarchical in one node: ring reduce-scatter + allgather = the ring
  expect_rel(allreduce_seconds(Algorithm::kHierarchical, 1e6, 4, t), 6e-6 + 1.5e-3 + 7.5e-5);
  EXPECT_EQ(allreduce_seconds(Algorithm::kRing, 1e6, 1, t), 0.0);
}

TEST(PerfAllreduce, NonPowerOfTwoAsMpich) {
  const Topology t = one_node(3);
  // p=3: p'=2, r=1. Extra: send n to the partner and sum (1e-6 + 1e-3 + 1e-4), send the
  // result back (1e-6 + 1e-3): 2e-6 + 2e-3 + 1e-4.
  const double extra = 2e-6 + 2e-3 + 1e-4;
  // Rabenseifner at p'=2: 2*1e-6 + 2*(1/2)*1e-3 + (1/2)*1e-4
  expect_rel(allreduce_seconds(Algorithm::kRabenseifner, 1e6, 3, t), extra + 2e-6 + 1e-3 + 5e-5);
  // recursive doubling at p'=2: one step, 1e-6 + 1e-3 + 1e-4
  expect_rel(allreduce_seconds(Algorithm::kRecursiveDoubling, 1e6, 3, t), extra + 1e-6 + 1e-3 + 1e-4);
}

TEST(PerfAllreduce, TwoNodesOfTwo) {
  // L=2, p=4 (M=2 nodes); intra 1 us, 0.1 ns/byte; network 10 us, 1 ns/byte per node; no gamma.
  Topology t;
  t.ranks_per_node = 2;
  t.intra = {1e-6, 1e-10};
  t.network = {1e-5, 1e-9};
  // ring: 2(p-M)=4 intra steps, 2(M-1)=2 network steps; the slower link's beta:
  // 4e-6 + 2e-5 + 2*(3/4)*1e6*1e-9
  expect_rel(allreduce_seconds(Algorithm::kRing, 1e6, 4, t), 4e-6 + 2e-5 + 1.5e-3);
  // recursive doubling: distance 1 in the node (1e-6 + 1e6*1e-10); distance 2 across, both
  // ranks of a node on its NICs: beta 2e-9 -> 1e-5 + 2e-3
  expect_rel(allreduce_seconds(Algorithm::kRecursiveDoubling, 1e6, 4, t), 1.01e-4 + 1e-5 + 2e-3);
  // Rabenseifner: step 1 in the node, pieces 5e5: 2*(1e-6 + 5e5*1e-10) = 1.02e-4;
  // step 2 across, pieces 2.5e5 at 2e-9: 2*(1e-5 + 5e-4) = 1.02e-3
  expect_rel(allreduce_seconds(Algorithm::kRabenseifner, 1e6, 4, t), 1.02e-4 + 1.02e-3);
  // tree: 2*((2-1)*1e-6 + log2(2)*1e-5) + 2*1e6*1e-9
  expect_rel(allreduce_seconds(Algorithm::kTree, 1e6, 4, t), 2.2e-5 + 2e-3);
  // hierarchical: node ring reduce-scatter + allgather 2*1e-6 + 2*(1/2)*1e6*1e-10 = 1.02e-4;
  // across: 5e5 bytes over 2 ranks at alpha 1e-5, beta 2e-9, the cheapest of
  // ring 2e-5 + 1e-3, recursive doubling 1e-5 + 1e-3, Rabenseifner 2*(1e-5 + 5e-4), tree 2e-5 + 2e-3
  expect_rel(allreduce_seconds(Algorithm::kHierarchical, 1e6, 4, t), 1.02e-4 + 1e-5 + 1e-3);
  // auto: the cheapest of the four flat ones (Rabenseifner here)
  EXPECT_EQ(cheapest_algorithm(1e6, 4, t), Algorithm::kRabenseifner);
  expect_rel(allreduce_seconds(Algorithm::kAuto, 1e6, 4, t), 1.02e-4 + 1.02e-3);
}

TEST(PerfAllreduce, AutoTakesDoublingForSmallAndHalvingForLarge) {
  Topology t;
  t.ranks_per_node = 8;
  t.intra = {1e-5, 1e-9};
  // p=8, 1000 bytes: ring 14e-5 + 1.75e-6; recursive doubling 3*(1e-5 + 1e-6) = 3.3e-5: doubling
  EXPECT_EQ(cheapest_algorithm(1e3, 8, t), Algorithm::kRecursiveDoubling);
  // 1e8 bytes: ring 14e-5 + 0.175; Rabenseifner 6e-5 + 0.175: fewer latencies, same bandwidth
  EXPECT_EQ(cheapest_algorithm(1e8, 8, t), Algorithm::kRabenseifner);
  EXPECT_EQ(parse_algorithm("recursive_doubling", "x"), Algorithm::kRecursiveDoubling);
  EXPECT_THROW(parse_algorithm("butterfly", "x"), ConfigError);
}

// Ring at p=2: seconds = 2 alpha + n beta.
std::vector<Measurement> ring2_points(double alpha, double beta, double noise) {
  std::vector<Measurement> points;
  for (int k = 0; k < 8; ++k) {
    const double n = 4096.0 * std::pow(4.0, k);  // 4 KiB to 64 MiB
    const double sign = (k % 2 == 0) ? 1.0 : -1.0;
    points.push_back({n, (2 * alpha + n * beta) * (1 + sign * noise), 2});
  }
  return points;
}

TEST(PerfFit, RecoversAlphaAndBeta) {
  const LinkFit exact = fit_link(ring2_points(5e-6, 2e-10, 0), Algorithm::kRing, "fit");
  EXPECT_NEAR(exact.link.alpha_s, 5e-6, 5e-6 * 1e-9);
  EXPECT_NEAR(exact.link.beta_s_per_byte, 2e-10, 2e-10 * 1e-9);
  EXPECT_LT(exact.rms_relative_residual, 1e-9);
  // +-2% alternating noise: the relative residuals stay near 2%, the parameters within 10% / 3%.
  const LinkFit noisy = fit_link(ring2_points(5e-6, 2e-10, 0.02), Algorithm::kRing, "fit");
  EXPECT_NEAR(noisy.link.alpha_s, 5e-6, 0.5e-6);
  EXPECT_NEAR(noisy.link.beta_s_per_byte, 2e-10, 0.06e-10);
  EXPECT_NEAR(noisy.rms_relative_residual, 0.02, 0.01);
  EXPECT_FALSE(noisy.alpha_clamped);
  ASSERT_EQ(noisy.predicted_s.size(), 8u);
}

TEST(PerfFit, ClampsANegativeAlphaAndRefusesBadData) {
  // Intercept -2e-6 (alpha -1e-6) at sizes where every time stays positive.
  std::vector<Measurement> points;
  for (double n : {1e5, 1e6, 1e7}) points.push_back({n, -2e-6 + n * 1e-10, 2});
  const LinkFit fit = fit_link(points, Algorithm::kRing, "fit");
  EXPECT_TRUE(fit.alpha_clamped);
  EXPECT_EQ(fit.link.alpha_s, 0.0);
  EXPECT_GT(fit.link.beta_s_per_byte, 0.0);
  EXPECT_THROW(fit_link({{4096, 1e-5, 2}, {4096, 1.1e-5, 2}}, Algorithm::kRing, "fit"), ConfigError);
  EXPECT_THROW(fit_link({{4096, 1e-5, 2}, {8192, -1e-5, 2}}, Algorithm::kRing, "fit"), ConfigError);
  EXPECT_THROW(fit_link({{4096, 1e-3, 2}, {1e7, 1e-5, 2}}, Algorithm::kRing, "fit"), ConfigError);  // beta < 0
  EXPECT_THROW(fit_link({{4096, 1e-5, 2}, {8192, 2e-5, 3}}, Algorithm::kRing, "fit"), ConfigError);
  EXPECT_THROW(fit_link({{4096, 1e-5, 1}, {8192, 2e-5, 1}}, Algorithm::kRing, "fit"), ConfigError);
}

TEST(PerfFit, ReadsBenchRows) {
  const auto rows = nlohmann::json::parse(R"([
    {"impl": "mpi", "path": "blocking", "bytes": 4096, "latency_us": 10, "ranks": 2},
    {"impl": "mpi", "path": "nonblocking", "bytes": 4096, "latency_us": 11, "ranks": 2},
    {"impl": "hpcml", "path": "blocking", "bytes": 4096, "latency_us": 12, "ranks": 2},
    {"impl": "mpi", "path": "blocking", "bytes": 16384, "latency_us": 20, "ranks": 3},
    {"impl": "mpi", "path": "blocking", "bytes": 65536, "latency_us": 40}])");
  const auto m = allreduce_rows(rows, "mpi", "blocking", 2, "bench.json");
  ASSERT_EQ(m.size(), 2u);  // the 3-rank row is skipped, the row without ranks takes 2
  EXPECT_EQ(m[1].bytes, 65536);
  EXPECT_NEAR(m[1].seconds, 40e-6, 1e-18);
  EXPECT_THROW(allreduce_rows(rows, "mpi", "blocking", 0, "bench.json"), ConfigError);  // a row without ranks
  EXPECT_THROW(allreduce_rows(rows, "nccl", "blocking", 2, "bench.json"), ConfigError);
}

TEST(PerfBuckets, MirrorsTheReducer) {
  // Registration order 600k, 100k, 300k, 700k, 50k; first bucket 1 MiB, cap 2 MiB, direct >= 256 KiB.
  // Reverse: 50k, 700k (750k), 300k would make 1.05M > 1,048,576: new bucket (cap 2 MiB):
  // 300k, 100k, 600k (1.0M). Bucket 0: direct 700k, then flat 50k; bucket 1: direct 300k,
  // direct 600k, then flat 100k.
  BucketOptions options;
  options.bucket_cap_bytes = 2 << 20;
  const auto r = bucket_parameters({600000, 100000, 300000, 700000, 50000}, options);
  ASSERT_EQ(r.size(), 5u);
  const std::vector<std::pair<int64_t, int>> expected{{700000, 0}, {50000, 0}, {300000, 1}, {600000, 1}, {100000, 1}};
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].bytes, expected[i].first) << i;
    EXPECT_EQ(r[i].bucket, expected[i].second) << i;
  }
  // A parameter over the first cap gets a bucket of its own.
  const auto big = bucket_parameters({5 << 20, 1000});
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[0].bucket, 0);
  EXPECT_EQ(big[1].bucket, 1);
  EXPECT_THROW(bucket_parameters({}), ConfigError);
  EXPECT_THROW(bucket_parameters({0}), ConfigError);
}

// Three buckets of 1, 2 and 1 MB; 2 ranks in one node, ring: 2 alpha + n beta with alpha 0 and
// beta 5 ns/byte: 0.005 s per MB. Compute 3 ms/sample x 10 = 0.03 s, backward 2/3 = 0.02 s.
StepInputs three_buckets(bool overlap) {
  StepInputs in;
  in.compute_per_sample_s = 0.003;
  in.batch_per_rank = 10;
  in.optimizer_per_step_s = 0.001;
  in.data_per_sample_s = 0.0001;
  in.overlap = overlap;
  in.reductions = reductions_from_buckets({1000000, 2000000, 1000000});
  return in;
}

Topology linear_pair() {
  Topology t;
  t.ranks_per_node = 2;
  t.intra = {0, 5e-9};
  return t;
}

TEST(PerfStep, OverlapOfThreeBuckets) {
  // ready: 0.02 * 1/4 = 0.005, 0.02 * 3/4 = 0.015, 0.02.
  // bucket 0: 0.005 -> 0.010; bucket 1: max(0.015, 0.010) = 0.015 -> 0.025;
  // bucket 2: max(0.02, 0.025) = 0.025 -> 0.030. Exposed 0.030 - 0.020 = 0.010.
  // step = data 0.001 + compute 0.03 + exposed 0.01 + optimizer 0.001 = 0.042.
  const StepResult r = simulate_step(three_buckets(true), 2, linear_pair(), Algorithm::kRing);
  ASSERT_EQ(r.timeline.size(), 3u);
  EXPECT_NEAR(r.timeline[1].start_s, 0.015, 1e-12);
  EXPECT_NEAR(r.timeline[2].start_s, 0.025, 1e-12);
  EXPECT_NEAR(r.comm_s, 0.02, 1e-12);
  EXPECT_NEAR(r.exposed_comm_s, 0.01, 1e-12);
  EXPECT_NEAR(r.step_s, 0.042, 1e-12);
  EXPECT_NEAR(r.samples_per_s, 20 / 0.042, 1e-9);
  // Without overlap all start at 0.02: 0.02 -> 0.025 -> 0.035 -> 0.04; exposed 0.02; step 0.052.
  const StepResult s = simulate_step(three_buckets(false), 2, linear_pair(), Algorithm::kRing);
  EXPECT_NEAR(s.exposed_comm_s, 0.02, 1e-12);
  EXPECT_NEAR(s.step_s, 0.052, 1e-12);
}

TEST(PerfStep, StrongAndWeakEfficiency) {
  // Weak: 1 rank 0.001 + 0.03 + 0.001 = 0.032 s per 10 samples; 2 ranks 0.042 (above):
  // efficiency (20/0.042) / (2 * 10/0.032) = 0.032/0.042.
  const auto weak =
      project_scaling(three_buckets(true), {1, 2}, linear_pair(), Algorithm::kRing, ScalingMode::kWeak, 0);
  EXPECT_NEAR(weak[0].efficiency, 1.0, 1e-12);
  EXPECT_NEAR(weak[1].efficiency, 0.032 / 0.042, 1e-12);
  // Strong, global batch 20: 1 rank batch 20: 0.002 + 0.06 + 0.001 = 0.063 s; 2 ranks batch 10:
  // 0.042 s; efficiency (20/0.042) / (2 * 20/0.063) = 0.063 / 0.084 = 0.75.
  const auto strong =
      project_scaling(three_buckets(true), {2}, linear_pair(), Algorithm::kRing, ScalingMode::kStrong, 20);
  EXPECT_NEAR(strong[0].batch_per_rank, 10, 1e-12);
  EXPECT_NEAR(strong[0].efficiency, 0.75, 1e-12);
  EXPECT_THROW(project_scaling(three_buckets(true), {64}, linear_pair(), Algorithm::kRing, ScalingMode::kStrong, 20),
               ConfigError);
}

TEST(PerfStep, StragglerIsTheExpectedMaximum) {
  // Steps of 1 and 3 s: two ranks draw (1,1) (1,3) (3,1) (3,3), maxima 1 3 3 3, mean 2.5;
  // the mean step is 2: factor 1.25. Three ranks: only (1,1,1) of 8 has maximum 1:
  // (1 + 7 * 3) / 8 = 2.75, factor 1.375. One rank, or one sample: 1.
  EXPECT_NEAR(straggler_factor({1, 3}, 2), 1.25, 1e-12);
  EXPECT_NEAR(straggler_factor({3, 1}, 3), 1.375, 1e-12);
  EXPECT_NEAR(straggler_factor({1, 3}, 1), 1.0, 1e-12);
  EXPECT_NEAR(straggler_factor({2}, 8), 1.0, 1e-12);
  EXPECT_NEAR(straggler_factor({1, 3}, 4096), 1.5, 1e-9);  // bounded by the largest step
  // In the step: compute 0.03 s becomes 0.0375 at 2 ranks, its excess reported as straggler_s.
  StepInputs in = three_buckets(true);
  in.step_compute_s = {1, 3};
  const StepResult r = simulate_step(in, 2, linear_pair(), Algorithm::kRing);
  EXPECT_NEAR(r.compute_s, 0.0375, 1e-12);
  EXPECT_NEAR(r.straggler_s, 0.0075, 1e-12);
}

TEST(PerfProfile, ChecksEveryKey) {
  auto doc = nlohmann::json::parse(R"({"model": "m", "batch_per_rank": 10, "compute_per_sample_s": 0.003,
    "optimizer_per_step_s": 0.001, "data_per_sample_s": 0.0001, "parameter_bytes": [600000, 100000],
    "reducer": {"overlap": false, "direct_min_bytes": 262144}})");
  const Profile p = profile_from_json(doc, "project: p.json");
  EXPECT_FALSE(p.overlap);
  EXPECT_EQ(step_inputs(p).reductions.size(), 2u);  // one bucket (700k < 1 MiB): direct 600k, flat 100k
  doc["compute_per_sample_s"] = "abc";
  try {
    profile_from_json(doc, "project: p.json");
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.message(), "project: p.json: key 'compute_per_sample_s': expected a positive number, found \"abc\"");
  }
  doc["compute_per_sample_s"] = 0.003;
  doc.erase("parameter_bytes");
  EXPECT_THROW(profile_from_json(doc, "p"), ConfigError);
}

TEST(PerfSystem, PresetsAndFiles) {
  ASSERT_GE(preset_systems().size(), 2u);
  for (const auto& s : preset_systems()) {
    EXPECT_NE(s.source.find("https://"), std::string::npos) << s.name;
    // The file form reads back to the same system.
    const System back = system_from_yaml(YAML::Load(system_to_yaml(s)), "x");
    EXPECT_EQ(back.topology.ranks_per_node, s.topology.ranks_per_node);
    EXPECT_DOUBLE_EQ(back.topology.network.beta_s_per_byte, s.topology.network.beta_s_per_byte);
  }
  const System s = system_from_yaml(YAML::Load("{ranks_per_node: 2, intra: {alpha_s: 1.0e-6, bandwidth_gb_per_s: 10}, "
                                               "network: {alpha_s: 2.0e-6, beta_s_per_byte: 1.0e-9}, algorithm: ring}"),
                                    "x");
  EXPECT_DOUBLE_EQ(s.topology.intra.beta_s_per_byte, 1e-10);
  EXPECT_EQ(s.algorithm, Algorithm::kRing);
  EXPECT_THROW(system_from_yaml(YAML::Load("{ranks_per_node: 2, intra: {alpha_s: 1}, network: {alpha_s: 1, "
                                           "beta_s_per_byte: 1}}"),
                                "x"),
               ConfigError);
  EXPECT_THROW(find_system("no-such-system", "x"), ConfigError);
}

TEST(PerfService, HandExample) {
  // Points (1, 2 ms), (8, 4 ms), (64, 20 ms): 500, 2000 and 3200 events/s at one row per
  // event: best batch 64, capacity 3200/s; a client at 0.5 s/event: 3200 * 0.5 = 1600 clients.
  const ServerCurve curve(parse_batch_times("8:0.004,1:0.002,64:0.02", "t"), "t");
  EXPECT_NEAR(curve.seconds(36), 0.004 + 28.0 / 56 * 0.016, 1e-15);
  EXPECT_NEAR(curve.seconds(128), 0.04, 1e-15);  // flat per row beyond 64
  EXPECT_NEAR(curve.seconds(0.5), 0.002, 1e-15);
  ServiceInputs in;
  in.client_s_per_event = 0.5;
  const ServerCapacity cap = server_capacity(curve, in);
  EXPECT_EQ(cap.best_batch, 64);
  EXPECT_NEAR(cap.events_per_s, 3200, 1e-9);
  EXPECT_NEAR(cap.clients_per_server, 1600, 1e-9);
  // 4000 clients offer 8000/s; 2 servers deliver 6400/s, saturated; 3 are needed.
  const ServicePoint p = project_service(cap, in, 4000, 2);
  EXPECT_NEAR(p.offered_events_per_s, 8000, 1e-9);
  EXPECT_NEAR(p.delivered_events_per_s, 6400, 1e-9);
  EXPECT_TRUE(p.saturated);
  EXPECT_EQ(p.servers_needed, 3);
  const ServicePoint exact = project_service(cap, in, 1600, 1);
  EXPECT_FALSE(exact.saturated);
  EXPECT_NEAR(exact.utilisation, 1.0, 1e-12);
  EXPECT_EQ(exact.servers_needed, 1);
  // 16 rows per event: batch 16 (T = 0.004 + 8/56 * 0.016) gives 1 event per 6.2857 ms = 159/s;
  // batch 64 gives 4 events per 20 ms = 200/s.
  in.rows_per_event = 16;
  EXPECT_NEAR(server_capacity(curve, in).events_per_s, 200, 1e-9);
  // A request overhead of 0.1 ms at 1 row/event: 64 / (0.02 + 0.0064) = 2424.24/s.
  in.rows_per_event = 1;
  in.request_overhead_s = 1e-4;
  EXPECT_NEAR(server_capacity(curve, in).events_per_s, 64 / 0.0264, 1e-9);
  EXPECT_THROW(parse_batch_times("1:0.002,8", "t"), ConfigError);
  EXPECT_THROW(ServerCurve({{1, 0.002}, {1, 0.003}}, "t"), ConfigError);
}

}  // namespace
}  // namespace hpcml::perf
