// The gpu tier: what needs a CUDA device. Built only with CUDA (the upstream
// LibTorch line); run by scripts/gpu-check.sh on a GPU machine. Without a device
// the binary prints one line saying why and exits 77, which CTest reports as
// skipped: the one tier allowed to skip under CI (CI machines have no GPU).
//
// One rank: the GPU machine has one GPU, and NCCL refuses two ranks on one
// device, so multi-rank NCCL and its watchdog are not tested here (docs/gpu.md).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "collectives/device.hpp"
#include "collectives/factory.hpp"
#include "collectives/gradient_reducer.hpp"
#include "collectives/nccl_backend.hpp"
#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"
#include "launch/runtime.hpp"
#include "launch/train/checkpoint.hpp"
#include "launch/train/feed.hpp"
#include "models/registry.hpp"

namespace hpcml {
namespace {

using collectives::AllreduceOptions;
using collectives::ReduceOp;

collectives::BackendPtr nccl() {
  static collectives::BackendPtr backend =
      collectives::make_backend("nccl", {}, c10::Device(c10::kCUDA, 0));
  return backend;
}

TEST(Device, CudaPicksTheLocalRanksDevice) {
  const auto choice = collectives::select_device("cuda", 0);
  EXPECT_TRUE(choice.device.is_cuda());
  EXPECT_EQ(choice.device.index(), 0);
  EXPECT_EQ(collectives::select_device("auto", 0).device, choice.device);
  EXPECT_NE(collectives::describe_device(choice.device).find("compute capability"), std::string::npos);
}

TEST(Nccl, OneRankCollectivesOnTheDevice) {
  auto backend = nccl();
  ASSERT_EQ(backend->name(), "nccl");
  ASSERT_EQ(backend->size(), 1);
  const auto on = at::TensorOptions().device(at::kCUDA, 0);
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    at::Tensor x = at::randn({1000}, on.dtype(at::kFloat)).to(dtype);
    const at::Tensor expected = x.clone();
    backend->allreduce(x);  // one rank: the sum is the input
    EXPECT_TRUE(at::equal(x, expected)) << c10::toString(dtype);
    AllreduceOptions avg;
    avg.op = ReduceOp::kAvg;
    backend->allreduce(x, avg);
    EXPECT_TRUE(at::equal(x, expected)) << c10::toString(dtype);
  }
  // Asynchronous: the caller's stream waits for the collective; wait() on the host.
  at::Tensor y = at::arange(64, on.dtype(at::kFloat));
  AllreduceOptions async;
  async.async = true;
  auto work = backend->allreduce(y, async);
  work->wait();
  EXPECT_TRUE(work->is_completed());
  EXPECT_TRUE(at::equal(y.cpu(), at::arange(64, at::kFloat)));
  // allgather, reduce_scatter, broadcast, barrier.
  std::vector<at::Tensor> outs = {at::empty({64}, on.dtype(at::kFloat))};
  backend->allgather(outs, y);
  EXPECT_TRUE(at::equal(outs[0], y));
  at::Tensor rs = at::empty({64}, on.dtype(at::kFloat));
  backend->reduce_scatter(rs, y);
  EXPECT_TRUE(at::equal(rs, y));
  backend->broadcast(y);
  backend->barrier();
}

TEST(Nccl, CpuTensorsAreStagedThroughTheDevice) {
  at::Tensor digest = at::tensor({int64_t{7}, int64_t{-7}}, at::kLong);
  AllreduceOptions min_op;
  min_op.op = ReduceOp::kMin;
  nccl()->allreduce(digest, min_op);
  EXPECT_TRUE(digest.device().is_cpu());
  EXPECT_EQ(digest[0].item<int64_t>(), 7);
  EXPECT_EQ(digest[1].item<int64_t>(), -7);
}

TEST(Nccl, ATensorOnAnotherDeviceIsRefusedWithOneLine) {
  if (collectives::visible_devices() < 2) {
    // The other device can only be the CPU, which is staged; check the dtype error instead.
    at::Tensor bad = at::zeros({4}, at::TensorOptions().device(at::kCUDA, 0).dtype(at::kShort));
    try {
      nccl()->allreduce(bad);
      FAIL() << "an int16 tensor was accepted";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("dtype"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

TEST(Reducer, BucketsLiveOnTheDeviceAndOneRankKeepsGradients) {
  torch::manual_seed(0);
  torch::nn::Sequential net(torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 4));
  net->to(at::Device(at::kCUDA, 0));
  std::vector<collectives::NamedTensor> params;
  for (const auto& p : net->named_parameters()) params.emplace_back(p.key(), p.value());
  collectives::GradientReducer reducer(params, {}, nccl(), {});
  const auto x = torch::randn({16, 32}, at::TensorOptions().device(at::kCUDA, 0));
  reducer.zero_grad();
  auto loss = net->forward(x).pow(2).mean();
  reducer.backward(loss);
  // The reference: the same gradients from plain autograd.
  std::vector<at::Tensor> got;
  for (auto& [n, p] : params) got.push_back(p.grad().clone());
  for (auto& [n, p] : params) p.mutable_grad().reset();
  net->forward(x).pow(2).mean().backward();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(got[i].is_cuda());
    EXPECT_TRUE(at::allclose(got[i], params[i].second.grad())) << params[i].first;
  }
}

TEST(Reducer, StepInsideTheReductionIsRefusedOnTheDevice) {
  torch::nn::Linear lin(4, 4);
  lin->to(at::Device(at::kCUDA, 0));
  std::vector<collectives::NamedTensor> params;
  for (const auto& p : lin->named_parameters()) params.emplace_back(p.key(), p.value());
  collectives::GradientReducer reducer(params, {}, nccl(), {});
  EXPECT_THROW(reducer.set_bucket_update([](const std::vector<collectives::AveragedGrad>&) {}, false), ConfigError);
}

TEST(Autocast, Bf16AndFp16MatmulOnTheDevice) {
  const auto on = at::TensorOptions().device(at::kCUDA, 0);
  const auto a = at::randn({64, 64}, on), b = at::randn({64, 64}, on);
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    {
      compat::AutocastScope scope(c10::DeviceType::CUDA, dtype);
      EXPECT_EQ(at::matmul(a, b).scalar_type(), dtype);
    }
    EXPECT_EQ(at::matmul(a, b).scalar_type(), at::kFloat);
  }
}

// A feed whose batch (epoch, step) is filled with 100 epoch + step, recording the order
// of its reads.
class NumberedFeed : public launch::Feed {
 public:
  std::vector<int64_t> reads;
  int64_t steps_per_epoch() const override { return 3; }
  launch::Example batch(int64_t epoch, int64_t step) override {
    reads.push_back(epoch * 3 + step);
    launch::Example e;
    e.inputs.emplace("x", at::full({4, 2}, static_cast<float>(100 * epoch + step)));
    e.target = at::arange(4, at::kLong) + 10 * (epoch * 3 + step);
    return e;
  }
  void for_each_validation(const std::function<void(const launch::Example&)>&) override {}
  int64_t validation_size() const override { return 0; }
  std::vector<int64_t> input_shape() const override { return {2}; }
  bool regression() const override { return true; }
};

// The prefetching copy (step s starts the copy of s + 1) hands each step its own batch,
// on the device, and reads the feed once per step in step order.
TEST(Feed, DeviceBatchesHandEachStepItsOwnBatchOnTheDevice) {
  NumberedFeed feed;
  const c10::Device cuda(c10::kCUDA, 0);
  launch::DeviceBatches batches(feed, cuda, 7);
  for (int64_t s = 0; s < 7; ++s) {
    const launch::Example e = batches.batch(s);
    ASSERT_TRUE(e.inputs.at("x").device().is_cuda());
    ASSERT_TRUE(e.target.device().is_cuda());
    EXPECT_TRUE(at::equal(e.inputs.at("x").cpu(), at::full({4, 2}, static_cast<float>(100 * (s / 3) + s % 3))))
        << "step " << s;
    EXPECT_TRUE(at::equal(e.target.cpu(), at::arange(4, at::kLong) + 10 * s)) << "step " << s;
  }
  EXPECT_EQ(feed.reads, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
}

// An inference batch has no target: it moves to the device all the same.
TEST(Feed, AnInferenceBatchWithoutATargetMovesToTheDevice) {
  launch::Example e;
  e.inputs.emplace("x", at::arange(6, at::kFloat).reshape({3, 2}));
  const launch::Example there = e.to_device(c10::Device(c10::kCUDA, 0));
  EXPECT_TRUE(there.inputs.at("x").device().is_cuda());
  EXPECT_FALSE(there.target.defined());
  EXPECT_TRUE(at::equal(there.inputs.at("x").cpu(), e.inputs.at("x")));
}

// A checkpoint holds the CUDA generator's state: after loading it, the device draws
// the numbers it drew after the save (dropout on a GPU resumes exactly).
TEST(Checkpoint, TheCudaGeneratorStateRoundTrips) {
  const c10::Device cuda(c10::kCUDA, 0);
  launch::Context ctx;
  ctx.world = nccl();
  ctx.device.device = cuda;
  auto model = models::make("facile", 0);
  model->to(cuda);
  std::vector<at::Tensor> params;
  for (const auto& [name, t] : model->named_parameters()) params.push_back(t);
  torch::optim::SGD optimizer(params, torch::optim::SGDOptions(0.1));
  torch::manual_seed(3);
  (void)at::rand({100}, at::TensorOptions().device(cuda));  // move the stream off its seed
  const launch::RngStates rng = launch::gather_rng_states(*ctx.world, cuda);
  ASSERT_EQ(rng.cuda.size(), 1u);
  ASSERT_GT(rng.cuda[0].numel(), 0);
  const auto path = std::filesystem::temp_directory_path() / ("hpcml-gpu-rng-" + std::to_string(::getpid()) + ".pt");
  launch::save_checkpoint(path, 5, ctx, *model, optimizer, "", rng);
  const at::Tensor after_save = at::rand({1000}, at::TensorOptions().device(cuda)).cpu();
  (void)at::rand({777}, at::TensorOptions().device(cuda));
  launch::load_checkpoint(path.string(), *model, optimizer, 0, 1);
  const at::Tensor after_load = at::rand({1000}, at::TensorOptions().device(cuda)).cpu();
  std::filesystem::remove(path);
  EXPECT_TRUE(at::equal(after_save, after_load));
}

// Every zoo model, moved to the GPU, computes what it computes on the CPU: a model
// that makes CPU tensors inside forward would fail here.
TEST(Zoo, EveryModelOnTheDeviceMatchesTheCpu) {
  for (const auto& entry : models::zoo()) {
    at::NoGradGuard no_grad;
    auto cpu_model = models::make(entry.name, 0);
    auto gpu_model = models::make(entry.name, 0);
    cpu_model->set_training(false);
    gpu_model->set_training(false);
    gpu_model->to(at::Device(at::kCUDA, 0));
    const auto inputs = models::example_inputs(entry.name, 8, 1);
    models::Inputs on_device;
    for (const auto& [k, t] : inputs) on_device[k] = t.to(at::Device(at::kCUDA, 0));
    at::Tensor expected, got;
    try {
      expected = cpu_model->forward(inputs);
      got = gpu_model->forward(on_device).cpu();
    } catch (const std::exception& e) {
      ADD_FAILURE() << entry.name << ": " << e.what();
      continue;
    }
    EXPECT_TRUE(at::allclose(got, expected, 1e-3, 1e-4))
        << entry.name << ": max |diff| " << (got - expected).abs().max().item<double>();
  }
}

}  // namespace
}  // namespace hpcml

int main(int argc, char** argv) {
  hpcml::MpiSession mpi(&argc, &argv);
  const int devices = hpcml::collectives::visible_devices();
  if (devices == 0) {
    std::printf("gpu tests skipped: no CUDA device visible (torch::cuda::device_count() = 0); "
                "they run on a GPU machine through scripts/gpu-check.sh\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
