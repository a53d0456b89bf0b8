// GradientReducer at 2 and 3 ranks. The reference for every result is computed on
// each rank locally, without communication: the same model trained on the whole
// global batch by one process, or every rank's local gradients recomputed here.
//
// Equivalence conditions (stated by the issue, held here): a mean-reduced loss, no
// BatchNorm or dropout, and rank r takes the r-th slice of each global batch.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <thread>

#include "collectives/collectives.hpp"
#include "core/error.hpp"
#include "core/trace.hpp"
#include "tests/support/tensor_testing.hpp"

namespace {

using hpcml::collectives::GradCompression;
using hpcml::collectives::GradientReducer;
using hpcml::collectives::ReducerOptions;
using hpcml::collectives::Transport;

hpcml::collectives::BackendPtr world() { return hpcml::testing::test_world(); }

torch::nn::Sequential make_mlp(int64_t in = 8, int64_t hidden = 16, int64_t out = 4, uint64_t seed = 7) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(in, hidden), torch::nn::ReLU(), torch::nn::Linear(hidden, hidden),
                               torch::nn::ReLU(), torch::nn::Linear(hidden, out));
}

// Global batch `step` of `rows` samples, identical on every rank.
std::pair<torch::Tensor, torch::Tensor> global_batch(int step, int64_t rows, int64_t in = 8, int64_t classes = 4) {
  auto gen = at::detail::createCPUGenerator(1000 + step);
  return {torch::randn({rows, in}, gen), torch::randint(0, classes, {rows}, gen)};
}

// Deep copy of a module's parameters into another of the same structure.
void copy_parameters(const torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard no_grad;
  auto src = from.parameters();
  auto dst = to.parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
}

struct TrainSpec {
  ReducerOptions options;
  bool explicit_finish = false;  // loss.backward() + finish() instead of reducer.backward()
  int steps = 20;
  int64_t per_rank = 5;
};

// Trains data-parallel and on one process (the reference); compares the parameters.
void expect_equivalent_to_one_rank_via(const TrainSpec& spec) {
  auto b = world();
  const int n = b->size();
  auto model = make_mlp();
  auto reference = make_mlp();
  copy_parameters(*model, *reference);
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, spec.options);
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
  torch::optim::SGD ref_opt(reference->parameters(), torch::optim::SGDOptions(0.1));
  for (int step = 0; step < spec.steps; ++step) {
    auto [x, y] = global_batch(step, spec.per_rank * n);
    reducer.zero_grad();
    auto loss = torch::nll_loss(torch::log_softmax(model->forward(x.narrow(0, b->rank() * spec.per_rank, spec.per_rank)), 1),
                                y.narrow(0, b->rank() * spec.per_rank, spec.per_rank));
    if (spec.explicit_finish) {
      loss.backward();
      reducer.finish();
    } else {
      reducer.backward(loss);
    }
    opt.step();

    ref_opt.zero_grad();
    torch::nll_loss(torch::log_softmax(reference->forward(x), 1), y).backward();
    ref_opt.step();
  }
  auto params = model->named_parameters();
  auto ref_params = reference->named_parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(hpcml::testing::tensor_near(params[i].value(), ref_params[i].value(), 1e-5, 1e-7))
        << "parameter " << params[i].key() << " (transport " << to_string(reducer.transport()) << ")";
  }
}

// Both transports: the MPI allreduce and the node's shared memory (all test ranks
// share this node, so the latter is always available here).
void expect_equivalent_to_one_rank(TrainSpec spec) {
  for (auto transport : {Transport::kMpi, Transport::kSharedMemory}) {
    spec.options.transport = transport;
    expect_equivalent_to_one_rank_via(spec);
  }
}

TEST(GradientReducer, EquivalentToOneRankWithOverlap) {
  TrainSpec spec;
  spec.options.overlap = hpcml::collectives::Overlap::kAlways;
  expect_equivalent_to_one_rank(spec);
}

TEST(GradientReducer, EquivalentToOneRankWithoutOverlap) {
  TrainSpec spec;
  spec.options.overlap = hpcml::collectives::Overlap::kNever;
  expect_equivalent_to_one_rank(spec);
}

TEST(GradientReducer, EquivalentWithTinyBucketsAndExplicitFinish) {
  TrainSpec spec;
  spec.options.first_bucket_bytes = 64;  // one parameter per bucket, several buckets
  spec.options.bucket_cap_bytes = 600;
  spec.explicit_finish = true;
  expect_equivalent_to_one_rank(spec);
}

TEST(GradientReducer, EquivalentWithEveryGradientReducedInPlace) {
  TrainSpec spec;
  spec.options.direct_min_bytes = 0;  // no copies into buckets at all
  expect_equivalent_to_one_rank(spec);
}

TEST(GradientReducer, EquivalentWithMixedDirectAndBucketedGradients) {
  TrainSpec spec;
  spec.options.direct_min_bytes = 500;  // the 16x16 and 16x8 weights in place, biases bucketed
  spec.options.first_bucket_bytes = 300;
  spec.options.bucket_cap_bytes = 700;
  spec.options.overlap = hpcml::collectives::Overlap::kAlways;
  expect_equivalent_to_one_rank(spec);
}

TEST(GradientReducer, BucketsFollowReverseRegistrationOrder) {
  auto model = make_mlp(8, 16, 4);
  ReducerOptions options;
  // A bucket takes parameters (last layer first) until the next one would push it
  // past its cap: 4.bias (16 B) fits 100 B, 4.weight (256 B) does not.
  options.first_bucket_bytes = 100;
  options.bucket_cap_bytes = 1200;
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, world(), options);
  const auto layout = reducer.bucket_layout();
  ASSERT_GE(layout.size(), 2u);
  EXPECT_EQ(layout[0], (std::vector<std::string>{"4.bias"}));
  // 4.weight 256 + 2.bias 64 + 2.weight 1024 > 1200: the next bucket closes before 2.weight.
  EXPECT_EQ(layout[1], (std::vector<std::string>{"4.weight", "2.bias"}));
  EXPECT_EQ(layout.back().back(), "0.weight");
}

// Three micro-batches of global batch rows, per_rank each: the first two inside
// no_sync (`after_no_sync` runs after each), the third synchronised; `reference`
// accumulates the same micro-batches' full global batches on this process.
void run_micro_batches(torch::nn::Sequential& model, torch::nn::Sequential& reference, GradientReducer& reducer,
                       const std::function<void()>& after_no_sync = [] {}) {
  auto b = world();
  const int64_t per_rank = 3;
  reducer.zero_grad();
  for (int micro = 0; micro < 3; ++micro) {
    auto [x, y] = global_batch(micro, per_rank * b->size());
    auto loss = torch::nll_loss(torch::log_softmax(model->forward(x.narrow(0, b->rank() * per_rank, per_rank)), 1),
                                y.narrow(0, b->rank() * per_rank, per_rank));
    if (micro < 2) {
      auto guard = reducer.no_sync();
      reducer.backward(loss);
      after_no_sync();
    } else {
      reducer.backward(loss);
    }
    torch::nll_loss(torch::log_softmax(reference->forward(x), 1), y).backward();
  }
}

TEST(GradientReducer, NoSyncAccumulatesMicroBatches) {
  for (auto transport : {Transport::kMpi, Transport::kSharedMemory}) {
    auto model = make_mlp();
    auto reference = make_mlp();
    copy_parameters(*model, *reference);
    ReducerOptions options;
    options.transport = transport;
    GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, world(), options);
    run_micro_batches(model, reference, reducer);
    auto params = model->parameters();
    auto ref_params = reference->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(hpcml::testing::tensor_near(params[i].grad(), ref_params[i].grad(), 1e-5, 1e-7))
          << "parameter " << i << " via " << to_string(transport);
    }
  }
}

// With micro-batches, the bucket update runs once, at the synchronised backward, on
// the average of the accumulated gradients (reference: one process on every batch).
TEST(GradientReducer, BucketUpdateWaitsForTheSynchronisedBackward) {
  for (auto transport : {Transport::kMpi, Transport::kSharedMemory}) {
    auto model = make_mlp();
    auto reference = make_mlp();
    copy_parameters(*model, *reference);
    ReducerOptions options;
    options.transport = transport;
    options.first_bucket_bytes = 300;
    GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, world(), options);
    std::vector<torch::Tensor> seen(model->parameters().size());
    int calls = 0;
    reducer.set_bucket_update([&](const std::vector<hpcml::collectives::AveragedGrad>& bucket) {
      ++calls;
      for (const auto& g : bucket) {
        seen[g.index] = at::from_blob(const_cast<void*>(g.data), g.param->sizes(), at::dtype(g.dtype)).clone();
      }
    });
    run_micro_batches(model, reference, reducer,
                      [&] { EXPECT_EQ(calls, 0) << "bucket update inside no_sync, via " << to_string(transport); });
    EXPECT_EQ(calls, reducer.num_buckets()) << to_string(transport);
    auto ref_params = reference->parameters();
    for (size_t i = 0; i < seen.size(); ++i) {
      ASSERT_TRUE(seen[i].defined()) << "parameter " << i << " via " << to_string(transport);
      EXPECT_TRUE(hpcml::testing::tensor_near(seen[i], ref_params[i].grad(), 1e-5, 1e-7))
          << "parameter " << i << " via " << to_string(transport);
    }
  }
}

// A model with a layer its forward never uses.
struct WithUnused : torch::nn::Module {
  WithUnused() {
    torch::manual_seed(3);
    used = register_module("used", torch::nn::Linear(8, 4));
    unused = register_module("unused", torch::nn::Linear(8, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return used->forward(x); }
  torch::nn::Linear used{nullptr}, unused{nullptr};
};

TEST(GradientReducer, UnusedParameterIsAnErrorNamingIt) {
  auto model = std::make_shared<WithUnused>();
  auto reducer = std::make_unique<GradientReducer>(hpcml::collectives::named_parameters(*model),
                                                   std::vector<hpcml::collectives::NamedTensor>{}, world());
  auto [x, y] = global_batch(0, 4);
  auto loss = torch::nll_loss(torch::log_softmax(model->forward(x), 1), y);
  try {
    reducer->backward(loss);
    FAIL() << "no error for the unused parameter";
  } catch (const hpcml::Error& e) {
    EXPECT_NE(e.message().find("parameter 'unused.weight' got no gradient in this step"), std::string::npos)
        << e.message();
  }
  reducer.reset();  // waits for the buckets that did launch (same on every rank)

  for (auto transport : {Transport::kMpi, Transport::kSharedMemory}) {
    ReducerOptions allow;
    allow.allow_unused = true;
    allow.direct_min_bytes = 0;  // the unused gradient is reduced in place: it must be created
    allow.transport = transport;
    GradientReducer tolerant(hpcml::collectives::named_parameters(*model), {}, world(), allow);
    tolerant.zero_grad();
    tolerant.backward(torch::nll_loss(torch::log_softmax(model->forward(x), 1), y));
    EXPECT_TRUE(model->unused->weight.grad().defined()) << to_string(transport);
    EXPECT_EQ(model->unused->weight.grad().abs().sum().item<float>(), 0.0f) << to_string(transport);
    EXPECT_GT(model->used->weight.grad().abs().sum().item<float>(), 0.0f) << to_string(transport);
  }
}

TEST(GradientReducer, DifferentModelsOnRanksAreAnErrorNotAHang) {
  auto b = world();
  auto model = make_mlp(8, b->rank() == 0 ? 16 : 17, 4);
  try {
    GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b);
    FAIL() << "no error for mismatched models";
  } catch (const hpcml::Error& e) {
    EXPECT_NE(e.message().find("ranks hold different models"), std::string::npos) << e.message();
  }
}

TEST(GradientReducer, ConstructionBroadcastsRankZerosParameters) {
  auto b = world();
  auto model = make_mlp(8, 16, 4, /*seed=*/100 + b->rank());  // different on every rank
  auto rank0 = make_mlp(8, 16, 4, /*seed=*/100);
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b);
  auto params = model->parameters();
  auto expected = rank0->parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(hpcml::testing::tensor_equal(params[i], expected[i]));
}

TEST(GradientReducer, BuffersBroadcastOrPerRank) {
  auto b = world();
  for (auto policy : {hpcml::collectives::BufferPolicy::kBroadcast, hpcml::collectives::BufferPolicy::kPerRank}) {
    torch::manual_seed(1);
    torch::nn::Sequential model(torch::nn::Linear(8, 6), torch::nn::BatchNorm1d(6));
    ReducerOptions options;
    options.buffers = policy;
    GradientReducer reducer(hpcml::collectives::named_parameters(*model),
                            hpcml::collectives::named_buffers(*model), b, options);
    // Each rank sees different data, so its running statistics drift apart.
    auto x = torch::randn({10, 8}, at::detail::createCPUGenerator(50 + b->rank())) * (1 + b->rank());
    reducer.zero_grad();
    reducer.backward(model->forward(x).pow(2).mean());
    reducer.sync_buffers();
    auto mean = model->named_buffers()["1.running_mean"];
    auto gathered = b->allgather_varying(mean.unsqueeze(0));
    const bool all_equal = gathered[0].equal(gathered[b->size() - 1]);
    if (policy == hpcml::collectives::BufferPolicy::kBroadcast) {
      EXPECT_TRUE(all_equal) << "buffers differ after sync_buffers with kBroadcast";
    } else {
      EXPECT_FALSE(all_equal) << "buffers were synchronised with kPerRank";
    }
  }
}

// bf16 on the wire, float32 sums: within one bf16 rounding of the float32 sum of
// what each rank sent (each rank's gradient, scaled by 1/n, rounded to bf16).
TEST(GradientReducer, Bf16CompressionIsWithinOneRoundingOfFloat32Reference) {
  auto b = world();
  const int n = b->size();
  for (auto [compression, transport] :
       {std::pair{GradCompression::kBf16, Transport::kMpi}, std::pair{GradCompression::kFp16, Transport::kMpi},
        std::pair{GradCompression::kBf16, Transport::kSharedMemory},
        std::pair{GradCompression::kFp16, Transport::kSharedMemory}}) {
    const auto dtype16 = compression == GradCompression::kBf16 ? at::kBFloat16 : at::kHalf;
    auto model = make_mlp(8, 64, 4);
    ReducerOptions options;
    options.compression = compression;
    options.transport = transport;
    options.first_bucket_bytes = 1000;  // several buckets, odd sizes (padding)
    GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
    auto [x, y] = global_batch(0, 6 * n);
    reducer.zero_grad();
    reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x.narrow(0, 6 * b->rank(), 6)), 1),
                                     y.narrow(0, 6 * b->rank(), 6)));

    // Every rank's contribution, recomputed here.
    auto replica = make_mlp(8, 64, 4);
    copy_parameters(*model, *replica);
    std::vector<torch::Tensor> expected;
    for (auto& p : replica->parameters()) expected.push_back(torch::zeros_like(p, at::kDouble));
    for (int r = 0; r < n; ++r) {
      for (auto& p : replica->parameters()) p.mutable_grad().reset();
      torch::nll_loss(torch::log_softmax(replica->forward(x.narrow(0, 6 * r, 6)), 1), y.narrow(0, 6 * r, 6))
          .backward(torch::full({}, 1.0 / n));
      auto params = replica->parameters();
      for (size_t i = 0; i < params.size(); ++i) expected[i] += params[i].grad().to(dtype16).to(at::kDouble);
    }
    const double u = hpcml::testing::unit_roundoff(dtype16);
    auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      // One rounding of the float32 sum: |result - sum| <= u * |sum| (plus float32's own summation error).
      EXPECT_TRUE(hpcml::testing::tensor_near(params[i].grad(), expected[i], u, 1e-6 * u))
          << hpcml::collectives::to_string(compression) << " via " << to_string(transport) << ", parameter " << i;
    }
  }
}

// The bucket update (set_bucket_update) sees each bucket once, as soon as it is
// final, with exactly the averages the same reducer leaves in .grad() without it
// (the reference: an identical model and reducer without an update), for every
// transport and wire; with 16-bit shared memory it reads the 16-bit result area.
TEST(GradientReducer, BucketUpdateGetsEachBucketsAveragesOnce) {
  auto b = world();
  const int n = b->size();
  for (auto compression : {GradCompression::kNone, GradCompression::kBf16, GradCompression::kFp16}) {
    for (auto transport : {Transport::kMpi, Transport::kSharedMemory}) {
      ReducerOptions options;
      options.compression = compression;
      options.transport = transport;
      options.first_bucket_bytes = 300;  // several buckets
      options.bucket_cap_bytes = 700;
      const std::string what = std::string(hpcml::collectives::to_string(compression)) + " via " +
                               to_string(transport);
      auto [x, y] = global_batch(3, 5 * n);
      auto run = [&](torch::nn::Sequential& model, GradientReducer& reducer) {
        reducer.zero_grad();
        reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x.narrow(0, 5 * b->rank(), 5)), 1),
                                         y.narrow(0, 5 * b->rank(), 5)));
      };
      std::vector<torch::Tensor> reference;
      {
        auto model = make_mlp();
        GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
        run(model, reducer);
        for (auto& p : model->parameters()) reference.push_back(p.grad().clone());
      }
      auto model = make_mlp();
      GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
      std::vector<torch::Tensor> seen(reference.size());
      std::vector<std::vector<std::string>> calls;
      const auto names = hpcml::collectives::named_parameters(*model);
      reducer.set_bucket_update([&](const std::vector<hpcml::collectives::AveragedGrad>& bucket) {
        calls.emplace_back();
        for (const auto& g : bucket) {
          calls.back().push_back(names[g.index].first);
          EXPECT_TRUE(g.param->is_same(names[g.index].second)) << what;
          const auto held = at::from_blob(const_cast<void*>(g.data), g.param->sizes(), at::dtype(g.dtype));
          EXPECT_FALSE(seen[g.index].defined()) << what << ": parameter " << g.index << " updated twice";
          seen[g.index] = held.to(at::kFloat);  // a copy: `data` is valid only during the call
        }
      });
      run(model, reducer);
      const bool shared_16 = transport == Transport::kSharedMemory && compression != GradCompression::kNone;
      for (size_t i = 0; i < reference.size(); ++i) {
        ASSERT_TRUE(seen[i].defined()) << what << ": parameter " << i << " never updated";
        EXPECT_TRUE(hpcml::testing::tensor_equal(seen[i], reference[i])) << what << ", parameter " << i;
        EXPECT_EQ(model->parameters()[i].grad().defined(), !shared_16) << what << ", parameter " << i;
      }
      // One call per bucket (shared memory delivers buckets in the order they finish).
      auto layout = reducer.bucket_layout();
      std::sort(calls.begin(), calls.end());
      std::sort(layout.begin(), layout.end());
      EXPECT_EQ(calls, layout) << what;
    }
  }
}

// Shared parameters: each rank updates only its part of one node-shared copy. The
// reference: the same steps with every rank updating all of its own copy. The update
// is plain SGD written here (p -= lr * average on [begin, end)), so the test does
// not lean on launch/optim's kernels. Over MPI, sharing is declined.
TEST(GradientReducer, SharedParametersEachRankUpdatesItsPart) {
  auto b = world();
  const int n = b->size();
  auto sgd = [](const std::vector<hpcml::collectives::AveragedGrad>& bucket) {
    torch::NoGradGuard no_grad;
    for (const auto& g : bucket) {
      const auto numel = g.param->numel();
      const auto average = at::from_blob(const_cast<void*>(g.data), {numel}, at::dtype(g.dtype)).to(at::kFloat);
      g.param->detach().view({numel}).narrow(0, g.begin, g.end - g.begin).sub_(
          average.narrow(0, g.begin, g.end - g.begin) * 0.1);
    }
  };
  for (auto compression : {GradCompression::kNone, GradCompression::kBf16}) {
    for (auto transport : {Transport::kSharedMemory, Transport::kMpi}) {
      ReducerOptions options;
      options.compression = compression;
      options.transport = transport;
      options.first_bucket_bytes = 300;  // several buckets
      const std::string what = std::string(hpcml::collectives::to_string(compression)) + " via " +
                               to_string(transport);
      auto train = [&](bool share) {
        auto model = make_mlp(8, 40, 4);  // 40 x 40: parts cut on 16-float boundaries
        GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
        reducer.set_bucket_update(sgd, share);
        EXPECT_EQ(reducer.parameters_shared(), share && transport == Transport::kSharedMemory) << what;
        if (reducer.parameters_shared()) {
          EXPECT_NE(reducer.update_placement().find("1/" + std::to_string(n) + " of the node-shared"),
                    std::string::npos) << reducer.update_placement();
        }
        for (int step = 0; step < 5; ++step) {
          auto [x, y] = global_batch(step, 5 * n);
          reducer.zero_grad();
          reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x.narrow(0, 5 * b->rank(), 5)), 1),
                                           y.narrow(0, 5 * b->rank(), 5)));
        }
        std::vector<torch::Tensor> params;
        for (auto& p : model->parameters()) params.push_back(p.detach().clone());
        return params;
      };
      const auto reference = train(false);
      const auto shared = train(true);
      EXPECT_FALSE(hpcml::testing::tensor_equal(reference[0], make_mlp(8, 40, 4)->parameters()[0])) << "it moved";
      for (size_t i = 0; i < reference.size(); ++i) {
        EXPECT_TRUE(hpcml::testing::tensor_equal(shared[i], reference[i])) << what << ", parameter " << i;
      }
    }
  }
}

// Replacing a shared parameter's storage (set_data) would leave the other ranks'
// parts of it stale: the next update is an error naming the parameter, on every rank.
TEST(GradientReducer, SharedParameterReplacedIsAnErrorNamingIt) {
  auto b = world();
  auto model = make_mlp();
  ReducerOptions options;
  options.transport = Transport::kSharedMemory;
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
  reducer.set_bucket_update([](const std::vector<hpcml::collectives::AveragedGrad>&) {}, true);
  ASSERT_TRUE(reducer.parameters_shared());
  model->parameters()[2].set_data(model->parameters()[2].detach().clone());
  auto [x, y] = global_batch(0, 4);
  reducer.zero_grad();
  try {
    reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x), 1), y));
    ADD_FAILURE() << "expected an error";
  } catch (const hpcml::Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter '2.weight' no longer lives in the node-shared memory"),
              std::string::npos) << e.what();
  }
}

// Overlap is real: bucket 0 is ready and launched while backward still runs (every
// step, from the hooks), and its allreduce completes before backward ends, read from
// the trace's timestamps. Completion also waits on the peer rank, which a shared
// machine can deschedule for a step, so that claim needs one of eight steps; without
// overlap no step could show it.
TEST(GradientReducer, FirstBucketCompletesBeforeBackwardEnds) {
  auto b = world();
  if (b->size() > static_cast<int>(std::thread::hardware_concurrency())) {
    GTEST_SKIP() << "oversubscribed (" << b->size() << " ranks on " << std::thread::hardware_concurrency()
                 << " cores): timing claims need a core per rank";
  }
  torch::manual_seed(0);
  torch::nn::Sequential model;
  for (int i = 0; i < 6; ++i) {
    model->push_back(torch::nn::Linear(512, 512));
    model->push_back(torch::nn::ReLU());
  }
  model->push_back(torch::nn::Linear(512, 10));
  ReducerOptions always;
  always.overlap = hpcml::collectives::Overlap::kAlways;
  always.transport = Transport::kMpi;  // overlap by launching during backward is the MPI transport's
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, always);
  ASSERT_TRUE(reducer.overlapping());
  ASSERT_GT(reducer.num_buckets(), 1);
  hpcml::trace::enable(true);
  int overlapped_steps = 0;
  std::string gaps;
  for (int step = 0; step < 8; ++step) {
    hpcml::trace::clear();
    auto x = torch::randn({256, 512});
    reducer.zero_grad();
    reducer.backward(model->forward(x).pow(2).mean());
    int64_t backward_end = -1, bucket0_end = -1;
    for (const auto& e : hpcml::trace::events()) {
      if (e.name == "backward") backward_end = e.start_us + e.duration_us;
      if (e.name == "allreduce bucket 0") bucket0_end = e.start_us + e.duration_us;
    }
    ASSERT_GT(backward_end, 0);
    ASSERT_GT(bucket0_end, 0);
    const auto& stats = reducer.last_step();
    ASSERT_FALSE(stats.buckets.empty());
    EXPECT_LT(stats.buckets[0].ready_us, stats.backward_end_us)
        << "step " << step << ": bucket 0 became ready only after backward ended";
    if (bucket0_end < backward_end) ++overlapped_steps;
    gaps += " " + std::to_string(bucket0_end - backward_end);
  }
  hpcml::trace::enable(false);
  EXPECT_GE(overlapped_steps, 1) << "bucket 0 finished after backward ended in all 8 steps (us after:" << gaps
                                 << "): no overlap";
}

TEST(GradientReducer, TransportAutoTakesSharedMemoryOnOneNode) {
  auto model = make_mlp();
  GradientReducer automatic(hpcml::collectives::named_parameters(*model), {}, world());
  EXPECT_EQ(automatic.transport(), Transport::kSharedMemory) << automatic.transport_note();
  EXPECT_EQ(automatic.transport_note(), "");
  ReducerOptions mpi;
  mpi.transport = Transport::kMpi;
  GradientReducer forced(hpcml::collectives::named_parameters(*model), {}, world(), mpi);
  EXPECT_EQ(forced.transport(), Transport::kMpi);
}

// Gradients are views of shared memory after a reduction; they must stay readable
// (and unchanged) once the reducer, and its mapping, are gone.
TEST(GradientReducer, SharedMemoryGradientsOutliveTheReducer) {
  auto b = world();
  auto model = make_mlp();
  std::vector<torch::Tensor> copies;
  {
    ReducerOptions options;
    options.transport = Transport::kSharedMemory;
    GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
    auto [x, y] = global_batch(0, 4);
    reducer.zero_grad();
    reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x), 1), y));
    for (auto& p : model->parameters()) copies.push_back(p.grad().clone());
  }
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(hpcml::testing::tensor_equal(params[i].grad(), copies[i])) << "parameter " << i;
  }
}

// The shared-memory transport's overlap: a rank that has finished backward sums the
// buckets the others have published while they are still in backward. The last
// rank is made slow (it sleeps in its last gradient hook); every bucket-0 chunk
// must be summed by the other ranks, and before the slow rank's backward ends.
TEST(GradientReducer, IdleRankSumsPublishedBucketsWhileASlowRankComputes) {
  auto b = world();
  const int n = b->size();
  const bool slow = b->rank() == n - 1;
  auto model = make_mlp(64, 256, 10);
  auto first_weight = model->named_parameters()["0.weight"];  // its gradient comes last
  auto sleeper = hpcml::collectives::on_grad_ready(first_weight, [slow] {
    if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  });
  ReducerOptions options;
  options.transport = Transport::kSharedMemory;
  options.first_bucket_bytes = (10 * 256 + 10) * 4;  // bucket 0: exactly the last layer
  GradientReducer reducer(hpcml::collectives::named_parameters(*model), {}, b, options);
  ASSERT_EQ(reducer.bucket_layout()[0], (std::vector<std::string>{"4.bias", "4.weight"}));
  auto [x, y] = global_batch(0, 32, 64, 10);
  reducer.zero_grad();
  reducer.backward(torch::nll_loss(torch::log_softmax(model->forward(x), 1), y));
  const auto& step = reducer.last_step();
  // Per rank: [bucket 0 start, bucket 0 end, backward end] on the node's steady clock.
  auto mine = at::tensor({step.buckets[0].start_us, step.buckets[0].end_us, step.backward_end_us}, at::kLong);
  auto all = b->allgather_varying(mine.unsqueeze(0));
  const int64_t slow_backward_end = all[n - 1][0][2].item<int64_t>();
  EXPECT_EQ(all[n - 1][0][0].item<int64_t>(), 0) << "the slow rank summed part of bucket 0";
  int64_t bucket0_end = 0;
  for (int r = 0; r < n - 1; ++r) bucket0_end = std::max(bucket0_end, all[r][0][1].item<int64_t>());
  ASSERT_GT(bucket0_end, 0) << "no rank summed bucket 0";
  EXPECT_LT(bucket0_end, slow_backward_end)
      << "bucket 0 was summed " << bucket0_end - slow_backward_end << " us after the slow rank's backward ended";
}

// A TorchScript model scripted by Python PyTorch, trained data-parallel.
TEST(GradientReducer, TrainsTorchScriptModelFromPython) {
  auto b = world();
  char dir_template[] = "/tmp/hpcml-ts-XXXXXX";
  std::string dir;
  if (b->rank() == 0) dir = mkdtemp(dir_template);
  at::Tensor ok = at::zeros({1}, at::kInt);
  std::string path;
  if (b->rank() == 0) {
    path = dir + "/small.pt";
    const std::string cmd = "/usr/bin/python3 " + std::string(HPCML_SOURCE_DIR) +
                            "/tests/support/make_torchscript.py " + path + " 5";
    ok.fill_(std::system(cmd.c_str()) == 0 ? 1 : 0);
  }
  b->broadcast(ok);
  ASSERT_EQ(ok.item<int>(), 1) << "could not script the model with /usr/bin/python3";
  // Share the path: bytes of rank 0's string.
  at::Tensor len = at::tensor({static_cast<int64_t>(path.size())}, at::kLong);
  b->broadcast(len);
  at::Tensor bytes = at::zeros({len.item<int64_t>()}, at::kByte);
  if (b->rank() == 0) std::memcpy(bytes.data_ptr(), path.data(), path.size());
  b->broadcast(bytes);
  path.assign(static_cast<const char*>(bytes.data_ptr()), bytes.numel());

  auto module = torch::jit::load(path);
  auto reference = torch::jit::load(path);
  b->barrier();
  if (b->rank() == 0) std::system(("rm -rf " + dir).c_str());
  module.train();
  GradientReducer reducer(hpcml::collectives::named_parameters(module), {}, b);
  std::vector<torch::Tensor> params, ref_params;
  for (const auto& p : module.parameters()) params.push_back(p);
  for (const auto& p : reference.parameters()) ref_params.push_back(p);
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05));
  torch::optim::SGD ref_opt(ref_params, torch::optim::SGDOptions(0.05));
  const int n = b->size();
  for (int step = 0; step < 5; ++step) {
    auto [x, y] = global_batch(step, 4 * n);
    reducer.zero_grad();
    auto out = module.forward({x.narrow(0, 4 * b->rank(), 4)}).toTensor();
    reducer.backward(torch::nll_loss(torch::log_softmax(out, 1), y.narrow(0, 4 * b->rank(), 4)));
    opt.step();
    ref_opt.zero_grad();
    torch::nll_loss(torch::log_softmax(reference.forward({x}).toTensor(), 1), y).backward();
    ref_opt.step();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(hpcml::testing::tensor_near(params[i], ref_params[i], 1e-5, 1e-7)) << "parameter " << i;
  }
}

}  // namespace
