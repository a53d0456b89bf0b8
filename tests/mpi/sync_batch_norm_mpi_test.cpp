// SyncBatchNorm (models::BatchNorm synchronised over a group) at 2 and 3 ranks.
// The reference is computed on every rank locally, without communication: plain
// batch norm over the whole global batch. Per-rank batch sizes differ, zero included.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>

#include "collectives/collectives.hpp"
#include "models/batch_norm.hpp"
#include "tests/support/tensor_testing.hpp"

namespace {

using hpcml::models::BatchNorm;

hpcml::collectives::BackendPtr world() { return hpcml::testing::test_world(); }

// Same weights on every rank: not the identity, so the affine part is exercised.
void set_affine(BatchNorm& bn, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::detail::createCPUGenerator(seed);
  bn->weight.copy_(torch::rand({bn->weight.numel()}, gen) + 0.5);
  bn->bias.copy_(torch::randn({bn->bias.numel()}, gen));
}

// Rank r holds rows [offset_r, offset_r + rows[r]) of each global batch; the loss
// is sum(y * g) for a fixed random g, so every output row carries its own gradient.
void expect_matches_global_batch_norm(const std::vector<int64_t>& rows, const std::vector<int64_t>& trailing) {
  auto b = world();
  const int rank = b->rank();
  auto group = b->split(0, rank, "sync_batch_norm");
  const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t{0});
  const int64_t offset = std::accumulate(rows.begin(), rows.begin() + rank, int64_t{0});
  const int64_t c = trailing[0];
  BatchNorm synced(c), reference(c);
  set_affine(synced, 5);
  set_affine(reference, 5);
  synced->synchronize(group);
  std::vector<int64_t> shape{total};
  shape.insert(shape.end(), trailing.begin(), trailing.end());
  for (int step = 0; step < 2; ++step) {  // two steps: the running statistics' momentum
    auto gen = at::detail::createCPUGenerator(100 + step);
    const auto x = torch::randn(shape, gen) * 3 + 1;
    const auto g = torch::randn(shape, gen);
    for (auto* bn : {&synced, &reference}) {
      (*bn)->zero_grad();
    }
    auto x_local = x.narrow(0, offset, rows[rank]).clone().requires_grad_(true);
    auto y_local = synced->forward(x_local);
    (y_local * g.narrow(0, offset, rows[rank])).sum().backward();
    auto x_all = x.clone().requires_grad_(true);
    auto y_all = reference->forward(x_all);
    (y_all * g).sum().backward();

    const std::string where = "step " + std::to_string(step) + ", rank " + std::to_string(rank);
    EXPECT_TRUE(hpcml::testing::tensor_near(y_local, y_all.narrow(0, offset, rows[rank]), 1e-5, 1e-5))
        << "output, " << where;
    EXPECT_TRUE(hpcml::testing::tensor_near(x_local.grad(), x_all.grad().narrow(0, offset, rows[rank]), 1e-4, 1e-5))
        << "input gradient, " << where;
    // Parameter gradients are each rank's share: their sum over ranks is the reference's
    // (the gradient reducer adds them up in training).
    for (auto [mine, theirs] : {std::pair{synced->weight, reference->weight}, std::pair{synced->bias, reference->bias}}) {
      auto sum = mine.grad().clone();
      b->allreduce(sum);
      EXPECT_TRUE(hpcml::testing::tensor_near(sum, theirs.grad(), 1e-4, 1e-4)) << "parameter gradient, " << where;
    }
    EXPECT_TRUE(hpcml::testing::tensor_near(synced->running_mean, reference->running_mean, 1e-5, 1e-6))
        << "running mean, " << where;
    EXPECT_TRUE(hpcml::testing::tensor_near(synced->running_var, reference->running_var, 1e-5, 1e-6))
        << "running variance (unbiased, global count), " << where;
  }
}

std::vector<int64_t> uneven(int n, int64_t first) {
  std::vector<int64_t> rows{first};
  for (int r = 1; r < n; ++r) rows.push_back(2 + 3 * r);  // 5, 8, ...
  return rows;
}

TEST(SyncBatchNorm, MatchesBatchNormOnTheGlobalBatchWithUnevenRanks) {
  const int n = world()->size();
  expect_matches_global_batch_norm(uneven(n, 3), {4});        // (N, C): BatchNorm1d
  expect_matches_global_batch_norm(uneven(n, 2), {3, 5});     // (N, C, L): BatchNorm1d over a length
  expect_matches_global_batch_norm(uneven(n, 1), {2, 3, 4});  // (N, C, H, W): BatchNorm2d
}

TEST(SyncBatchNorm, ARankWithNoRowsStillTakesPart) {
  expect_matches_global_batch_norm(uneven(world()->size(), 0), {4});
}

// Not synchronised, it is torch's BatchNorm1d: same output, gradients and statistics.
TEST(SyncBatchNorm, UnsynchronisedIsTorchBatchNormBitForBit) {
  BatchNorm ours(6);
  torch::nn::BatchNorm1d torchs(6);
  set_affine(ours, 9);
  {
    torch::NoGradGuard no_grad;
    torchs->weight.copy_(ours->weight);
    torchs->bias.copy_(ours->bias);
  }
  auto x = torch::randn({10, 6, 3}, at::detail::createCPUGenerator(4));
  auto a = x.clone().requires_grad_(true), t = x.clone().requires_grad_(true);
  auto ya = ours->forward(a), yt = torchs->forward(t);
  ya.pow(2).sum().backward();
  yt.pow(2).sum().backward();
  EXPECT_TRUE(hpcml::testing::tensor_equal(ya, yt));
  EXPECT_TRUE(hpcml::testing::tensor_equal(a.grad(), t.grad()));
  EXPECT_TRUE(hpcml::testing::tensor_equal(ours->weight.grad(), torchs->weight.grad()));
  EXPECT_TRUE(hpcml::testing::tensor_equal(ours->running_var, torchs->running_var));
  EXPECT_EQ(ours->num_batches_tracked.item<int64_t>(), torchs->num_batches_tracked.item<int64_t>());
  // Same state_dict names, in the same order.
  std::vector<std::string> names_ours, names_torch;
  for (const auto& item : ours->named_parameters()) names_ours.push_back(item.key());
  for (const auto& item : ours->named_buffers()) names_ours.push_back(item.key());
  for (const auto& item : torchs->named_parameters()) names_torch.push_back(item.key());
  for (const auto& item : torchs->named_buffers()) names_torch.push_back(item.key());
  EXPECT_EQ(names_ours, names_torch);
}

// Eval mode normalises with the running statistics and never communicates: one rank
// alone may evaluate (a deadlock here would end the job at the collective deadline).
TEST(SyncBatchNorm, EvalModeDoesNotCommunicate) {
  auto b = world();
  BatchNorm bn(4);
  bn->synchronize(b->split(0, b->rank(), "sync_batch_norm"));
  bn->eval();
  if (b->rank() == 0) {
    auto x = torch::randn({5, 4});
    auto expected = (x - bn->running_mean) / torch::sqrt(bn->running_var + 1e-5) * bn->weight + bn->bias;
    EXPECT_TRUE(hpcml::testing::tensor_near(bn->forward(x), expected, 1e-6, 1e-6));
  }
  b->barrier();
}

}  // namespace
