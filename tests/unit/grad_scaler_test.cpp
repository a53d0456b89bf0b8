// GradScaler (launch/train/grad_scaler.hpp) against torch.amp.GradScaler's rule, worked by
// hand: unscaling divides exactly, an Inf or NaN anywhere skips the step and backs the scale
// off, growth_interval clean steps in a row grow it, growth stops short of float32's overflow,
// and a restored state continues as the original would.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "launch/train/grad_scaler.hpp"

namespace hpcml::launch {
namespace {

// Parameters whose gradients are `values` * scale (a gradient per value, of 3 elements).
std::vector<at::Tensor> scaled_grads(const std::vector<double>& values, double scale) {
  std::vector<at::Tensor> params;
  for (double v : values) {
    at::Tensor p = at::zeros({3}, at::kFloat).set_requires_grad(true);
    p.mutable_grad() = at::full({3}, v * scale, at::kFloat);
    params.push_back(p);
  }
  return params;
}

TEST(GradScaler, UnscaleDividesExactlyAndReportsFinite) {
  GradScaler scaler;
  EXPECT_EQ(scaler.scale(), 65536.0);  // torch's default init_scale
  auto params = scaled_grads({0.1, -3.25, 1e-7}, scaler.scale());
  EXPECT_TRUE(scaler.unscale(params));
  const std::vector<float> expected = {0.1f, -3.25f, 1e-7f};
  for (size_t i = 0; i < params.size(); ++i) {
    // v * 2^16 then / 2^16 is exact in float32 (no overflow, no subnormals).
    EXPECT_TRUE(at::equal(params[i].grad(), at::full({3}, expected[i], at::kFloat))) << i;
  }
  at::Tensor no_grad = at::zeros({2}).set_requires_grad(true);  // never got a gradient: skipped
  EXPECT_TRUE(scaler.unscale({no_grad}));
}

TEST(GradScaler, AnyNonFiniteValueIsFound) {
  GradScaler scaler;
  for (double bad : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
    auto params = scaled_grads({1.0, 2.0, 3.0}, 1.0);
    params[1].mutable_grad()[2] = bad;  // one element of the middle gradient
    EXPECT_FALSE(scaler.unscale(params)) << bad;
  }
}

TEST(GradScaler, SkipsBacksOffAndGrowsAsTorch) {
  GradScalerOptions o;
  o.init_scale = 1024;
  o.growth_interval = 3;
  GradScaler s(o);
  // (found_inf, steps?, scale after, tracker after, skipped after), worked by hand:
  struct Row {
    bool inf, steps;
    double scale;
    int64_t tracker, skipped;
  };
  const std::vector<Row> rows = {
      {false, true, 1024, 1, 0}, {false, true, 1024, 2, 0}, {false, true, 2048, 0, 0},  // third clean: x2
      {true, false, 1024, 0, 1},                                                          // inf: x0.5, reset
      {false, true, 1024, 1, 1}, {true, false, 512, 0, 2},  {true, false, 256, 0, 3},
      {false, true, 256, 1, 3},  {false, true, 256, 2, 3},  {false, true, 512, 0, 3}};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(s.update(rows[i].inf), rows[i].steps) << "row " << i;
    EXPECT_EQ(s.scale(), rows[i].scale) << "row " << i;
    EXPECT_EQ(s.growth_tracker(), rows[i].tracker) << "row " << i;
    EXPECT_EQ(s.skipped(), rows[i].skipped) << "row " << i;
  }
}

TEST(GradScaler, GrowthStopsBeforeFloat32Overflows) {
  GradScalerOptions o;
  o.init_scale = std::ldexp(1.0, 127);  // 2^127: x2 is beyond FLT_MAX
  o.growth_interval = 1;
  GradScaler s(o);
  EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), std::ldexp(1.0, 127));
  EXPECT_EQ(s.growth_tracker(), 0);
  EXPECT_LE(s.scale(), FLT_MAX);
}

TEST(GradScaler, RestoredStateContinuesAsTheOriginal) {
  GradScalerOptions o;
  o.growth_interval = 4;
  GradScaler a(o), b(o);
  const std::vector<bool> found = {false, true, false, false, false, false, true, false, false};
  for (size_t i = 0; i < 5; ++i) a.update(found[i]);
  b.restore(a.scale(), a.growth_tracker(), a.skipped());
  for (size_t i = 5; i < found.size(); ++i) {
    EXPECT_EQ(a.update(found[i]), b.update(found[i]));
    EXPECT_EQ(a.scale(), b.scale());
    EXPECT_EQ(a.growth_tracker(), b.growth_tracker());
    EXPECT_EQ(a.skipped(), b.skipped());
  }
  EXPECT_THROW(b.restore(0.0, 0, 0), std::invalid_argument);
  EXPECT_THROW(b.restore(std::nan(""), 0, 0), std::invalid_argument);
  EXPECT_THROW(b.restore(8.0, -1, 0), std::invalid_argument);
  EXPECT_THROW(b.restore(8.0, 0, -2), std::invalid_argument);
}

TEST(GradScaler, ScaledLossIsLossTimesScale) {
  GradScaler s;
  const at::Tensor loss = at::tensor({0.6931f});
  EXPECT_TRUE(at::equal(s.scale_loss(loss), loss * 65536.0));
}

}  // namespace
}  // namespace hpcml::launch
