// Every collective, written once and run on whichever backend the binary gets:
// "local" in the unit tier (one process), "mpi" in the mpi tier (2 and 3 ranks,
// shared memory and TCP). Each result is checked against a reference computed
// locally from every rank's seeded input.
#include <gtest/gtest.h>

#include <thread>

#include "collectives/collectives.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"
#include "tests/support/tensor_testing.hpp"

namespace {

using hpcml::collectives::AllgatherOptions;
using hpcml::collectives::AllreduceOptions;
using hpcml::collectives::BackendPtr;
using hpcml::collectives::BroadcastOptions;
using hpcml::collectives::ReduceOp;
using hpcml::collectives::ReduceScatterOptions;
using hpcml::testing::seeded_input;
using hpcml::testing::tensor_equal;

constexpr uint64_t kSeed = 20261123;

BackendPtr world() { return hpcml::testing::test_world(); }

// Reference reduction of every rank's input, in float64.
at::Tensor reference(ReduceOp op, c10::ScalarType dtype, int64_t numel, int size) {
  at::Tensor acc;
  for (int r = 0; r < size; ++r) {
    const at::Tensor x = seeded_input(kSeed, r, numel, dtype).to(at::kDouble);
    if (!acc.defined()) acc = x.clone();
    else if (op == ReduceOp::kMin) acc = at::minimum(acc, x);
    else if (op == ReduceOp::kMax) acc = at::maximum(acc, x);
    else acc += x;
  }
  if (op == ReduceOp::kAvg) acc /= size;
  return acc;
}

// Checks a reduction result against the reference, within the rounding the dtype allows:
// exact for integers and for min/max; for sums, the classic bound on recursive
// summation, size * u * sum_i |x_i|, plus one rounding of the average.
::testing::AssertionResult reduction_matches(const at::Tensor& result, ReduceOp op, int64_t numel, int size,
                                             int64_t offset = 0) {
  const auto dtype = result.scalar_type();
  const at::Tensor expected = reference(op, dtype, numel, size).narrow(0, offset, result.numel());
  if (!c10::isFloatingType(dtype) || op == ReduceOp::kMin || op == ReduceOp::kMax) {
    return tensor_equal(result, expected.to(dtype));
  }
  at::Tensor abs_sum = at::zeros({numel}, at::kDouble);
  for (int r = 0; r < size; ++r) abs_sum += seeded_input(kSeed, r, numel, dtype).to(at::kDouble).abs();
  const double u = hpcml::testing::unit_roundoff(dtype);
  // Per element: the bound of element i depends only on the inputs at i.
  at::Tensor bound = size * u * abs_sum.narrow(0, offset, result.numel());
  if (op == ReduceOp::kAvg) bound = bound / size + u * expected.abs();
  const at::Tensor excess = (result.to(at::kDouble) - expected).abs() - bound;
  const int64_t worst = excess.argmax().item<int64_t>();
  if (excess[worst].item<double>() > 0) {
    return ::testing::AssertionFailure() << hpcml::rank_tag() << " element " << worst << ": "
                                         << result[worst].item<double>() << " vs reference "
                                         << expected[worst].item<double>() << ", beyond the rounding bound "
                                         << bound[worst].item<double>();
  }
  return ::testing::AssertionSuccess();
}

std::string dtype_name(c10::ScalarType dtype) { return c10::toString(dtype); }

// ---- allreduce: every (dtype, op), sync and async, small and large --------------

using AllreduceParam = std::tuple<c10::ScalarType, ReduceOp, bool, int64_t>;
class AllreduceTest : public ::testing::TestWithParam<AllreduceParam> {};

TEST_P(AllreduceTest, MatchesReference) {
  const auto [dtype, op, async, numel] = GetParam();
  auto b = world();
  at::Tensor t = seeded_input(kSeed, b->rank(), numel, dtype);
  AllreduceOptions options;
  options.op = op;
  options.async = async;
  if (!hpcml::collectives::is_op_defined(op, dtype)) {
    try {
      b->allreduce(t, options);
      FAIL() << "avg on " << dtype << " did not throw";
    } catch (const hpcml::CommError& e) {
      EXPECT_NE(e.message().find("op avg is not defined for integer dtype " + dtype_name(dtype)), std::string::npos)
          << e.message();
      EXPECT_NE(e.message().find("[rank " + std::to_string(b->rank())), std::string::npos) << e.message();
    }
    return;
  }
  b->allreduce(t, options)->wait();
  EXPECT_TRUE(reduction_matches(t, op, numel, b->size()));
}

INSTANTIATE_TEST_SUITE_P(
    EveryDtypeAndOp, AllreduceTest,
    ::testing::Combine(::testing::ValuesIn(hpcml::collectives::supported_dtypes()),
                       ::testing::ValuesIn(hpcml::collectives::all_reduce_ops()), ::testing::Bool(),
                       ::testing::Values<int64_t>(7, 100003)),
    [](const ::testing::TestParamInfo<AllreduceParam>& info) {
      return dtype_name(std::get<0>(info.param)) + "_" + hpcml::collectives::to_string(std::get<1>(info.param)) +
             (std::get<2>(info.param) ? "_async_" : "_sync_") + std::to_string(std::get<3>(info.param));
    });

// ---- reduce_scatter: every (dtype, op) ----------------------------------------

using ReduceScatterParam = std::tuple<c10::ScalarType, ReduceOp, bool>;
class ReduceScatterTest : public ::testing::TestWithParam<ReduceScatterParam> {};

TEST_P(ReduceScatterTest, LeavesThisRanksBlockOfTheReduction) {
  const auto [dtype, op, async] = GetParam();
  if (!hpcml::collectives::is_op_defined(op, dtype)) GTEST_SKIP() << "avg on integers is rejected (see allreduce)";
  auto b = world();
  const int64_t block = 1001;
  const at::Tensor input = seeded_input(kSeed, b->rank(), block * b->size(), dtype);
  at::Tensor output = at::empty({block}, input.options());
  ReduceScatterOptions options;
  options.op = op;
  options.async = async;
  b->reduce_scatter(output, input, options)->wait();
  EXPECT_TRUE(reduction_matches(output, op, block * b->size(), b->size(), block * b->rank()));
}

INSTANTIATE_TEST_SUITE_P(EveryDtypeAndOp, ReduceScatterTest,
                         ::testing::Combine(::testing::ValuesIn(hpcml::collectives::supported_dtypes()),
                                            ::testing::ValuesIn(hpcml::collectives::all_reduce_ops()),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<ReduceScatterParam>& info) {
                           return dtype_name(std::get<0>(info.param)) + "_" +
                                  hpcml::collectives::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) ? "_async" : "_sync");
                         });

// ---- broadcast and allgather: every dtype ---------------------------------------

using DtypeParam = std::tuple<c10::ScalarType, bool>;
class DtypeTest : public ::testing::TestWithParam<DtypeParam> {};

TEST_P(DtypeTest, BroadcastFromEveryRoot) {
  const auto [dtype, async] = GetParam();
  auto b = world();
  for (int root = 0; root < b->size(); ++root) {
    at::Tensor t = seeded_input(kSeed, b->rank(), 513, dtype);
    BroadcastOptions options;
    options.root = root;
    options.async = async;
    b->broadcast(t, options)->wait();
    EXPECT_TRUE(tensor_equal(t, seeded_input(kSeed, root, 513, dtype))) << "root " << root;
  }
}

TEST_P(DtypeTest, AllgatherEqualSizes) {
  const auto [dtype, async] = GetParam();
  auto b = world();
  const at::Tensor input = seeded_input(kSeed, b->rank(), 12, dtype).view({4, 3});
  std::vector<at::Tensor> outputs;
  for (int r = 0; r < b->size(); ++r) outputs.push_back(at::empty({4, 3}, input.options()));
  AllgatherOptions options;
  options.async = async;
  b->allgather(outputs, input, options)->wait();
  for (int r = 0; r < b->size(); ++r) {
    EXPECT_TRUE(tensor_equal(outputs[r], seeded_input(kSeed, r, 12, dtype).view({4, 3}))) << "from rank " << r;
  }
}

TEST_P(DtypeTest, AllgatherVaryingSizes) {
  const auto [dtype, async] = GetParam();
  auto b = world();
  // Rank r contributes r + 1 rows: sizes differ between ranks.
  auto rows_of = [&](int r) { return seeded_input(kSeed, r, 3 * (r + 1), dtype).view({r + 1, 3}); };
  AllgatherOptions options;
  options.async = async;
  const auto gathered = b->allgather_varying(rows_of(b->rank()), options);
  ASSERT_EQ(static_cast<int>(gathered.size()), b->size());
  for (int r = 0; r < b->size(); ++r) EXPECT_TRUE(tensor_equal(gathered[r], rows_of(r))) << "from rank " << r;
}

INSTANTIATE_TEST_SUITE_P(EveryDtype, DtypeTest,
                         ::testing::Combine(::testing::ValuesIn(hpcml::collectives::supported_dtypes()),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<DtypeParam>& info) {
                           return dtype_name(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_async" : "_sync");
                         });

// ---- barrier, ordering, split --------------------------------------------------

TEST(Collectives, BarrierWaitsForTheLastRank) {
  auto b = world();
  if (b->size() < 2) GTEST_SKIP() << "needs 2 ranks";
  b->barrier()->wait();
  const auto start = std::chrono::steady_clock::now();
  if (b->rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  b->barrier()->wait();
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(waited, 0.25) << "rank " << b->rank() << " left the barrier before rank 0 entered it";
}

TEST(Collectives, AsyncThenSyncKeepOneOrderOnEveryRank) {
  auto b = world();
  std::vector<at::Tensor> tensors;
  std::vector<hpcml::collectives::WorkPtr> works;
  AllreduceOptions async;
  async.async = true;
  for (int i = 0; i < 4; ++i) {
    tensors.push_back(at::full({1000}, static_cast<double>(b->rank() + i), at::kDouble));
    works.push_back(b->allreduce(tensors.back(), async));
  }
  at::Tensor sync = at::full({10}, 1.0, at::kDouble);
  b->allreduce(sync);  // must wait for the queued ones
  for (auto& w : works) {
    EXPECT_TRUE(w->is_completed());
    w->wait();
  }
  const double n = b->size();
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(tensors[i][0].item<double>(), n * (n - 1) / 2 + n * i);
  EXPECT_DOUBLE_EQ(sync[0].item<double>(), n);
}

TEST(Collectives, SplitByParityReversesOrderByKey) {
  auto b = world();
  auto sub = b->split(/*color=*/b->rank() % 2, /*key=*/-b->rank(), "parity");
  ASSERT_NE(sub, nullptr);
  std::vector<int> members;
  for (int r = 0; r < b->size(); ++r)
    if (r % 2 == b->rank() % 2) members.push_back(r);
  EXPECT_EQ(sub->size(), static_cast<int>(members.size()));
  // key = -rank: the highest world rank of the group is its rank 0.
  const int expected_rank = static_cast<int>(members.end() - std::find(members.begin(), members.end(), b->rank())) - 1;
  EXPECT_EQ(sub->rank(), expected_rank);
  EXPECT_EQ(sub->comm_name(), "world/parity");
  at::Tensor t = at::full({3}, static_cast<int64_t>(b->rank()), at::kLong);
  sub->allreduce(t);
  int64_t sum = 0;
  for (int r : members) sum += r;
  EXPECT_EQ(t[0].item<int64_t>(), sum);
  EXPECT_EQ(b->split(/*color=*/-1, 0, "none"), nullptr);
}

// ---- bad requests: clear errors, raised before any communication ----------------

template <typename Fn>
std::string comm_error(Fn&& fn) {
  try {
    fn();
  } catch (const hpcml::CommError& e) {
    return e.message();
  }
  return "";
}

TEST(CollectivesErrors, NameRankOpAndWhatWasExpected) {
  auto b = world();
  const std::string prefix = "[rank " + std::to_string(b->rank()) + "/" + std::to_string(b->size()) + "] ";
  at::Tensor flags = at::ones({4}, at::kBool);
  EXPECT_EQ(comm_error([&] { b->allreduce(flags); }),
            prefix + "allreduce on communicator 'world' (backend " + b->name() +
                "): tensor has dtype Bool; backend " + b->name() +
                " supports Float, Double, Int, Long, BFloat16, Half, Byte");
  at::Tensor strided = at::zeros({4, 4}).t();
  EXPECT_NE(comm_error([&] { b->allreduce(strided); }).find("tensor (shape [4, 4]) is not contiguous"),
            std::string::npos);
  at::Tensor t = at::zeros({4});
  BroadcastOptions bad_root;
  bad_root.root = b->size();
  EXPECT_NE(comm_error([&] { b->broadcast(t, bad_root); })
                .find("root " + std::to_string(b->size()) + " is not a rank of this communicator"),
            std::string::npos);
  std::vector<at::Tensor> too_few;
  EXPECT_NE(comm_error([&] { b->allgather(too_few, t); })
                .find("expected " + std::to_string(b->size()) + " output tensors (one per rank), found 0"),
            std::string::npos);
  at::Tensor out = at::zeros({3});
  EXPECT_NE(comm_error([&] { b->reduce_scatter(out, t); }).find("input has 4 elements, expected size() * output.numel()"),
            std::string::npos);
}

}  // namespace
