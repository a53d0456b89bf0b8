// The shared-memory reduction (collectives/detail/node_reduction) without MPI: N
// threads of one process play N ranks over one segment. The expectation is the
// definition, computed here with ATen: every element summed over ranks in rank order
// in float32, times the scale (16-bit wires: then rounded once to the wire dtype by
// ATen's conversion, and widened back). Covers the specialised kernels (2, 3, 4 ranks) and the
// general one (5), buckets of several chunks with odd sizes, 16-bit wires, ranks
// that publish late, and several steps over the same segment.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "collectives/detail/node_reduction.hpp"
#include "core/error.hpp"

namespace {

using hpcml::collectives::NodeSharedMemory;
using hpcml::collectives::detail::NodeReduction;

std::shared_ptr<NodeSharedMemory> segment(size_t bytes) {
  char name[64];
  std::string error;
  void* base = hpcml::collectives::detail::create_shared(name, bytes, &error);
  EXPECT_NE(base, nullptr) << error;
  shm_unlink(name);
  return std::make_shared<NodeSharedMemory>(base, bytes);
}

// Rank r's gradient at step s: distinct per rank, element and step; exact in bf16.
at::Tensor gradient(int rank, int step, int64_t total, at::ScalarType wire) {
  auto gen = at::detail::createCPUGenerator(1000 * step + rank);
  return at::randn({total}, gen).to(wire);
}

void expect_sums(int n, at::ScalarType wire) {
  const std::vector<int64_t> buckets{3, 40000, 17, 16384};  // chunks of 16384: 1 + 3 + 1 + 1
  int64_t total = 0;
  for (auto b : buckets) total += b;
  auto memory = segment(NodeReduction::bytes_needed(n, buckets, wire));
  const float scale = 1.0f / static_cast<float>(n);
  std::vector<at::Tensor> results(n);
  std::vector<std::vector<int64_t>> summed_by(n);  // per rank, per step: chunks-worth of buckets summed
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] {
      NodeReduction node(memory, r, n, buckets, wire);
      for (int step = 0; step < 3; ++step) {
        node.begin_step();
        // The last rank is late: the others must wait for it, and sum what it published.
        if (r == n - 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        node.slot(0, total).copy_(gradient(r, step, total, wire));
        for (int b = static_cast<int>(buckets.size()) - 1; b >= 0; --b) node.publish(b);
        std::vector<NodeReduction::BucketSpan> spans;
        at::Tensor result;
        std::vector<int> delivered;
        if (wire == at::kFloat) {
          node.reduce(scale, "test", std::chrono::milliseconds(30000), &spans);
          result = node.result(0, total).clone();
        } else {
          result = at::full({total}, std::nanf(""));
          node.reduce(scale, "test", std::chrono::milliseconds(30000), &spans, [&](int b) {
            delivered.push_back(b);
            int64_t begin = 0;
            for (int q = 0; q < b; ++q) begin += buckets[q];
            node.widen_result(begin, buckets[b], result.data_ptr<float>() + begin);
          });
          std::sort(delivered.begin(), delivered.end());
          EXPECT_EQ(delivered, (std::vector<int>{0, 1, 2, 3})) << "every bucket delivered once";
        }
        // Reference: rank order, float32, then the scale.
        at::Tensor expected = gradient(0, step, total, wire).to(at::kFloat);
        for (int q = 1; q < n; ++q) expected = expected + gradient(q, step, total, wire).to(at::kFloat);
        expected = expected * scale;
        if (wire != at::kFloat) expected = expected.to(wire).to(at::kFloat);
        EXPECT_TRUE(at::equal(result, expected)) << n << " ranks, " << c10::toString(wire) << ", rank " << r
                                                 << ", step " << step << ": max difference "
                                                 << (result - expected).abs().max().item<float>();
      }
    });
  }
  for (auto& t : ranks) t.join();
}

TEST(NodeReduction, SumsExactlyInRankOrderForTwoToFiveRanks) {
  for (int n : {2, 3, 4, 5}) expect_sums(n, at::kFloat);
}

TEST(NodeReduction, SixteenBitWiresSumInFloat32) {
  for (int n : {2, 5}) {
    expect_sums(n, at::kBFloat16);
    expect_sums(n, at::kHalf);
  }
}

TEST(NodeReduction, TooSmallASegmentIsAnError) {
  auto memory = segment(4096);
  EXPECT_THROW(NodeReduction(memory, 0, 2, std::vector<int64_t>{1 << 20}, at::kFloat), hpcml::Error);
}

}  // namespace
