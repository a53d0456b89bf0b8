// The neural spline flow (models/flows/nsf.hpp): spline and flow invertibility,
// log-dets against finite-difference Jacobians, normalisation by quadrature, sampling
// against log_prob (KS), importance sampling with a known evidence, and the GW
// template against datagen gw itself.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"
#include "models/flows/nsf.hpp"
#include "models/flows/nsf_model.hpp"
#include "tests/support/tensor_testing.hpp"

namespace hpcml::models::flows {
namespace {

using hpcml::testing::tensor_near;

constexpr int64_t kStrain = 16;

NsfOptions small_options(int64_t d, const std::string& linear = "lu", uint64_t seed = 1) {
  NsfOptions o;
  o.theta_dim = d;
  o.strain_length = kStrain;
  o.num_steps = 3;
  o.spline.num_bins = 6;
  o.spline.tail_bound = 3.0;
  o.hidden = 16;
  o.hidden_layers = 2;
  o.linear = linear;
  o.n_basis = 8;
  o.embedding_hidden = {16};
  o.context_dim = 4;
  o.seed = seed;
  return o;
}

/// Moves every parameter off its (identity) initialisation, so LU layers are not trivial.
void perturb(NeuralSplineFlow& flow, double scale, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  for (auto& [name, p] : flow.named_parameters()) p.add_(at::randn(p.sizes(), gen, p.options()) * scale);
}

/// A flow with non-trivial standardisation and LU layers, in `dtype`.
NeuralSplineFlow make_flow(int64_t d, at::ScalarType dtype, const std::string& linear = "lu", uint64_t seed = 1) {
  NeuralSplineFlow flow(small_options(d, linear, seed));
  perturb(flow, 0.1, seed + 100);
  flow.to(dtype);
  auto gen = at::detail::createCPUGenerator(seed + 200);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  flow.set_standardization(at::randn({d}, gen, opts) * 2, at::rand({d}, gen, opts) * 2 + 0.5);
  return flow;
}

at::Tensor spline_params(int64_t n, int64_t bins, at::ScalarType dtype, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  // Unit-scale raw parameters, as a freshly initialised conditioner gives.
  return at::randn({n, 3 * bins - 1}, gen, at::TensorOptions().dtype(dtype));
}

// --- spline -------------------------------------------------------------------------

TEST(RqSpline, InverseOfForwardIsIdentityInsideAndOutsideTheTailBound) {
  SplineOptions o;
  o.num_bins = 8;
  o.tail_bound = 3;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    auto gen = at::detail::createCPUGenerator(5);
    auto x = (at::rand({4000}, gen, at::TensorOptions().dtype(dtype)) * 2 - 1) * 1.5 * o.tail_bound;
    x = at::cat({x, at::tensor({-3.0, 3.0, 0.0}, at::TensorOptions().dtype(dtype))});
    const auto params = spline_params(x.size(0), o.num_bins, dtype, 6);
    const auto f = rq_spline_forward(x, params, o);
    const auto g = rq_spline_inverse(f.outputs, params, o);
    if (dtype == at::kDouble) {
      EXPECT_TRUE(tensor_near(g.outputs, x, 0, 1e-4)) << dtype;
      EXPECT_TRUE(tensor_near(f.logabsdet + g.logabsdet, at::zeros_like(x), 0, 1e-4)) << dtype;
    } else {
      // float32: where the spline is flat (f' < 0.01) the inverse is ill-conditioned; the
      // rounding of y alone moves x by ~ulp(y) / f'. Within 1e-4 where f' >= 0.01; within
      // 1e-4 + 4 ulp(y) / f' everywhere.
      const auto slope = at::exp(f.logabsdet.to(at::kDouble));
      const auto good = slope >= 1e-2;
      ASSERT_GT(good.to(at::kDouble).mean().item<double>(), 0.95);
      EXPECT_TRUE(tensor_near(g.outputs.masked_select(good), x.masked_select(good), 0, 1e-4));
      EXPECT_TRUE(tensor_near((f.logabsdet + g.logabsdet).masked_select(good), at::zeros({good.sum().item<int64_t>()}),
                              0, 1e-4));
      const auto bound = 1e-4 + 4 * 0x1.0p-23 * (f.outputs.abs().to(at::kDouble) + 1) / slope;
      EXPECT_TRUE(at::le((g.outputs - x).abs().to(at::kDouble), bound).all().item<bool>());
    }
    // Outside [-B, B]: the identity with log-det 0; some inputs are there.
    const auto outside = at::abs(x) > o.tail_bound;
    ASSERT_GT(outside.sum().item<int64_t>(), 1000);
    EXPECT_TRUE(at::equal(f.outputs.masked_select(outside), x.masked_select(outside)));
    EXPECT_EQ(f.logabsdet.masked_select(outside).abs().max().item<double>(), 0.0);
    // Inside, the spline is not the identity (the test exercises it).
    EXPECT_GT((f.outputs - x).abs().max().item<double>(), 0.1);
  }
}

TEST(RqSpline, LogAbsDetMatchesFiniteDifferences) {
  SplineOptions o;
  o.num_bins = 10;
  o.tail_bound = 2;
  auto gen = at::detail::createCPUGenerator(7);
  const auto x = (at::rand({3000}, gen, at::TensorOptions().dtype(at::kDouble)) * 2 - 1) * 2.5;
  const auto params = spline_params(x.size(0), o.num_bins, at::kDouble, 8);
  const double h = 1e-6;
  for (const bool inverse : {false, true}) {
    auto apply = [&](const at::Tensor& v) {
      return inverse ? rq_spline_inverse(v, params, o) : rq_spline_forward(v, params, o);
    };
    const auto fd = (apply(x + h).outputs - apply(x - h).outputs) / (2 * h);
    EXPECT_TRUE(tensor_near(apply(x).logabsdet, at::log(fd), 0, 1e-5)) << "inverse=" << inverse;
  }
}

TEST(RqSpline, IsMonotoneAndMapsTheIntervalOntoItself) {
  SplineOptions o;
  const auto x = at::linspace(-o.tail_bound, o.tail_bound, 5001, at::TensorOptions().dtype(at::kDouble));
  const auto params = spline_params(1, o.num_bins, at::kDouble, 9).expand({x.size(0), 3 * o.num_bins - 1});
  const auto y = rq_spline_forward(x, params, o).outputs;
  EXPECT_NEAR(y[0].item<double>(), -o.tail_bound, 1e-12);
  EXPECT_NEAR(y[-1].item<double>(), o.tail_bound, 1e-12);
  EXPECT_GT((y.narrow(0, 1, x.size(0) - 1) - y.narrow(0, 0, x.size(0) - 1)).min().item<double>(), 0.0);
}

TEST(RqSpline, RejectsParamsOfTheWrongShape) {
  SplineOptions o;
  o.num_bins = 4;
  const auto x = at::zeros({5, 2});
  try {
    rq_spline_forward(x, at::zeros({5, 2, 10}), o);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(e.message().find("rq_spline_forward: params: expected shape [5, 2, 11]"), std::string::npos)
        << e.message();
    EXPECT_NE(e.message().find("found [5, 2, 10]"), std::string::npos) << e.message();
  }
}

// --- flow ---------------------------------------------------------------------------

TEST(NeuralSplineFlow, InverseOfForwardIsIdentity) {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    for (int64_t d = 1; d <= 5; ++d) {
      for (const std::string linear : {"lu", "permutation"}) {
        auto flow = make_flow(d, dtype, linear, static_cast<uint64_t>(d));
        auto gen = at::detail::createCPUGenerator(10 + d);
        const auto opts = at::TensorOptions().dtype(dtype);
        const auto context = flow.embed(at::randn({64, kStrain}, gen, opts));
        // Standardised values out to ±4.5, beyond the tail bound 3.
        const auto theta = at::randn({64, d}, gen, opts) * 1.5;
        const auto f = flow.forward_transform(theta, context);
        const auto g = flow.inverse_transform(f.outputs, context);
        const std::string where = std::string(c10::toString(dtype)) + " D=" + std::to_string(d) + " " + linear;
        EXPECT_TRUE(tensor_near(g.outputs, theta, 0, 1e-4)) << where;
        EXPECT_TRUE(tensor_near(f.logabsdet + g.logabsdet, at::zeros({64}, opts), 0, 1e-4)) << where;
      }
    }
  }
}

TEST(NeuralSplineFlow, LogDetMatchesNumericalJacobian) {
  for (int64_t d = 2; d <= 5; ++d) {
    auto flow = make_flow(d, at::kDouble, "lu", static_cast<uint64_t>(20 + d));
    auto gen = at::detail::createCPUGenerator(30 + d);
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    const double h = 1e-6;
    for (int sample = 0; sample < 6; ++sample) {
      const auto context = flow.embed(at::randn({1, kStrain}, gen, opts));
      const auto theta = flow.inverse_transform(at::randn({1, d}, gen, opts), context).outputs;  // typical θ
      // Columns of J by central differences: perturb each coordinate of θ.
      const auto step = at::eye(d, opts) * h;
      const auto plus = flow.forward_transform(theta + step, context.expand({d, -1})).outputs;
      const auto minus = flow.forward_transform(theta - step, context.expand({d, -1})).outputs;
      const auto jacobian = ((plus - minus) / (2 * h)).t();  // J[i][j] = dz_i / dθ_j
      const auto numeric = std::get<1>(at::linalg_slogdet(jacobian));
      const auto analytic = flow.forward_transform(theta, context).logabsdet;
      EXPECT_NEAR(analytic.item<double>(), numeric.item<double>(), 1e-5) << "D=" << d << " sample " << sample;
    }
  }
}

TEST(NeuralSplineFlow, LogProbIntegratesToOneIn1D) {
  auto flow = make_flow(1, at::kDouble, "lu", 41);
  flow.set_standardization(at::tensor({2.0}), at::tensor({3.0}));
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto gen = at::detail::createCPUGenerator(42);
  const auto grid = at::linspace(2 - 45, 2 + 45, 100001, opts);
  for (int context = 0; context < 3; ++context) {
    const auto strain = at::randn({1, kStrain}, gen, opts).expand({grid.size(0), kStrain});
    const auto density = at::exp(flow.log_prob(grid.unsqueeze(1), strain));
    const double integral = at::trapezoid(density, grid).item<double>();
    EXPECT_NEAR(integral, 1.0, 1e-4) << "context " << context;
    std::cout << "[ figures  ] 1-D integral of q, context " << context << ": " << std::setprecision(8) << integral
              << "\n";
  }
}

TEST(NeuralSplineFlow, LogProbIntegratesToOneIn2D) {
  auto flow = make_flow(2, at::kDouble, "lu", 43);
  flow.set_standardization(at::tensor({-1.0, 0.5}), at::tensor({0.5, 2.0}));
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto gen = at::detail::createCPUGenerator(44);
  const int64_t n = 601;
  const auto u = at::linspace(-1 - 5, -1 + 5, n, opts), v = at::linspace(0.5 - 20, 0.5 + 20, n, opts);
  const auto mesh = at::meshgrid({u, v}, "ij");
  const auto theta = at::stack({mesh[0].reshape(-1), mesh[1].reshape(-1)}, 1);
  const auto strain = at::randn({1, kStrain}, gen, opts).expand({theta.size(0), kStrain});
  const auto density = at::exp(flow.log_prob(theta, strain)).view({n, n});
  const double integral = at::trapezoid(at::trapezoid(density, v, 1), u, 0).item<double>();
  EXPECT_NEAR(integral, 1.0, 2e-3);
  std::cout << "[ figures  ] 2-D integral of q: " << integral << "\n";
}

/// max |F_empirical - F| of samples against the CDF tabulated on a grid.
double ks_statistic(at::Tensor samples, const at::Tensor& grid, const at::Tensor& cdf) {
  samples = std::get<0>(at::sort(samples));
  const int64_t n = samples.size(0);
  const auto f = at::searchsorted(grid, samples);  // grid index just above each sample
  const auto hi = at::clamp(f, 1, grid.size(0) - 1), lo = hi - 1;
  const auto x0 = grid.index_select(0, lo), x1 = grid.index_select(0, hi);
  const auto c0 = cdf.index_select(0, lo), c1 = cdf.index_select(0, hi);
  const auto model = c0 + (c1 - c0) * (samples - x0) / (x1 - x0);
  const auto rank = at::arange(1, n + 1, samples.options());
  return std::max((rank / n - model).max().item<double>(), (model - (rank - 1) / n).max().item<double>());
}

TEST(NeuralSplineFlow, SamplesFollowLogProbKolmogorovSmirnov) {
  auto flow = make_flow(1, at::kDouble, "lu", 45);
  flow.set_standardization(at::tensor({1.0}), at::tensor({2.0}));
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto gen = at::detail::createCPUGenerator(46);
  const auto strain = at::randn({1, kStrain}, gen, opts);
  const auto grid = at::linspace(1 - 30, 1 + 30, 100001, opts);
  const auto density = at::exp(flow.log_prob(grid.unsqueeze(1), strain.expand({grid.size(0), kStrain})));
  auto cdf = at::cat({at::zeros({1}, opts),
                      at::cumsum((density.narrow(0, 1, grid.size(0) - 1) + density.narrow(0, 0, grid.size(0) - 1)) / 2 *
                                     (grid[1] - grid[0]),
                                 0)});
  cdf = cdf / cdf[-1];
  const int64_t n = 20000;
  const auto samples = flow.sample(strain, n, gen).reshape({-1});
  const double stat = std::sqrt(static_cast<double>(n)) * ks_statistic(samples, grid, cdf);
  EXPECT_LT(stat, 1.95) << "sqrt(n) D_n: p < 0.001";
  std::cout << "[ figures  ] KS sqrt(n) D_n = " << stat << " (n = " << n << ")\n";
  // The test has power: the same samples shifted by a tenth of a std fail it.
  EXPECT_GT(std::sqrt(static_cast<double>(n)) * ks_statistic(samples + 0.2, grid, cdf), 1.95);
}

TEST(NeuralSplineFlow, SampleAndLogProbAgreeWithLogProbBatchedOverContexts) {
  for (int64_t d = 2; d <= 5; ++d) {
    auto flow = make_flow(d, at::kDouble, "lu", static_cast<uint64_t>(50 + d));
    auto gen = at::detail::createCPUGenerator(60 + d);
    const auto strain = at::randn({3, kStrain}, gen, at::TensorOptions().dtype(at::kDouble));
    const auto drawn = flow.sample_and_log_prob(strain, 7, gen);
    ASSERT_EQ(drawn.samples.sizes(), (std::vector<int64_t>{3, 7, d}));
    ASSERT_EQ(drawn.log_prob.sizes(), (std::vector<int64_t>{3, 7}));
    for (int64_t b = 0; b < 3; ++b) {
      const auto lp = flow.log_prob(drawn.samples[b], strain[b].unsqueeze(0).expand({7, kStrain}));
      EXPECT_TRUE(tensor_near(drawn.log_prob[b], lp, 1e-8, 1e-8)) << "D=" << d << " context " << b;
    }
    // The contexts differ, so do their sample sets; and a seeded generator reproduces them.
    EXPECT_FALSE(at::allclose(drawn.samples[0], drawn.samples[1]));
    auto g1 = at::detail::createCPUGenerator(99), g2 = at::detail::createCPUGenerator(99);
    EXPECT_TRUE(at::equal(flow.sample(strain, 4, g1), flow.sample(strain, 4, g2)));
  }
}

TEST(NeuralSplineFlow, NamesAreTheTwinStateDictNames) {
  NeuralSplineFlow flow(small_options(3));
  std::vector<std::string> names;
  for (const auto& [name, t] : flow.named_parameters()) names.push_back(name);
  for (const auto& [name, t] : flow.named_buffers()) names.push_back(name);
  for (const char* expected :
       {"theta_mean", "theta_std", "embedding.projection.weight", "embedding.net.0.weight", "embedding.net.2.bias",
        "steps.0.permutation", "steps.2.lu.lower", "steps.1.lu.unconstrained_diag", "steps.0.coupling.net.0.weight",
        "steps.2.coupling.net.4.bias"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  // Permutations stay int64 through to().
  flow.to(at::kDouble);
  for (const auto& [name, t] : flow.named_buffers()) {
    EXPECT_EQ(t.scalar_type(), name.find("permutation") != std::string::npos ? at::kLong : at::kDouble) << name;
  }
}

TEST(NeuralSplineFlow, ShapeErrorsNameTheTensor) {
  NeuralSplineFlow flow(small_options(3));
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const ConfigError& e) {
      return e.message();
    }
    return std::string("no ConfigError");
  };
  EXPECT_EQ(message([&] {
              flow.log_prob(at::zeros({4, 4}), at::zeros({4, kStrain}));
            }),
            "NeuralSplineFlow::log_prob: theta: expected shape (B, 3), found [4, 4]");
  EXPECT_EQ(message([&] {
              flow.log_prob(at::zeros({4, 3}), at::zeros({4, 15}));
            }),
            "NeuralSplineFlow::log_prob: strain: expected shape (B, 16), found [4, 15]");
  EXPECT_EQ(message([&] { flow.sample(at::zeros({kStrain}), 3); }),
            "NeuralSplineFlow::sample: strain: expected shape (B, 16), found [16]");
  auto bad = small_options(3);
  bad.linear = "affine";
  EXPECT_EQ(message([&] { NeuralSplineFlow f(bad); }),
            "NeuralSplineFlow: linear: expected one of [lu, permutation], found 'affine'");
  EXPECT_EQ(message([&] {
              flow.set_standardization(at::zeros({3}), at::tensor({1.0, 0.0, 1.0}));
            }),
            "NeuralSplineFlow::set_standardization: expected finite mean and finite std > 0");
}

TEST(NeuralSplineFlow, StandardizationFromDataAndItsLogDet) {
  auto flow = make_flow(2, at::kDouble, "lu", 70);
  auto gen = at::detail::createCPUGenerator(71);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const auto data = at::randn({5000, 2}, gen, opts) * at::tensor({3.0, 0.2}) + at::tensor({10.0, -1.0});
  flow.set_standardization_from(data);
  const auto buffers = flow.named_buffers();
  EXPECT_TRUE(tensor_near(buffers[0].second, data.mean(0), 0, 1e-12));
  EXPECT_TRUE(tensor_near(buffers[1].second, data.std(0, /*unbiased=*/false), 0, 1e-12));
  // Scaling θ by c (mean and std too) divides the density by c^D.
  const auto strain = at::randn({6, kStrain}, gen, opts);
  const auto theta = data.narrow(0, 0, 6);
  const auto before = flow.log_prob(theta, strain);
  flow.set_standardization(data.mean(0) * 4, data.std(0, false) * 4);
  EXPECT_TRUE(tensor_near(flow.log_prob(theta * 4, strain), before - 2 * std::log(4.0), 0, 1e-10));
}

TEST(NeuralSplineFlow, ProjectionFromSvdSpansTheWaveforms) {
  auto o = small_options(2);
  NeuralSplineFlow flow(o);
  auto gen = at::detail::createCPUGenerator(80);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  // Rank-5 "waveforms" in a T = 16 space; n_basis = 8.
  const auto waveforms = at::matmul(at::randn({40, 5}, gen, opts), at::randn({5, kStrain}, gen, opts));
  flow.init_projection_from_svd(waveforms);
  const auto w = flow.named_parameters()[0].second.to(at::kDouble);
  const auto b = flow.named_parameters()[1].second;
  ASSERT_EQ(flow.named_parameters()[0].first, "embedding.projection.weight");
  EXPECT_TRUE(tensor_near(at::matmul(w, w.t()), at::eye(8, opts), 0, 1e-6));
  EXPECT_EQ(b.abs().max().item<double>(), 0.0);
  const auto top = w.narrow(0, 0, 5);
  const auto residual = waveforms - at::matmul(at::matmul(waveforms, top.t()), top);
  EXPECT_LT(residual.norm().item<double>(), 1e-5 * waveforms.norm().item<double>());
  EXPECT_THROW(flow.init_projection_from_svd(waveforms.narrow(0, 0, 7)), ConfigError);
}

// --- importance sampling ----------------------------------------------------------------

TEST(ImportanceSampling, SummaryOfKnownWeights) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto r = summarize_weights(at::zeros({4, 1}), at::log(at::tensor({1.0, 1.0, 0.0, 2.0})));
  EXPECT_TRUE(tensor_near(r.weights, at::tensor({0.25, 0.25, 0.0, 0.5}), 0, 1e-15));
  EXPECT_NEAR(r.ess, 1 / (0.0625 + 0.0625 + 0.25), 1e-12);
  EXPECT_NEAR(r.efficiency, r.ess / 4, 1e-12);
  EXPECT_NEAR(r.log_evidence, 0.0, 1e-12);  // log((1 + 1 + 0 + 2) / 4)
  const auto none = summarize_weights(at::zeros({2, 1}), at::tensor({-inf, -inf}, at::kDouble));
  EXPECT_EQ(none.ess, 0.0);
  EXPECT_EQ(none.log_evidence, -inf);
}

TEST(ImportanceSampling, RecoversTheEvidenceOfAGaussianTarget) {
  // Target: c N(θ; mu, sigma²), so Z = c and the posterior mean is mu.
  const double log_c = 2.5, mu = 1.0, sigma = 0.8;
  auto flow = make_flow(1, at::kDouble, "lu", 90);
  flow.set_standardization(at::tensor({1.3}), at::tensor({1.6}));
  auto gen = at::detail::createCPUGenerator(91);
  const auto strain = at::randn({kStrain}, gen, at::TensorOptions().dtype(at::kDouble));
  auto log_target = [&](const at::Tensor& theta) {
    const auto z = (theta.select(1, 0) - mu) / sigma;
    return log_c - 0.5 * z * z - std::log(sigma * std::sqrt(2 * M_PI));
  };
  const int64_t n = 40000;
  const auto r = importance_sample(flow, strain, n, log_target, gen);
  ASSERT_EQ(r.samples.sizes(), (std::vector<int64_t>{n, 1}));
  EXPECT_GT(r.efficiency, 0.01);  // an untrained proposal; ESS > 400
  EXPECT_LE(r.efficiency, 1.0);
  // Delta-method standard error of log Z-hat: sqrt((n / ESS - 1) / n).
  const double se = std::sqrt((1 / r.efficiency - 1) / static_cast<double>(n));
  std::cout << "[ figures  ] toy IS: log Z " << r.log_evidence << " (exact " << log_c << ", se " << se
            << "), efficiency " << r.efficiency << "\n";
  EXPECT_NEAR(r.log_evidence, log_c, 5 * se) << "se " << se << " efficiency " << r.efficiency;
  const double mean = (r.weights * r.samples.select(1, 0).to(at::kDouble)).sum().item<double>();
  EXPECT_NEAR(mean, mu, 5 * sigma / std::sqrt(r.ess));
}

// --- the toy GW model ---------------------------------------------------------------------

const io::Column& column(const io::Table& t, const std::string& name) {
  for (const auto& c : t.fixed)
    if (c.name == name) return c;
  throw std::runtime_error("no column " + name);
}

at::Tensor f32_tensor(const io::Column& c) {
  const auto& v = std::get<std::vector<float>>(c.data);
  return at::tensor(at::ArrayRef<float>(v)).view(c.shape).to(at::kDouble);
}

// θ (events, 5) in double, drawn as datagen gw draws it.
at::Tensor datagen_theta(const io::datagen::GwOptions& o, uint64_t seed, int64_t events) {
  std::vector<double> theta;
  for (int64_t e = 0; e < events; ++e) {
    auto rng = io::datagen::detail::event_rng(seed, e);
    const double mc = io::datagen::detail::uniform(rng, o.chirp_mass_min, o.chirp_mass_max);
    const double q = io::datagen::detail::uniform(rng, o.mass_ratio_min, o.mass_ratio_max);
    const double d =
        std::cbrt(io::datagen::detail::uniform(rng, std::pow(o.distance_min, 3), std::pow(o.distance_max, 3)));
    const double tc = io::datagen::detail::uniform(rng, o.tc_min, o.tc_max);
    const double phase = io::datagen::detail::uniform(rng, 0, 2 * M_PI);
    theta.insert(theta.end(), {mc, q, d, tc, phase});
  }
  return at::tensor(theta, at::kDouble).view({events, 5});
}

TEST(GwModel, WhitenedTemplateIsTheSignalInDatagenGw) {
  io::datagen::GwOptions o;
  const uint64_t seed = 7;
  const int64_t events = 6;
  const auto table = io::datagen::generate_gw(o, seed, 0, events);
  // The same events with the source 10^15 Mpc away: the same random stream (and so the
  // same noise), a signal ~1e-12 of the original.
  auto far = o;
  far.distance_min = far.distance_max = 1e15;
  const auto noise_table = io::datagen::generate_gw(far, seed, 0, events);
  const auto strain = f32_tensor(column(table, "strain"));
  const auto noise = f32_tensor(column(noise_table, "strain"));
  const auto snr = f32_tensor(column(table, "snr"));
  const auto th = datagen_theta(o, seed, events);
  ASSERT_TRUE(at::equal(th.to(at::kFloat).to(at::kDouble), f32_tensor(column(table, "parameters"))));

  const auto w = gw_whitened_template(th, o);
  EXPECT_TRUE(tensor_near(w, strain - noise, 0, 2e-5));  // float32 strain rounding
  EXPECT_TRUE(tensor_near(w.norm(2, 1), snr, 1e-5, 0));
  std::cout << "[ figures  ] template vs datagen signal: max |diff| "
            << (w - (strain - noise)).abs().max().item<double>() << ", max |w| " << w.abs().max().item<double>()
            << "\n";
  // From the stored (float32) parameters the template is still close.
  const auto w32 = gw_whitened_template(f32_tensor(column(table, "parameters")), o);
  EXPECT_LT(((w32 - w).norm(2, 1) / w.norm(2, 1)).max().item<double>(), 1e-3);
  // The residual looks like whitened noise: variance ~1 (less the window and zeroed
  // low bins), uncorrelated with the template.
  const auto residual = strain - w;
  const auto var = (residual * residual).mean(1);
  EXPECT_GT(var.min().item<double>(), 0.85);
  EXPECT_LT(var.max().item<double>(), 1.05);
  const auto overlap = (residual * w).sum(1) / w.norm(2, 1);
  EXPECT_LT(overlap.abs().max().item<double>(), 4.5);
  // The likelihood prefers the truth to a chirp mass 1 M_sun off.
  auto shifted = th.clone();
  shifted.select(1, 0).add_(1.0);
  for (int64_t e = 0; e < events; ++e) {
    const auto l_true = gw_log_likelihood(th[e].unsqueeze(0), strain[e], o).item<double>();
    const auto l_off = gw_log_likelihood(shifted[e].unsqueeze(0), strain[e], o).item<double>();
    EXPECT_GT(l_true - l_off, 10.0) << "event " << e << " snr " << snr[e].item<double>();
    EXPECT_NEAR(l_true, -0.5 * var[e].item<double>() * 2048 - 1024 * std::log(2 * M_PI), 1e-6);
  }
}

// Fresh noise (DINGO): each stored signal keeps its θ and takes another event's noise. The
// expectation comes from datagen itself: the same events generated far away are the noise.
TEST(GwModel, FreshNoisePairsEachSignalWithAnotherEventsNoise) {
  io::datagen::GwOptions o;
  const uint64_t seed = 9;
  const int64_t events = 5;
  auto far = o;
  far.distance_min = far.distance_max = 1e15;
  const auto table = io::datagen::generate_gw(o, seed, 0, events);
  const auto strain = f32_tensor(column(table, "strain"));
  const auto signal = f32_tensor(column(table, "signal"));
  const auto noise = f32_tensor(column(io::datagen::generate_gw(far, seed, 0, events), "strain"));
  // The stored signal is the template of the true θ.
  EXPECT_TRUE(tensor_near(signal, gw_whitened_template(datagen_theta(o, seed, events), o), 0, 2e-6));
  const auto permutation = at::tensor(std::vector<int64_t>{3, 0, 4, 1, 2}, at::kLong);
  EXPECT_TRUE(tensor_near(repair_noise(signal, strain, permutation), signal + noise.index_select(0, permutation), 0,
                          2e-5));
  EXPECT_TRUE(tensor_near(repair_noise(signal, strain, at::arange(events, at::kLong)), strain, 0, 1e-6));
  EXPECT_THROW(repair_noise(signal.narrow(1, 0, 1024), strain, permutation), ConfigError);

  // The model re-pairs in training only, with a permutation from torch's global generator.
  auto options = small_options(5);
  options.strain_length = o.length;
  NsfModel model(options);
  const auto th = datagen_theta(o, seed, events).to(at::kFloat);
  model.flow().set_standardization_from(th);
  model.set_fresh_noise(true);
  const Inputs inputs{{"theta", th}, {"strain", strain.to(at::kFloat)}, {"signal", signal.to(at::kFloat)}};
  at::manual_seed(123);
  const auto trained = model.forward(inputs);
  EXPECT_TRUE(trained.requires_grad());  // the re-pairing is outside autograd, the flow is not
  at::manual_seed(123);
  const auto expected_permutation = at::randperm(events, at::kLong);
  const auto expected =
      model.flow().log_prob(th, repair_noise(signal, strain, expected_permutation).to(at::kFloat));
  EXPECT_TRUE(tensor_near(trained, expected, 0, 1e-5));
  const auto plain = model.flow().log_prob(th, strain.to(at::kFloat));
  EXPECT_FALSE(tensor_near(trained, plain, 0, 1e-5));
  EXPECT_THROW(model.forward(Inputs{{"theta", th}, {"strain", strain.to(at::kFloat)}}), ConfigError);  // no signal
  model.set_training(false);
  EXPECT_TRUE(at::equal(model.forward(inputs), plain));
}

TEST(GwModel, PriorDensityAndSupport) {
  const GwPrior prior;
  const double inside = -std::log(30.0) - std::log(0.75) + std::log(3 * 1000.0 * 1000.0 / (2.7e10 - 2.7e7)) -
                        std::log(0.6) - std::log(2 * M_PI);
  const auto theta = at::tensor({20.0, 0.5, 1000.0, 1.5, 1.0,  //
                                 9.0,  0.5, 1000.0, 1.5, 1.0,  //
                                 20.0, 0.2, 1000.0, 1.5, 1.0,  //
                                 20.0, 0.5, 3001.0, 1.5, 1.0,  //
                                 20.0, 0.5, 1000.0, 1.9, 1.0,  //
                                 20.0, 0.5, 1000.0, 1.5, 6.3},
                                at::kDouble)
                         .view({6, 5});
  const auto lp = prior.log_prob(theta);
  EXPECT_NEAR(lp[0].item<double>(), inside, 1e-12);
  for (int i = 1; i < 6; ++i) EXPECT_EQ(lp[i].item<double>(), -std::numeric_limits<double>::infinity()) << i;
  // Distance is uniform in volume: the median of d³ sits at the middle of [300³, 3000³].
  auto gen = at::detail::createCPUGenerator(3);
  const auto draws = prior.sample(20000, gen);
  EXPECT_TRUE(at::isfinite(prior.log_prob(draws)).all().item<bool>());
  const double median_d3 = at::pow(draws.select(1, 2), 3).median().item<double>();
  EXPECT_NEAR(median_d3 / ((2.7e10 + 2.7e7) / 2), 1.0, 0.03);
}

// The strain (T,) of datagen gw's first event of `seed`.
at::Tensor event_strain(const io::datagen::GwOptions& o, uint64_t seed) {
  return f32_tensor(column(io::datagen::generate_gw(o, seed, 0, 1), "strain"))[0];
}

// An untrained small flow of the first `dims` GW parameters, standardised on prior draws.
NeuralSplineFlow small_gw_flow(const io::datagen::GwOptions& o, int64_t dims, at::Generator& gen) {
  auto options = small_options(dims);
  options.strain_length = o.length;
  NeuralSplineFlow flow(options);
  flow.set_standardization_from(GwPrior(o).sample(20000, gen).narrow(1, 0, dims));
  return flow;
}

TEST(GwModel, ImportanceSamplingReportsEfficiencyAndEvidence) {
  io::datagen::GwOptions o;
  const auto strain = event_strain(o, 11);
  auto gen = at::detail::createCPUGenerator(12);
  auto flow = small_gw_flow(o, 5, gen);
  const int64_t n = 400;
  const auto r = gw_importance_sample(flow, strain, n, o, gen);
  ASSERT_EQ(r.samples.sizes(), (std::vector<int64_t>{n, 5}));
  const auto in_prior = at::isfinite(GwPrior(o).log_prob(r.samples));
  ASSERT_GT(in_prior.sum().item<int64_t>(), 0);
  EXPECT_TRUE(at::equal(at::isfinite(r.log_weights), in_prior));  // weight 0 exactly outside the prior
  EXPECT_TRUE(std::isfinite(r.log_evidence));
  EXPECT_GT(r.efficiency, 0.0);
  EXPECT_LE(r.efficiency, 1.0);
  EXPECT_NEAR(r.weights.sum().item<double>(), 1.0, 1e-12);
  std::cout << "[ figures  ] GW IS (untrained flow, n = " << n << "): efficiency " << r.efficiency << ", log Z "
            << r.log_evidence << "\n";
}

// What phase marginalisation rests on: the template at any phase is cos φ w(0) + sin φ w(π/2).
TEST(GwModel, WaveformIsLinearInCosAndSinOfThePhase) {
  io::datagen::GwOptions o;
  auto gen = at::detail::createCPUGenerator(21);
  const auto theta = GwPrior(o).sample(8, gen);
  auto at_phase = [&](const at::Tensor& phase) {
    auto t = theta.clone();
    t.select(1, 4).copy_(phase);
    return gw_whitened_template(t, o);
  };
  const auto a = at_phase(at::zeros({8}, at::kDouble)), b = at_phase(at::full({8}, M_PI / 2, at::kDouble));
  const auto phase = theta.select(1, 4).unsqueeze(1);
  const auto direct = gw_whitened_template(theta, o);
  const auto combined = phase.cos() * a + phase.sin() * b;
  EXPECT_LT((direct - combined).abs().max().item<double>(), 1e-9 * direct.abs().max().item<double>());
  EXPECT_GT((direct - a).abs().max().item<double>(), 0.1 * direct.abs().max().item<double>());  // the phase matters
}

// The phase draws against the conditional computed independently: gw_log_likelihood with the
// phase in θ at every cell centre, normalised over the grid.
TEST(GwModel, PhaseDrawsFollowTheExactConditionalOnAGrid) {
  io::datagen::GwOptions o;
  const uint64_t seed = 11;
  const auto table = io::datagen::generate_gw(o, seed, 0, 1);
  const auto strain = f32_tensor(column(table, "strain"))[0];
  const auto truth = datagen_theta(o, seed, 1);
  // Two different θ₄ in one call: the truth, and a chirp mass 0.05 M_sun off.
  const int64_t n = 4000, cells = 256;
  auto theta4 = truth.narrow(1, 0, 4).repeat({n, 1});
  theta4.narrow(0, n / 2, n / 2).select(1, 0).add_(0.05);
  auto gen = at::detail::createCPUGenerator(22);
  const auto draws = gw_draw_phase(theta4, strain, o, cells, gen);
  ASSERT_EQ(draws.phase.sizes(), (std::vector<int64_t>{n}));
  EXPECT_GE(draws.phase.min().item<double>(), 0.0);
  EXPECT_LT(draws.phase.max().item<double>(), 2 * M_PI);
  const double h = 2 * M_PI / cells;
  auto reference = [&](const at::Tensor& row4) {  // log density per cell, from full templates
    auto grid = row4.unsqueeze(0).repeat({cells, 1});
    const auto centres = (at::arange(cells, at::kDouble) + 0.5) * h;
    const auto l = gw_log_likelihood(at::cat({grid, centres.unsqueeze(1)}, 1), strain, o);
    return l - at::logsumexp(l, 0) - std::log(h);
  };
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t begin = half * (n / 2);
    const auto log_density = reference(theta4[begin]);
    const auto phase = draws.phase.narrow(0, begin, n / 2);
    const auto cell = (phase / h).floor().to(at::kLong);
    EXPECT_TRUE(tensor_near(draws.log_prob.narrow(0, begin, n / 2), log_density.index_select(0, cell), 1e-8, 1e-8))
        << "half " << half;
    // The draws' distribution: KS against the grid's piecewise-linear CDF (p = 0.001 band).
    const auto cdf = at::cat({at::zeros({1}, at::kDouble), (log_density.exp() * h).cumsum(0)});
    const auto sorted = std::get<0>(phase.sort());
    const auto k = (sorted / h).floor().to(at::kLong);
    const auto model_cdf = cdf.index_select(0, k) + (sorted / h - k.to(at::kDouble)) * (log_density.exp() * h).index_select(0, k);
    const auto empirical = (at::arange(n / 2, at::kDouble) + 1) / static_cast<double>(n / 2);
    const double ks = std::max((model_cdf - empirical).abs().max().item<double>(),
                               (model_cdf - (empirical - 1.0 / static_cast<double>(n / 2))).abs().max().item<double>());
    EXPECT_LT(ks, 1.95 / std::sqrt(static_cast<double>(n / 2))) << "half " << half;
    // The likelihood at each drawn phase, against gw_log_likelihood of the full θ (a sample).
    const auto some = at::arange(begin, begin + n / 2, 997, at::kLong);
    const auto full = at::cat({theta4.index_select(0, some), draws.phase.index_select(0, some).unsqueeze(1)}, 1);
    EXPECT_TRUE(tensor_near(draws.log_likelihood.index_select(0, some), gw_log_likelihood(full, strain, o), 1e-8, 1e-6));
  }
  // At the true θ₄ the phase is pinned near its true value (SNR ~ 10 or more: width ~0.1 rad).
  const auto truth_phase = truth[0][4].item<double>();
  const auto first = draws.phase.narrow(0, 0, n / 2);
  const double mean_cos = (first - truth_phase).cos().mean().item<double>();
  EXPECT_GT(mean_cos, 0.9) << "draws not concentrated at the true phase " << truth_phase;
  std::cout << "[ figures  ] phase draws at the true θ₄: E[cos(φ - φ_true)] " << mean_cos << "\n";
  EXPECT_THROW(gw_draw_phase(truth, strain, o, cells, gen), ConfigError);  // θ with 5 columns
}

// A 4-parameter flow: samples carry a fifth column, the phase, and the weights are the full
// target (prior and gw_log_likelihood of all five, recomputed here) over q(θ₄) p(φ | θ₄).
TEST(GwModel, PhaseMarginalisedImportanceSamplingKeepsTheFullTarget) {
  io::datagen::GwOptions o;
  const auto strain = event_strain(o, 13);
  auto gen = at::detail::createCPUGenerator(14);
  auto flow = small_gw_flow(o, 4, gen);
  const int64_t n = 300;
  const auto r = gw_importance_sample(flow, strain, n, o, gen);
  ASSERT_EQ(r.samples.sizes(), (std::vector<int64_t>{n, 5}));
  const auto prior = GwPrior(o).log_prob(r.samples);
  const auto inside = at::nonzero(at::isfinite(prior)).squeeze(1);
  ASSERT_GT(inside.numel(), 10);
  EXPECT_TRUE(at::equal(at::isfinite(r.log_weights), at::isfinite(prior)));
  const auto th = r.samples.index_select(0, inside);
  const auto target = prior.index_select(0, inside) + gw_log_likelihood(th, strain, o);
  EXPECT_TRUE(tensor_near(r.log_weights.index_select(0, inside), target - r.log_prob.index_select(0, inside), 1e-6, 1e-6));
  // log_prob = log q(θ₄) + log p(φ | θ₄): the phase part of two draws from a direct grid.
  at::NoGradGuard no_grad;
  const auto log_q4 = flow.log_prob(th.narrow(1, 0, 4).to(flow.dtype()), strain.unsqueeze(0).expand({th.size(0), -1}).to(flow.dtype()))
                          .to(at::kDouble);
  const double h = 2 * M_PI / kPhaseCells;
  for (int64_t i : {int64_t{0}, inside.numel() - 1}) {
    auto grid = th[i].unsqueeze(0).repeat({kPhaseCells, 1});
    grid.select(1, 4).copy_((at::arange(kPhaseCells, at::kDouble) + 0.5) * h);
    const auto l = gw_log_likelihood(grid, strain, o);
    const auto cell = static_cast<int64_t>(std::floor(th[i][4].item<double>() / h));
    const double log_phase = (l[cell] - at::logsumexp(l, 0)).item<double>() - std::log(h);
    EXPECT_NEAR(r.log_prob[inside[i]].item<double>() - log_q4[i].item<double>(), log_phase, 2e-3) << "draw " << i;
  }
  EXPECT_NEAR(r.weights.sum().item<double>(), 1.0, 1e-12);
}

// The time aligner against independent expectations: strains that are the reference's own
// waveform merging k samples later (built by gw_whitened_template, not by a roll) give
// t̂ = t_c; a noisy strain's lag equals the argmax of a direct dot product at every lag.
TEST(GwModel, TimeAlignerFindsTheMergerAndRollsTheStrain) {
  io::datagen::GwOptions o;
  const auto [reference, window] = gw_time_reference(o);
  ASSERT_EQ(reference.sizes(), (std::vector<int64_t>{2, o.length}));
  const TimeAligner aligner(reference, window);
  const double t_ref = 0.5 * (o.tc_min + o.tc_max);
  const std::vector<int64_t> shifts{-300, -17, 0, 5, 299};
  std::vector<double> rows;
  for (size_t i = 0; i < shifts.size(); ++i) {
    rows.insert(rows.end(), {25.0, 0.625, 600.0, t_ref + static_cast<double>(shifts[i]) / o.sample_rate, 0.7 * i});
  }
  const auto theta = at::tensor(rows, at::kDouble).view({-1, 5});
  auto gen = at::detail::createCPUGenerator(31);
  const auto strain = gw_whitened_template(theta, o) + at::randn({theta.size(0), o.length}, gen, at::kDouble);
  const auto a = aligner.align(strain.to(at::kFloat));
  EXPECT_TRUE(tensor_near(a.t_hat, theta.select(1, 3), 0, 0.5 / o.sample_rate)) << a.t_hat;
  // The roll: aligned[t] = d[t + τ], τ = (t̂ - t_ref) f_s.
  for (int64_t e = 0; e < theta.size(0); ++e) {
    const auto tau = static_cast<int64_t>(std::llround((a.t_hat[e].item<double>() - t_ref) * o.sample_rate));
    const auto index = at::remainder(at::arange(o.length, at::kLong) + tau, o.length);
    EXPECT_TRUE(at::equal(a.aligned[e], strain[e].to(at::kFloat).index_select(0, index))) << "event " << e;
  }
  // A quiet event of another chirp mass: the lag is the direct argmax of the power.
  const auto quiet = at::tensor({14.0, 0.4, 2500.0, 1.33, 2.0}, at::kDouble).view({1, 5});
  const auto d = gw_whitened_template(quiet, o)[0] + at::randn({o.length}, gen, at::kDouble);
  const auto lo = static_cast<int64_t>(std::floor((o.tc_min - t_ref - 0.1) * o.sample_rate));
  const auto hi = static_cast<int64_t>(std::ceil((o.tc_max - t_ref + 0.1) * o.sample_rate));
  int64_t best = lo;
  double best_power = -1;
  for (int64_t tau = lo; tau <= hi; ++tau) {
    const auto rolled = d.index_select(0, at::remainder(at::arange(o.length, at::kLong) + tau, o.length));
    const double p0 = rolled.dot(reference[0]).item<double>(), p1 = rolled.dot(reference[1]).item<double>();
    if (p0 * p0 + p1 * p1 > best_power) best_power = p0 * p0 + p1 * p1, best = tau;
  }
  EXPECT_NEAR(aligner.align(d.unsqueeze(0)).t_hat[0].item<double>(), t_ref + static_cast<double>(best) / o.sample_rate,
              1e-12);
  EXPECT_THROW(aligner.align(d), ConfigError);  // (T,) is not (B, T)
}

// The model with time alignment: the flow sees (t_c − t̂, aligned strain), and importance
// sampling adds t̂ back: log q of each draw is the flow's log_prob of exactly that pair.
TEST(GwModel, AlignedModelProposesTcAroundItsEstimate) {
  io::datagen::GwOptions o;
  const uint64_t seed = 17;
  const auto table = io::datagen::generate_gw(o, seed, 0, 4);
  const auto strain = f32_tensor(column(table, "strain"));
  const auto theta = datagen_theta(o, seed, 4);
  auto options = small_options(5);
  options.strain_length = o.length;
  NsfModel model(options, /*marginalize_phase=*/false, /*align_time=*/true);
  const auto names = model.named_buffers();
  ASSERT_EQ(names[names.size() - 2].first, "time_reference");
  ASSERT_EQ(names.back().first, "time_window");
  auto gen = at::detail::createCPUGenerator(18);
  const auto prior_theta = GwPrior(o).sample(200, gen);
  prepare_gw_flow(model, prior_theta, gw_whitened_template(prior_theta.narrow(0, 0, 20), o), 20, o);
  const auto [flow_theta, flow_strain] = model.flow_inputs(theta.to(at::kFloat), strain.to(at::kFloat));
  const auto t_hat = model.aligner().align(strain).t_hat;
  EXPECT_TRUE(tensor_near(flow_theta.select(1, 3).to(at::kDouble), theta.select(1, 3) - t_hat, 0, 1e-6));
  EXPECT_TRUE(tensor_near(flow_theta.narrow(1, 0, 3).to(at::kDouble), theta.narrow(1, 0, 3), 1e-6, 0));
  const auto aligner = model.aligner();
  const auto r = gw_importance_sample(model.flow(), strain[0], 200, o, gen, &aligner);
  at::NoGradGuard no_grad;
  auto relative = r.samples.clone();
  relative.select(1, 3).sub_(t_hat[0]);
  const auto expected = model.flow().log_prob(relative.to(at::kFloat),
                                              flow_strain[0].unsqueeze(0).expand({200, -1}).to(at::kFloat));
  EXPECT_TRUE(tensor_near(r.log_prob, expected.to(at::kDouble), 1e-4, 1e-3));
  const auto prior = GwPrior(o).log_prob(r.samples);
  const auto inside = at::nonzero(at::isfinite(prior)).squeeze(1);
  ASSERT_GT(inside.numel(), 0);
  const auto target = prior.index_select(0, inside) + gw_log_likelihood(r.samples.index_select(0, inside), strain[0], o);
  EXPECT_TRUE(tensor_near(r.log_weights.index_select(0, inside), target - r.log_prob.index_select(0, inside), 1e-9, 1e-6));
}

}  // namespace
}  // namespace hpcml::models::flows
