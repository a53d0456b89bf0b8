// FusedSgd / FusedAdam / FusedAdamW (launch/train/optim.hpp) against torch::optim::SGD /
// Adam / AdamW, the reference implementation: same parameters after several steps, torch-compatible
// state (a checkpoint of the fused optimizer continues in torch's), and torch's own
// path for what the fused loop does not take.
#include <gtest/gtest.h>
#include <torch/optim/serialize.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>
#include <vector>

#include "collectives/wire.hpp"
#include "core/error.hpp"
#include "launch/train/optim.hpp"
#include "tests/support/tensor_testing.hpp"

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

// Three steps of the fused optimizer, its checkpoint loaded into torch's, three more
// steps there (in `params`); `uninterrupted` is torch's after six steps on `ref`.
template <typename Fused, typename Torch, typename Options>
void fused_then_torch(const Options& options, std::vector<at::Tensor>& params, std::vector<at::Tensor>& ref) {
  Fused fused(params, options);
  run_steps(fused, params, 0, 3);
  ASSERT_EQ(fused.state().size(), params.size());  // one torch-keyed state per parameter
  torch::serialize::OutputArchive out;
  fused.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  Torch resumed(params, options);
  torch::serialize::InputArchive in;
  std::istringstream source(bytes.str());
  in.load_from(source);
  resumed.load(in);
  run_steps(resumed, params, 3, 6);
  Torch uninterrupted(ref, options);
  run_steps(uninterrupted, ref, 0, 6);
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
  // torch's Adam resumes from the fused optimizer's checkpoint.
  auto mine = make_params(), ref = make_params();
  fused_then_torch<FusedAdam, torch::optim::Adam>(torch::optim::AdamOptions(1e-3), mine, ref);
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

// Exactly torch's where both fuse multiply-add or neither does: the same arithmetic,
// element by element (FusedSgd fuses in its AVX2 loop, unless HPCML_NO_AVX2; LibTorch
// in its AVX2/AVX-512 kernels, unless ATEN_CPU_CAPABILITY=default). Where one fuses and
// the other does not, each operation may differ by one float32 rounding (2^-24
// relative): over 10 steps of updates of order 1e-1 on parameters of order 1, 1e-6
// relative plus 1e-7 absolute bounds that with margin.
void expect_same_as_torch(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  const bool same_arithmetic = collectives::wire::use_avx2() == hpcml::testing::aten_fuses_multiply_add();
  for (size_t i = 0; i < got.size(); ++i) {
    if (same_arithmetic) {
      EXPECT_TRUE(at::equal(got[i], want[i]))
          << what << ", parameter " << i << ": max |diff| " << (got[i] - want[i]).abs().max().item<double>();
    } else {
      EXPECT_TRUE(at::allclose(got[i], want[i], 1e-6, 1e-7)) << what << ", parameter " << i;
    }
  }
}

TEST(FusedSgd, SameParametersAsTorchSgdForEveryOptionMix) {
  const std::vector<std::pair<std::string, torch::optim::SGDOptions>> cases = {
      {"plain", torch::optim::SGDOptions(0.1)},
      {"momentum", torch::optim::SGDOptions(0.05).momentum(0.9)},
      {"nesterov + decay", torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(1e-2)},
      {"dampening + decay", torch::optim::SGDOptions(0.02).momentum(0.8).dampening(0.1).weight_decay(1e-3)},
  };
  for (const auto& [what, options] : cases) {
    auto mine = make_params(), ref = make_params();
    FusedSgd fused(mine, options);
    torch::optim::SGD torch_sgd(ref, options);
    run_steps(fused, mine, 0, 10);
    run_steps(torch_sgd, ref, 0, 10);
    EXPECT_GT((mine[0] - make_params()[0]).abs().max().item<double>(), 1e-3) << what;  // it moved
    expect_same_as_torch(mine, ref, what);
  }
}

// update() with a 16-bit gradient is step() with that gradient widened to float32.
template <typename Optimizer, typename Options>
void expect_update_from_16_bits_equals_step(const Options& options, const std::string& what) {
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    auto mine = make_params(), ref = make_params();
    Optimizer by_update(mine, options);
    Optimizer by_step(ref, options);
    for (int s = 0; s < 4; ++s) {
      set_grads(ref, s);
      std::vector<at::Tensor> wire;
      for (auto& p : ref) {
        wire.push_back(p.grad().to(dtype));
        p.mutable_grad() = wire.back().to(at::kFloat);
      }
      by_step.step();
      for (size_t i = 0; i < mine.size(); ++i) by_update.update(mine[i], wire[i].data_ptr(), dtype);
    }
    EXPECT_GT((mine[0] - make_params()[0]).abs().max().item<double>(), 1e-4) << what;  // it moved
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_TRUE(at::equal(mine[i], ref[i])) << what << ", " << c10::toString(dtype) << ", parameter " << i;
    }
  }
}

TEST(FusedSgd, UpdateFrom16BitGradientEqualsStepWithItsWidening) {
  expect_update_from_16_bits_equals_step<FusedSgd>(torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-2),
                                                   "sgd");
}

TEST(FusedAdam, UpdateFrom16BitGradientEqualsStepWithItsWidening) {
  expect_update_from_16_bits_equals_step<FusedAdam>(torch::optim::AdamOptions(1e-3).weight_decay(1e-2), "adam");
  expect_update_from_16_bits_equals_step<FusedAdamW>(torch::optim::AdamWOptions(1e-3).weight_decay(1e-2), "adamw");
}

// Ranks that share parameters each update a part: update_range over pieces that
// cover a parameter equals one update() of it, bit for bit (SGD without momentum,
// with weight decay, from float32 and from bf16). With momentum there is
// per-element state, so ranges are refused.
TEST(FusedSgd, RangeUpdatesOverPiecesEqualOneUpdate) {
  const auto options = torch::optim::SGDOptions(0.05).weight_decay(1e-2);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto whole = make_params(), pieces = make_params();
    FusedSgd by_whole(whole, options), by_pieces(pieces, options);
    EXPECT_TRUE(by_pieces.updates_ranges());
    for (int s = 0; s < 3; ++s) {
      set_grads(whole, s);
      for (size_t i = 0; i < whole.size(); ++i) {
        const at::Tensor grad = whole[i].grad().to(dtype).contiguous();
        by_whole.update(whole[i], grad.data_ptr(), dtype);
        const int64_t n = pieces[i].numel();
        const std::vector<int64_t> cuts{0, n / 3, n / 2, n};  // some pieces empty for small n
        for (size_t k = 0; k + 1 < cuts.size(); ++k) {
          by_pieces.update_range(pieces[i], grad.data_ptr(), dtype, cuts[k], cuts[k + 1]);
        }
      }
    }
    EXPECT_GT((whole[0] - make_params()[0]).abs().max().item<double>(), 1e-3);  // it moved
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_TRUE(at::equal(whole[i], pieces[i])) << c10::toString(dtype) << ", parameter " << i;
    }
  }
  auto params = make_params();
  FusedSgd with_momentum(params, torch::optim::SGDOptions(0.05).momentum(0.9));
  EXPECT_FALSE(with_momentum.updates_ranges());
  const at::Tensor grad = at::zeros_like(params[0]);
  EXPECT_THROW(with_momentum.update_range(params[0], grad.data_ptr(), at::kFloat, 0, 1), hpcml::Error);
  FusedSgd plain(params, torch::optim::SGDOptions(0.05));
  EXPECT_THROW(plain.update_range(params[0], grad.data_ptr(), at::kFloat, 0, params[0].numel() + 1), hpcml::Error);
  FusedAdam adam(params, torch::optim::AdamOptions(1e-3));
  EXPECT_FALSE(adam.updates_ranges());
  EXPECT_THROW(adam.update_range(params[0], grad.data_ptr(), at::kFloat, 0, 1), hpcml::Error);
}

TEST(FusedSgd, CheckpointContinuesInTorchSgd) {
  auto mine = make_params(), ref = make_params();
  fused_then_torch<FusedSgd, torch::optim::SGD>(torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true), mine,
                                               ref);
  expect_same_as_torch(mine, ref, "fused 3 steps, torch 3 more");
}

TEST(FusedSgd, SkipsParametersWithoutGradientAndRejectsForeignTensors) {
  auto mine = make_params();
  const auto before = mine[1].detach().clone();
  FusedSgd fused(mine, torch::optim::SGDOptions(0.1).momentum(0.5));
  set_grads(mine, 0);
  mine[1].mutable_grad().reset();
  fused.step();
  EXPECT_TRUE(at::equal(mine[1], before));
  EXPECT_EQ(fused.state().size(), mine.size() - 1);
  const auto stranger = at::zeros({3});
  const float grad[3] = {1, 2, 3};
  try {
    fused.update(stranger, grad, at::kFloat);
    ADD_FAILURE() << "no error";
  } catch (const hpcml::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not one of its parameters"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hpcml::launch
