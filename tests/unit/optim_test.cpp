// FusedAdam / FusedAdamW (launch/optim.hpp) against torch::optim::Adam / AdamW, the
// reference implementation: same parameters after several steps, torch-compatible
// state (a checkpoint of the fused optimizer continues in torch's), and torch's own
// path for what the fused loop does not take.
#include <gtest/gtest.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>
#include <vector>

#include "launch/optim.hpp"

namespace hpcml::launch {
namespace {

// Parameters of a few shapes (FACILE-like), the same values for every call.
std::vector<at::Tensor> make_params(at::ScalarType dtype = at::kFloat) {
  auto gen = at::detail::createCPUGenerator(7);
  std::vector<at::Tensor> params;
  for (auto shape : std::vector<std::vector<int64_t>>{{30, 15}, {30}, {20, 30}, {20}, {1, 3}, {1}})
    params.push_back(at::randn(shape, gen).to(dtype).set_requires_grad(true));
  return params;
}

// Gives every parameter the gradient of step `step` (deterministic, varied scales).
void set_grads(std::vector<at::Tensor>& params, int step) {
  auto gen = at::detail::createCPUGenerator(100 + step);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() = at::randn(params[i].sizes(), gen).to(params[i].scalar_type()) * (0.1 * (i + 1));
  }
}

template <typename Optimizer>
void run_steps(Optimizer& optimizer, std::vector<at::Tensor>& params, int first, int last) {
  for (int s = first; s < last; ++s) {
    set_grads(params, s);
    optimizer.step();
  }
}

void expect_close(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want, double rtol,
                  double atol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(at::allclose(got[i], want[i], rtol, atol))
        << "parameter " << i << ": max |diff| " << (got[i] - want[i]).abs().max().item<double>();
  }
}

TEST(FusedAdam, MatchesTorchAdamWithL2Decay) {
  const auto options = torch::optim::AdamOptions(3e-3).betas({0.9, 0.99}).eps(1e-7).weight_decay(0.01);
  auto mine = make_params(), ref = make_params();
  FusedAdam fused(mine, options);
  torch::optim::Adam torch_adam(ref, options);
  run_steps(fused, mine, 0, 20);
  run_steps(torch_adam, ref, 0, 20);
  // The parameters moved (so the comparison is not of untouched values) ...
  EXPECT_GT((mine[0] - make_params()[0]).abs().max().item<double>(), 1e-3);
  // ... and agree with torch's to float rounding.
  expect_close(mine, ref, 1e-5, 1e-6);
}

TEST(FusedAdamW, MatchesTorchAdamWWithDecoupledDecay) {
  const auto options = torch::optim::AdamWOptions(1e-2).weight_decay(0.1);
  auto mine = make_params(), ref = make_params();
  FusedAdamW fused(mine, options);
  torch::optim::AdamW torch_adamw(ref, options);
  run_steps(fused, mine, 0, 20);
  run_steps(torch_adamw, ref, 0, 20);
  expect_close(mine, ref, 1e-5, 1e-6);
}

TEST(FusedAdam, StateIsTorchsOwnAndRoundTripsThroughCheckpoints) {
  const auto options = torch::optim::AdamOptions(1e-3);
  auto mine = make_params(), ref = make_params();
  {
    FusedAdam fused(mine, options);
    run_steps(fused, mine, 0, 3);
    ASSERT_EQ(fused.state().size(), mine.size());  // one torch-keyed state per parameter
    torch::serialize::OutputArchive out;
    fused.save(out);
    std::ostringstream bytes;
    out.save_to(bytes);
    // torch's Adam resumes from the fused optimizer's checkpoint.
    torch::optim::Adam resumed(mine, options);
    torch::serialize::InputArchive in;
    std::istringstream source(bytes.str());
    in.load_from(source);
    resumed.load(in);
    run_steps(resumed, mine, 3, 6);
  }
  torch::optim::Adam uninterrupted(ref, options);
  run_steps(uninterrupted, ref, 0, 6);
  expect_close(mine, ref, 1e-5, 1e-6);
}

TEST(FusedAdam, SkipsParametersWithoutGradient) {
  auto mine = make_params();
  const auto before = mine[1].detach().clone();
  FusedAdam fused(mine, torch::optim::AdamOptions(1e-2));
  set_grads(mine, 0);
  mine[1].mutable_grad().reset();
  fused.step();
  EXPECT_TRUE(at::equal(mine[1], before));
  EXPECT_EQ(fused.state().size(), mine.size() - 1);
}

TEST(FusedAdam, NonFloatParametersTakeTorchsPath) {
  const auto options = torch::optim::AdamOptions(1e-3).amsgrad(false);
  auto mine = make_params(at::kDouble), ref = make_params(at::kDouble);
  FusedAdam fused(mine, options);
  torch::optim::Adam torch_adam(ref, options);
  run_steps(fused, mine, 0, 5);
  run_steps(torch_adam, ref, 0, 5);
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(at::equal(mine[i], ref[i])) << "parameter " << i;
}

TEST(FusedAdam, AmsgradTakesTorchsPath) {
  const auto options = torch::optim::AdamOptions(1e-3).amsgrad(true);
  auto mine = make_params(), ref = make_params();
  FusedAdam fused(mine, options);
  torch::optim::Adam torch_adam(ref, options);
  run_steps(fused, mine, 0, 5);
  run_steps(torch_adam, ref, 0, 5);
  for (size_t i = 0; i < mine.size(); ++i) EXPECT_TRUE(at::equal(mine[i], ref[i])) << "parameter " << i;
}

}  // namespace
}  // namespace hpcml::launch
