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

#include "collectives/device.hpp"
#include "collectives/factory.hpp"
#include "collectives/gradient_reducer.hpp"
#include "collectives/nccl_backend.hpp"
#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "core/mpi.hpp"
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
