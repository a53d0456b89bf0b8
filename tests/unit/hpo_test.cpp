// The hpo algorithms (issue 27): search-space parsing and its errors, the grid, random and TPE
// samplers, the Parzen estimator, and ASHA. Every expectation is computed independently of the
// code under test: by hand in the comments, by nested loops, or by direct formulas.
#include "hpo/hpo.hpp"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "hpo/detail/math.hpp"

namespace {

using hpcml::hpo::AshaDecision;
using hpcml::hpo::Direction;
using hpcml::hpo::Params;
using hpcml::hpo::ParamSpec;
using hpcml::hpo::ParamType;
using hpcml::hpo::Rng;
using hpcml::hpo::SearchSpace;
using hpcml::hpo::TrialRecord;
using hpcml::hpo::TrialState;

SearchSpace space_from(const std::string& yaml) { return SearchSpace::from_yaml(YAML::Load(yaml)); }

// Phi(x) straight from the C library, as the independent reference.
double phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2 * M_PI); }

double get_double(const Params& p, const std::string& key) { return std::get<double>(p.at(key)); }

// ---------------------------------------------------------------- search space

constexpr const char* kMixedSpace = R"(
optimizer.name: {type: categorical, choices: [adam, sgd]}
optimizer.momentum: {type: uniform, low: 0.0, high: 0.9, when: {optimizer.name: sgd}, grid_points: 3}
optimizer.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1, grid_points: 3}
model.width: {type: int, low: 1, high: 3}
)";

TEST(HpoSpace, ParsesTypesBoundsAndConditionsParentsFirst) {
  const SearchSpace space = space_from(kMixedSpace);
  std::vector<std::string> keys;
  for (const auto& p : space.params()) keys.push_back(p.key);
  // Sorted by key, except that the conditional momentum comes after its parent.
  EXPECT_EQ(keys, (std::vector<std::string>{"model.width", "optimizer.lr", "optimizer.name", "optimizer.momentum"}));
  const ParamSpec& lr = space.param("optimizer.lr");
  EXPECT_EQ(lr.type, ParamType::kLogUniform);
  EXPECT_TRUE(lr.log);
  EXPECT_DOUBLE_EQ(lr.low, 1e-3);
  EXPECT_EQ(space.param("optimizer.name").choices, (std::vector<std::string>{"adam", "sgd"}));
  ASSERT_TRUE(space.param("optimizer.momentum").condition.has_value());
  EXPECT_EQ(space.param("optimizer.momentum").condition->parent, "optimizer.name");
  EXPECT_TRUE(space.is_active(space.param("optimizer.momentum"), Params{{"optimizer.name", std::string("sgd")}}));
  EXPECT_FALSE(space.is_active(space.param("optimizer.momentum"), Params{{"optimizer.name", std::string("adam")}}));
}

TEST(HpoSpace, CheckAndJsonRoundTrip) {
  const SearchSpace space = space_from(kMixedSpace);
  const Params good{{"optimizer.name", std::string("sgd")},
                    {"optimizer.momentum", 0.5},
                    {"optimizer.lr", 0.01},
                    {"model.width", std::int64_t{2}}};
  EXPECT_NO_THROW(space.check(good));
  EXPECT_EQ(space.params_from_json(SearchSpace::to_json(good)), good);
  Params inactive = good;
  inactive["optimizer.name"] = std::string("adam");  // momentum is now set but inactive
  EXPECT_THROW(space.check(inactive), hpcml::Error);
  Params missing = good;
  missing.erase("optimizer.momentum");
  EXPECT_THROW(space.check(missing), hpcml::Error);
  Params out_of_bounds = good;
  out_of_bounds["model.width"] = std::int64_t{4};
  EXPECT_THROW(space.check(out_of_bounds), hpcml::Error);
}

// Each bad space: the one-line message, and the key it must name.
struct BadSpace {
  const char* yaml;
  const char* key;
};

TEST(HpoSpace, BadConfigsGiveOneLineErrorsNamingTheKey) {
  try {
    space_from("optimizer.lr: {type: loguniform, low: 0.1, high: 0.01}");
    FAIL() << "low >= high accepted";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_EQ(e.message(), "config error: key 'hpo.space.optimizer.lr': expected low < high, found 0.1 >= 0.01");
  }
  const BadSpace cases[] = {
      {"a: {type: normal, low: 0, high: 1}", "'hpo.space.a.type'"},
      {"a: {low: 0, high: 1}", "'hpo.space.a.type'"},
      {"a: {type: uniform, low: 0}", "'hpo.space.a.high'"},
      {"a: {type: uniform, low: x, high: 1}", "'hpo.space.a.low'"},
      {"a: {type: loguniform, low: 0, high: 1}", "'hpo.space.a.low'"},
      {"a: {type: int, low: 0.5, high: 4}", "'hpo.space.a.low'"},
      {"a: {type: int, low: 0, high: 4, log: true}", "'hpo.space.a.low'"},
      {"a: {type: uniform, low: 0, high: 1, log: true}", "'hpo.space.a.log'"},
      {"a: {type: uniform, low: 0, high: 1, grid_points: 1}", "'hpo.space.a.grid_points'"},
      {"a: {type: uniform, low: 0, high: 1, step: 2}", "'hpo.space.a.step'"},
      {"a: {type: categorical, choices: []}", "'hpo.space.a.choices'"},
      {"a: {type: categorical, choices: [x, x]}", "'hpo.space.a.choices'"},
      {"a: {type: categorical, choices: [x], low: 1}", "'hpo.space.a.low'"},
      {"a: {type: uniform, low: 0, high: 1, when: {b: x}}", "'hpo.space.a.when'"},
      {"b: {type: uniform, low: 0, high: 1}\na: {type: uniform, low: 0, high: 1, when: {b: x}}", "'hpo.space.a.when'"},
      {"b: {type: categorical, choices: [x]}\na: {type: uniform, low: 0, high: 1, when: {b: y}}",
       "'hpo.space.a.when.b'"},
      {"a: {type: categorical, choices: [x], when: {b: x}}\nb: {type: categorical, choices: [x], when: {a: x}}",
       "'hpo.space.a.when'"},
      {"a: 3", "'hpo.space.a'"},
      {"[1, 2]", "'hpo.space'"},
  };
  for (const auto& c : cases) {
    try {
      space_from(c.yaml);
      ADD_FAILURE() << "accepted: " << c.yaml;
    } catch (const hpcml::ConfigError& e) {
      EXPECT_NE(e.message().find(c.key), std::string::npos) << c.yaml << " -> " << e.message();
      EXPECT_EQ(e.message().find('\n'), std::string::npos) << e.message();
      EXPECT_EQ(e.message().rfind("config error", 0), 0u) << e.message();
    }
  }
}

TEST(HpoSpace, NumericChoicesAreStringsAndNamesAreChecked) {
  const SearchSpace space = space_from("batch: {type: categorical, choices: [32, 64, '1e3']}");
  EXPECT_EQ(space.param("batch").choices, (std::vector<std::string>{"32", "64", "1e3"}));
  EXPECT_EQ(hpcml::hpo::parse_direction("maximize"), Direction::kMaximize);
  try {
    hpcml::hpo::parse_direction("max");
    FAIL() << "direction 'max' accepted";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_EQ(e.message(), "config error: key 'hpo.direction': expected one of [minimize, maximize], found 'max'");
  }
  hpcml::hpo::SamplerOptions options;
  for (const char* name : {"grid", "random", "tpe"}) {
    options.name = name;
    EXPECT_STREQ(hpcml::hpo::make_sampler(space, options)->name(), name);
  }
  options.name = "bayes";
  try {
    hpcml::hpo::make_sampler(space, options);
    FAIL() << "sampler 'bayes' accepted";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("key 'hpo.sampler'"), std::string::npos) << e.message();
  }
}

// ---------------------------------------------------------------- grid

// A canonical text of a point, doubles to 10 significant digits, for set comparisons.
std::string canonical(const Params& p) {
  std::string out;
  for (const auto& item : p) {
    char buf[64];
    if (const auto* d = std::get_if<double>(&item.second)) {
      std::snprintf(buf, sizeof buf, "%.10g", *d);
    } else {
      std::snprintf(buf, sizeof buf, "%s", hpcml::hpo::to_string(item.second).c_str());
    }
    out += item.first + "=" + buf + ";";
  }
  return out;
}

TEST(HpoGrid, EnumeratesExactlyTheConditionalProduct) {
  const hpcml::hpo::GridSampler grid(space_from(kMixedSpace));
  // By hand: width {1,2,3} x lr {1e-3, 1e-2, 1e-1} x (adam + sgd x momentum {0, 0.45, 0.9}).
  std::set<std::string> expected;
  for (std::int64_t width : {1, 2, 3}) {
    for (double lr : {1e-3, 1e-2, 1e-1}) {
      expected.insert(
          canonical({{"model.width", width}, {"optimizer.lr", lr}, {"optimizer.name", std::string("adam")}}));
      for (double m : {0.0, 0.45, 0.9}) {
        expected.insert(canonical({{"model.width", width},
                                   {"optimizer.lr", lr},
                                   {"optimizer.name", std::string("sgd")},
                                   {"optimizer.momentum", m}}));
      }
    }
  }
  ASSERT_EQ(expected.size(), 36u);
  std::set<std::string> got;
  for (const auto& p : grid.points()) got.insert(canonical(p));
  EXPECT_EQ(grid.points().size(), 36u);  // no duplicates either
  EXPECT_EQ(got, expected);
  // The first parameter in space order (model.width) varies slowest.
  EXPECT_EQ(std::get<std::int64_t>(grid.points().front().at("model.width")), 1);
  EXPECT_EQ(std::get<std::int64_t>(grid.points().back().at("model.width")), 3);
}

TEST(HpoGrid, AskSkipsTakenPointsInOrderThenRunsOut) {
  const SearchSpace space = space_from(kMixedSpace);
  const hpcml::hpo::GridSampler grid(space);
  const hpcml::hpo::GridSampler again(space);
  EXPECT_EQ(grid.points(), again.points());  // deterministic order
  std::vector<TrialRecord> history;
  Rng rng(1);
  const TrialState states[] = {TrialState::kRunning, TrialState::kComplete, TrialState::kFailed, TrialState::kPruned};
  for (std::size_t i = 0; i < grid.points().size(); ++i) {
    const auto p = grid.ask(history, rng);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(*p, grid.points()[i]);
    history.push_back({static_cast<std::int64_t>(i), states[i % 4], *p, 1.0, 0});
  }
  EXPECT_FALSE(grid.ask(history, rng).has_value());
}

TEST(HpoGrid, FloatWithoutGridPointsIsAConfigErrorNamingTheKey) {
  try {
    hpcml::hpo::GridSampler grid(space_from("x: {type: uniform, low: 0, high: 1}"));
    FAIL() << "grid over a float without grid_points";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("'hpo.space.x'"), std::string::npos) << e.message();
  }
}

// ---------------------------------------------------------------- random

TEST(HpoRandom, LogUniformIsUniformInLogSpace) {
  const SearchSpace space = space_from("lr: {type: loguniform, low: 1.0e-4, high: 1.0}");
  const hpcml::hpo::RandomSampler sampler(space);
  Rng rng(42);
  const int n = 10000;
  std::vector<double> u;
  for (int i = 0; i < n; ++i) {
    const double x = get_double(*sampler.ask({}, rng), "lr");
    ASSERT_GE(x, 1e-4);
    ASSERT_LE(x, 1.0);
    u.push_back((std::log10(x) + 4) / 4);  // uniform on [0, 1) if log-uniform
  }
  std::sort(u.begin(), u.end());
  EXPECT_NEAR(u[n / 2], 0.5, 0.02);  // median of log10 x near -2
  double ks = 0;                     // Kolmogorov-Smirnov distance to U(0, 1)
  for (int i = 0; i < n; ++i) ks = std::max({ks, std::abs(u[i] - double(i) / n), std::abs(u[i] - double(i + 1) / n)});
  EXPECT_LT(ks, 1.63 / std::sqrt(double(n)));  // the 1% critical value
}

TEST(HpoRandom, IntsAndChoicesCoverTheirRangeEvenly) {
  const SearchSpace space = space_from(R"(
die: {type: int, low: 1, high: 6}
wide: {type: int, low: 1, high: 1000, log: true}
kind: {type: categorical, choices: [a, b, c]}
extra: {type: uniform, low: -1, high: 1, when: {kind: [b, c]}}
)");
  Rng rng(7);
  const int n = 6000;
  std::map<std::int64_t, int> die;
  std::map<std::string, int> kind;
  int wide_below_32 = 0;
  for (int i = 0; i < n; ++i) {
    const Params p = hpcml::hpo::RandomSampler::sample(space, rng);
    space.check(p);  // bounds, types, and extra present iff kind is b or c
    ++die[std::get<std::int64_t>(p.at("die"))];
    ++kind[std::get<std::string>(p.at("kind"))];
    wide_below_32 += std::get<std::int64_t>(p.at("wide")) < 32;
  }
  ASSERT_EQ(die.size(), 6u);
  for (const auto& item : die) EXPECT_NEAR(item.second, n / 6.0, n / 6.0 * 0.12) << "face " << item.first;
  for (const auto& item : kind) EXPECT_NEAR(item.second, n / 3.0, n / 3.0 * 0.1) << item.first;
  // Log scale: P(wide < 32) = P(x < 31.5) = log(31.5/0.5) / log(1000.5/0.5) ~ 0.545 (uniform: 0.031).
  EXPECT_NEAR(double(wide_below_32) / n, std::log(31.5 / 0.5) / std::log(1000.5 / 0.5), 0.03);
}

TEST(HpoRandom, ReproducibleFromItsSeed) {
  const SearchSpace space = space_from(kMixedSpace);
  const hpcml::hpo::RandomSampler sampler(space);
  const auto draw = [&](std::uint64_t seed) {
    Rng rng(seed);
    std::vector<Params> out;
    for (int i = 0; i < 50; ++i) out.push_back(*sampler.ask({}, rng));
    return out;
  };
  EXPECT_EQ(draw(3), draw(3));
  EXPECT_NE(draw(3), draw(4));
}

// ---------------------------------------------------------------- numerics and Parzen estimator

TEST(HpoMath, InverseNormalCdfAndTailMasses) {
  // Up to 5 only: above, Phi(x) rounds to within 1e-16 of 1 and x is no longer determined by it.
  for (double x = -8; x <= 5; x += 0.25) EXPECT_NEAR(hpcml::hpo::detail::ndtri(phi(x)), x, 1e-7 * (1 + std::abs(x)));
  // Masses in the right tail, where 1 - Phi loses all digits: erfc of positive arguments is exact.
  const double direct = std::log(0.5 * std::erfc(10 / std::sqrt(2.0)) - 0.5 * std::erfc(11 / std::sqrt(2.0)));
  EXPECT_NEAR(hpcml::hpo::detail::log_normal_mass(10, 11), direct, 1e-9);
  EXPECT_NEAR(hpcml::hpo::detail::log_normal_mass(-11, -10), direct, 1e-9);
  EXPECT_NEAR(hpcml::hpo::detail::log_normal_mass(-1, 2), std::log(phi(2) - phi(-1)), 1e-12);
  // Far tails stay finite (erfc underflows there): log Phi(-40) ~ -800 - log(40 sqrt(2 pi)).
  EXPECT_NEAR(hpcml::hpo::detail::log_ndtr(-40), -800 - std::log(40 * std::sqrt(2 * M_PI)), 1e-3);
}

ParamSpec numeric(ParamType type, double low, double high, bool log = false) {
  ParamSpec p;
  p.key = "x";
  p.type = type;
  p.low = low;
  p.high = high;
  p.log = log || type == ParamType::kLogUniform;
  return p;
}

TEST(HpoParzen, MixtureMatchesAHandComputedValue) {
  // Observations 10, 20, 70 on [0, 100]; the prior kernel sits at 50 with sigma 100.
  // Sorted with the ends of the range: 0 | 10 20 70 | 100. Bandwidths: 10 (the smallest takes
  // the gap to its inner neighbour), 20: max(10, 50) = 50, 70 (the largest: gap to 20) = 50;
  // the magic clip raises them to at least 100 / min(100, 3 + 2) = 20. Weights 1/4 each.
  const ParamSpec spec = numeric(ParamType::kUniform, 0, 100);
  const hpcml::hpo::ParzenEstimator pe(spec, {10, 20, 70});
  EXPECT_EQ(pe.mus(), (std::vector<double>{10, 20, 70, 50}));
  EXPECT_EQ(pe.sigmas(), (std::vector<double>{20, 50, 50, 100}));
  const double mus[] = {10, 20, 70, 50}, sigmas[] = {20, 50, 50, 100};
  double expected = 0;
  for (int k = 0; k < 4; ++k) {
    const double z = (40 - mus[k]) / sigmas[k];
    expected += 0.25 * normal_pdf(z) / sigmas[k] / (phi((100 - mus[k]) / sigmas[k]) - phi((0 - mus[k]) / sigmas[k]));
  }
  EXPECT_NEAR(std::exp(pe.log_pdf(40)), expected, 1e-12);
  EXPECT_EQ(pe.log_pdf(-1), -INFINITY);

  // Categorical, choices {a, b, c}, observed a, a, b: 4 kernels of weight 1/4; each observed
  // kernel puts 1/4 on every choice plus 1 on its own, normalised by 1.75; the prior is uniform.
  ParamSpec cat;
  cat.type = ParamType::kCategorical;
  cat.choices = {"a", "b", "c"};
  const hpcml::hpo::ParzenEstimator pc(cat, {0, 0, 1});
  const double pa = 0.25 * (2 * 1.25 / 1.75 + 0.25 / 1.75) + 0.25 / 3;
  const double pb = 0.25 * (2 * 0.25 / 1.75 + 1.25 / 1.75) + 0.25 / 3;
  EXPECT_NEAR(std::exp(pc.log_pdf(0)), pa, 1e-12);
  EXPECT_NEAR(std::exp(pc.log_pdf(1)), pb, 1e-12);
  EXPECT_NEAR(std::exp(pc.log_pdf(2)), 1 - pa - pb, 1e-12);
}

ParamSpec categorical_abc() {
  ParamSpec p;
  p.key = "x";
  p.type = ParamType::kCategorical;
  p.choices = {"a", "b", "c"};
  return p;
}

// Optuna's own estimator (5.1.0) on the same observations: tests/unit/hpo_parzen_reference.py
// printed these log densities. For log floats Optuna's density is in log x, ours in x: -log x.
TEST(HpoParzen, MatchesOptunasEstimator) {
  struct Case {
    const char* name;
    ParamSpec spec;
    std::vector<double> observations, xs, optuna;
  };
  std::vector<double> obs30;
  for (int k = 0; k < 30; ++k) obs30.push_back((k * 37) % 100 + 0.5);
  const Case cases[] = {
      {"uniform",
       numeric(ParamType::kUniform, 0, 100),
       {10, 20, 70},
       {5, 40, 99},
       {-4.27966908942, -4.54861243078, -5.1366493236}},
      {"loguniform",
       numeric(ParamType::kLogUniform, 1e-5, 10),
       {1e-4, 3e-3, 0.5},
       {2e-5, 0.01, 5},
       {-2.6484792466 - std::log(2e-5), -2.54420174695 - std::log(0.01), -2.981425186 - std::log(5.0)}},
      {"int",
       numeric(ParamType::kInt, 1, 200),
       {3, 4, 150},
       {1, 4, 100, 200},
       {-4.78422199269, -4.78052950721, -5.47316296543, -5.7615657409}},
      {"log int",
       numeric(ParamType::kInt, 1, 200, /*log=*/true),
       {3, 4, 150},
       {1, 4, 100, 200},
       {-1.75827311531, -2.9301118049, -6.6343923106, -7.39351135905}},
      {"categorical", categorical_abc(), {0, 0, 1}, {0, 1, 2}, {-0.741937344729, -1.09861228867, -1.6582280766}},
      {"uniform, 30 observations (weights ramp)",
       numeric(ParamType::kUniform, 0, 100),
       obs30,
       {1, 50, 77.7},
       {-5.2612986239, -4.6026407696, -4.54568371228}},
      {"uniform, none", numeric(ParamType::kUniform, 0, 100), {}, {1, 50}, {-4.6842423855, -4.5641923855}},
  };
  for (const auto& c : cases) {
    const hpcml::hpo::ParzenEstimator pe(c.spec, c.observations);
    for (std::size_t i = 0; i < c.xs.size(); ++i) {
      EXPECT_NEAR(pe.log_pdf(c.xs[i]), c.optuna[i], 1e-9) << c.name << " at " << c.xs[i];
    }
  }
}

// The kernels one by one add up to the mixture, for every type; a categorical kernel's draws
// follow its own probabilities.
TEST(HpoParzen, KernelsAddUpToTheMixture) {
  const std::vector<std::pair<ParamSpec, std::vector<double>>> cases = {
      {numeric(ParamType::kUniform, 0, 100), {10, 20, 70}},
      {numeric(ParamType::kLogUniform, 1e-5, 10), {1e-4, 3e-3}},
      {numeric(ParamType::kInt, 1, 200, /*log=*/true), {3, 4, 150}},
      {categorical_abc(), {0, 0, 1}},
  };
  for (const auto& [spec, obs] : cases) {
    const hpcml::hpo::ParzenEstimator pe(spec, obs);
    for (double x : {obs.front(), obs.back(), spec.is_categorical() ? 2.0 : spec.high}) {
      double sum = 0;
      for (std::size_t k = 0; k < pe.weights().size(); ++k) sum += pe.weights()[k] * std::exp(pe.kernel_log_pdf(k, x));
      EXPECT_NEAR(std::log(sum), pe.log_pdf(x), 1e-12) << hpcml::hpo::to_string(spec.type) << " at " << x;
    }
  }
  const hpcml::hpo::ParzenEstimator pc(categorical_abc(), {0, 0, 1});
  Rng rng(2);
  const int n = 30000;
  int own = 0;
  for (int i = 0; i < n; ++i) own += pc.sample_kernel(2, rng) == 1.0;  // kernel 2 observed "b"
  // By hand: (1/4 + 1) / (1 + 3/4) = 0.714.
  EXPECT_NEAR(double(own) / n, 1.25 / 1.75, 0.01);
}

// Simpson's rule over [a, b] with n (even) intervals.
template <typename F>
double simpson(F f, double a, double b, int n) {
  const double h = (b - a) / n;
  double s = f(a) + f(b);
  for (int i = 1; i < n; ++i) s += f(a + i * h) * (i % 2 ? 4 : 2);
  return s * h / 3;
}

TEST(HpoParzen, DensitiesIntegrateToOne) {
  const hpcml::hpo::ParzenEstimator uniform(numeric(ParamType::kUniform, -2, 3), {-1.9, 0.1, 0.2, 2.5, 2.9});
  EXPECT_NEAR(simpson([&](double x) { return std::exp(uniform.log_pdf(x)); }, -2, 3, 20000), 1.0, 1e-6);
  // Log scale: the density is with respect to x; integrate over t = log x with dx = x dt.
  const hpcml::hpo::ParzenEstimator logu(numeric(ParamType::kLogUniform, 1e-5, 10), {1e-4, 3e-3, 0.5});
  const double lo = std::log(1e-5), hi = std::log(10.0);
  const double mass =
      simpson([&](double t) { return std::exp(logu.log_pdf(std::clamp(std::exp(t), 1e-5, 10.0)) + t); }, lo, hi, 20000);
  EXPECT_NEAR(mass, 1.0, 1e-6);
  // Integers: probabilities of every integer of the range sum to 1, linear and log.
  for (bool log : {false, true}) {
    const hpcml::hpo::ParzenEstimator ints(numeric(ParamType::kInt, 1, 200, log), {3, 4, 150});
    double sum = 0;
    for (int k = 1; k <= 200; ++k) sum += std::exp(ints.log_pdf(k));
    EXPECT_NEAR(sum, 1.0, 1e-9) << "log " << log;
    EXPECT_EQ(ints.log_pdf(0), -INFINITY);
  }
}

TEST(HpoParzen, SamplesFollowTheDensity) {
  // Draws of the estimator against its own density: the fraction below 0 matches the integral.
  const hpcml::hpo::ParzenEstimator pe(numeric(ParamType::kUniform, -2, 3), {-1.9, 0.1, 0.2, 2.5, 2.9});
  Rng rng(11);
  const int n = 20000;
  int below = 0;
  for (int i = 0; i < n; ++i) {
    const double x = pe.sample(rng);
    ASSERT_GE(x, -2);
    ASSERT_LE(x, 3);
    below += x < 0;
  }
  const double expected = simpson([&](double x) { return std::exp(pe.log_pdf(x)); }, -2, 0, 8000);
  EXPECT_NEAR(double(below) / n, expected, 0.015);
}

// ---------------------------------------------------------------- TPE

using Objective = double (*)(const Params&);

double quadratic(const Params& p) {
  const double x = get_double(p, "x"), y = get_double(p, "y");
  return (x - 0.3) * (x - 0.3) + (y + 1.2) * (y + 1.2);
}

// Sequential study of `budget` trials; the best value found.
double run_study(const hpcml::hpo::Sampler& sampler, const SearchSpace& space, Objective f, std::uint64_t seed,
                 int budget, double sign = 1) {
  Rng rng(seed);
  std::vector<TrialRecord> history;
  double best = INFINITY;
  for (int i = 0; i < budget; ++i) {
    const Params p = *sampler.ask(history, rng);
    space.check(p);  // conditionals honoured, bounds respected
    const double v = f(p);
    best = std::min(best, v);
    history.push_back({i, TrialState::kComplete, p, sign * v, 0});
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Best values of samplers a and b on seeds 1..12 (b on seed + b_offset), and how often a won.
struct Comparison {
  std::vector<double> a, b;
  int a_wins = 0;
};
Comparison compare(const hpcml::hpo::Sampler& a, const hpcml::hpo::Sampler& b, const SearchSpace& space, Objective f,
                   int budget, std::uint64_t b_offset) {
  Comparison out;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    out.a.push_back(run_study(a, space, f, seed, budget));
    out.b.push_back(run_study(b, space, f, seed + b_offset, budget));
    out.a_wins += out.a.back() < out.b.back();
  }
  return out;
}

constexpr const char* kPlaneSpace = "x: {type: uniform, low: -5, high: 5}\ny: {type: uniform, low: -5, high: 5}";
constexpr const char* kMixedObjectiveSpace = R"(
kind: {type: categorical, choices: [a, b, c]}
lr: {type: loguniform, low: 1.0e-6, high: 1.0}
momentum: {type: uniform, low: 0.0, high: 0.99, when: {kind: b}}
)";

TEST(HpoTpe, BeatsRandomOnAQuadratic) {
  const SearchSpace space = space_from(kPlaneSpace);
  const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize);
  const hpcml::hpo::RandomSampler random(space);
  const Comparison c = compare(tpe, random, space, quadratic, /*budget=*/40, /*b_offset=*/1000);
  // Measured: 11 of 12, medians 0.19 vs 0.75 (Optuna 5.1's univariate TPE: 0.13 on its own 12
  // seeds; over 100 seeds 0.135 here and 0.106 for Optuna, interquartile range 0.06-0.26).
  EXPECT_GE(c.a_wins, 10) << "TPE better than random in " << c.a_wins << " of 12 seeds";
  EXPECT_LT(median(c.a), 0.5 * median(c.b)) << "median best: tpe " << median(c.a) << ", random " << median(c.b);
  // Maximizing -f is the same problem.
  const hpcml::hpo::TpeSampler tpe_max(space, Direction::kMaximize);
  std::vector<double> tm;
  for (std::uint64_t seed = 1; seed <= 12; ++seed)
    tm.push_back(run_study(tpe_max, space, quadratic, seed, /*budget=*/40, /*sign=*/-1));
  EXPECT_LT(median(tm), 0.5 * median(c.b)) << "maximize: median best " << median(tm) << ", random " << median(c.b);
}

// A mixed, conditional objective: the categorical "kind" sets an offset (b best), log10(lr)
// should be -2, and momentum (only for b) should be 0.9.
double mixed(const Params& p) {
  const std::string kind = std::get<std::string>(p.at("kind"));
  const double offset = kind == "a" ? 3.0 : kind == "b" ? 0.0 : 1.5;
  const double l = std::log10(get_double(p, "lr")) + 2;
  const double m = kind == "b" ? get_double(p, "momentum") - 0.9 : 0.0;
  return offset + l * l + 4 * m * m;
}

TEST(HpoTpe, BeatsRandomOnAMixedConditionalObjective) {
  const SearchSpace space = space_from(kMixedObjectiveSpace);
  const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize);
  const hpcml::hpo::RandomSampler random(space);
  const Comparison c = compare(tpe, random, space, mixed, /*budget=*/60, /*b_offset=*/1000);
  // Measured: 10 of 12, medians 0.015 vs 0.28. Random is lucky on some seeds (1 in 3 draws
  // has the right kind), so the count is the weaker criterion and the median the stronger.
  EXPECT_GE(c.a_wins, 9) << "TPE better than random in " << c.a_wins << " of 12 seeds";
  EXPECT_LT(median(c.a), 0.1 * median(c.b)) << "median best: tpe " << median(c.a) << ", random " << median(c.b);
}

// Integers on a log scale: the optimum 37 of [1, 1000].
double integer_objective(const Params& p) {
  const double w = static_cast<double>(std::get<std::int64_t>(p.at("width")));
  return std::abs(std::log(w / 37.0));
}

TEST(HpoTpe, BeatsRandomOnALogInteger) {
  const SearchSpace space = space_from("width: {type: int, low: 1, high: 1000, log: true}");
  const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize);
  const hpcml::hpo::RandomSampler random(space);
  const Comparison c = compare(tpe, random, space, integer_objective, /*budget=*/30, /*b_offset=*/1000);
  // Measured: 11 of 12, medians 0.027 vs 0.17 (0.027 is 36 or 38; Optuna 5.1: 0.027).
  EXPECT_GE(c.a_wins, 10) << "TPE better than random in " << c.a_wins << " of 12 seeds";
  EXPECT_LT(median(c.a), 0.5 * median(c.b)) << "median best: tpe " << median(c.a) << ", random " << median(c.b);
}

TEST(HpoTpe, IgnoresRecordedValuesTheSpaceNoLongerAllows) {
  const SearchSpace space = space_from("kind: {type: categorical, choices: [a, b]}\nx: {type: int, low: 0, high: 9}");
  std::vector<TrialRecord> h;
  Rng draw(3);
  for (int i = 0; i < 12; ++i) {
    h.push_back({i, TrialState::kComplete, hpcml::hpo::RandomSampler::sample(space, draw), double(i), 0});
  }
  // Written under an older space: a removed choice, an int out of range, a double for an int.
  h.push_back({12, TrialState::kComplete, {{"kind", std::string("gone")}, {"x", std::int64_t{50}}}, -1.0, 0});
  h.push_back({13, TrialState::kComplete, {{"kind", std::string("a")}, {"x", 2.5}}, -2.0, 0});
  const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize);
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    Rng rng(seed);
    EXPECT_NO_THROW(space.check(*tpe.ask(h, rng)));
  }
}

// Multivariate TPE scores the unconditional parameters jointly; on the quadratic (x and y
// both matter) it is better than the univariate mode, and it still honours conditionals.
TEST(HpoTpe, MultivariateBeatsUnivariateAndHonoursConditionals) {
  const SearchSpace space = space_from(kPlaneSpace);
  hpcml::hpo::TpeOptions mv_options;
  mv_options.multivariate = true;
  const hpcml::hpo::TpeSampler mv(space, Direction::kMinimize, mv_options);
  const hpcml::hpo::TpeSampler uv(space, Direction::kMinimize);
  const Comparison c = compare(mv, uv, space, quadratic, /*budget=*/40, /*b_offset=*/0);
  // Measured: medians 0.043 vs 0.19; over 100 seeds 0.052 here, 0.056 for Optuna 5.1's
  // multivariate TPE (and 0.135 / 0.106 univariate).
  EXPECT_LT(median(c.a), 0.6 * median(c.b))
      << "median best: multivariate " << median(c.a) << ", univariate " << median(c.b);

  const SearchSpace mixed_space = space_from(kMixedObjectiveSpace);
  const hpcml::hpo::TpeSampler mv_mixed(mixed_space, Direction::kMinimize, mv_options);
  const hpcml::hpo::RandomSampler random(mixed_space);
  const Comparison m = compare(mv_mixed, random, mixed_space, mixed, /*budget=*/60, /*b_offset=*/1000);
  // Measured: medians 0.0037 vs 0.28. run_study checks every point against the space.
  EXPECT_LT(median(m.a), 0.1 * median(m.b))
      << "median best: multivariate " << median(m.a) << ", random " << median(m.b);
}

std::vector<TrialRecord> random_history(const SearchSpace& space, int n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<TrialRecord> h;
  for (int i = 0; i < n; ++i) {
    const Params p = hpcml::hpo::RandomSampler::sample(space, rng);
    h.push_back({i, TrialState::kComplete, p, quadratic(p), 0});
  }
  return h;
}

TEST(HpoTpe, APendingTrialPushesTheNextAskElsewhere) {
  const SearchSpace space = space_from(kPlaneSpace);
  const hpcml::hpo::TpeSampler liar(space, Direction::kMinimize);
  hpcml::hpo::TpeOptions no_liar_options;
  no_liar_options.constant_liar = false;
  const hpcml::hpo::TpeSampler no_liar(space, Direction::kMinimize, no_liar_options);
  int differ = 0;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    std::vector<TrialRecord> history = random_history(space, 15, seed);
    Rng rng(seed);
    const Rng start = rng;
    const Params first = *liar.ask(history, rng);
    history.push_back({15, TrialState::kRunning, first, std::nullopt, 0});
    // The same random stream: only the pending trial differs between the two asks.
    Rng again = start;
    const Params second = *liar.ask(history, again);
    differ += second != first;
    Rng ignored = start;
    EXPECT_EQ(*no_liar.ask(history, ignored), first) << "without the liar a pending trial changes nothing";
  }
  // Univariate TPE (as Optuna's) only lowers the score of the pending point's neighbourhood,
  // per parameter; it does not forbid it. Measured: 9 of 10 seeds move (both x and y stay on 1).
  EXPECT_GE(differ, 8);
}

// Four groups ask one after another while the earlier ones still run (15 trials finished):
// with the constant liar their points spread out; without it they crowd around the same spot.
TEST(HpoTpe, ConcurrentAsksSpreadOutWithTheLiar) {
  const SearchSpace space = space_from(kPlaneSpace);
  const auto median_spread = [&](bool liar) {
    hpcml::hpo::TpeOptions options;
    options.constant_liar = liar;
    const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize, options);
    std::vector<double> spreads;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      std::vector<TrialRecord> history = random_history(space, 15, seed);
      Rng rng(seed);
      std::vector<Params> pending;
      for (int group = 0; group < 4; ++group) {
        pending.push_back(*tpe.ask(history, rng));
        history.push_back({15 + group, TrialState::kRunning, pending.back(), std::nullopt, 0});
      }
      double sum = 0;
      for (int i = 0; i < 4; ++i) {
        for (int j = i + 1; j < 4; ++j) {
          sum += std::hypot(get_double(pending[i], "x") - get_double(pending[j], "x"),
                            get_double(pending[i], "y") - get_double(pending[j], "y"));
        }
      }
      spreads.push_back(sum / 6);
    }
    return median(spreads);
  };
  const double with_liar = median_spread(true), without = median_spread(false);
  // Measured: median mean pairwise distance 3.3 vs 0.60.
  EXPECT_GT(with_liar, 3 * without) << "spread with the liar " << with_liar << ", without " << without;
}

TEST(HpoTpe, SplitRanksCompleteThenPrunedByDepthRunningBad) {
  const SearchSpace space = space_from("x: {type: uniform, low: 0, high: 1}");
  const Params p{{"x", 0.5}};
  const std::vector<TrialRecord> h = {
      {0, TrialState::kComplete, p, 5.0, 0},        {1, TrialState::kComplete, p, 1.0, 0},
      {2, TrialState::kPruned, p, 0.1, 3},          {3, TrialState::kPruned, p, 0.5, 9},
      {4, TrialState::kComplete, p, 3.0, 0},        {5, TrialState::kRunning, p, std::nullopt, 0},
      {6, TrialState::kFailed, p, std::nullopt, 0}, {7, TrialState::kComplete, p, NAN, 0},
  };
  const auto numbers = [](const std::vector<const TrialRecord*>& g) {
    std::vector<std::int64_t> out;
    for (const auto* t : g) out.push_back(t->number);
    return out;
  };
  const auto split_with = [&](int n_good, Direction d) {
    hpcml::hpo::TpeOptions o;
    o.gamma = [n_good](int n) {
      EXPECT_EQ(n, 5);  // finished: 3 complete with a value + 2 pruned
      return n_good;
    };
    return hpcml::hpo::TpeSampler(space, d, o).split(h);
  };
  // Minimize: complete by value 1 (#1), 3 (#4), 5 (#0); then pruned, deeper rung first: #3, #2.
  auto s = split_with(2, Direction::kMinimize);
  EXPECT_EQ(numbers(s.good), (std::vector<std::int64_t>{1, 4}));
  EXPECT_EQ(numbers(s.bad), (std::vector<std::int64_t>{0, 2, 3, 5}));
  s = split_with(4, Direction::kMinimize);
  EXPECT_EQ(numbers(s.good), (std::vector<std::int64_t>{0, 1, 3, 4}));
  EXPECT_EQ(numbers(s.bad), (std::vector<std::int64_t>{2, 5}));
  s = split_with(1, Direction::kMaximize);
  EXPECT_EQ(numbers(s.good), (std::vector<std::int64_t>{0}));
  EXPECT_EQ(hpcml::hpo::default_gamma(9), 1);
  EXPECT_EQ(hpcml::hpo::default_gamma(11), 2);
  EXPECT_EQ(hpcml::hpo::default_gamma(1000), 25);
}

TEST(HpoTpe, ReproducibleAndRandomDuringStartup) {
  const SearchSpace space = space_from(kMixedSpace);
  const hpcml::hpo::TpeSampler tpe(space, Direction::kMinimize);
  const std::vector<TrialRecord> few(9, TrialRecord{0, TrialState::kComplete, {}, 1.0, 0});
  Rng a(5), b(5);
  // Fewer than n_startup_trials (10) finished: exactly the random sampler's draw.
  EXPECT_EQ(*tpe.ask(few, a), hpcml::hpo::RandomSampler::sample(space, b));
  const auto h = random_history(space_from(kPlaneSpace), 20, 2);
  const SearchSpace xy = space_from(kPlaneSpace);
  const hpcml::hpo::TpeSampler t2(xy, Direction::kMinimize);
  Rng c(9), d(9);
  EXPECT_EQ(*t2.ask(h, c), *t2.ask(h, d));
}

// ---------------------------------------------------------------- ASHA

hpcml::hpo::AshaOptions asha_options(std::int64_t grace, std::int64_t eta, std::int64_t max) {
  hpcml::hpo::AshaOptions o;
  o.grace_period = grace;
  o.reduction_factor = eta;
  o.max_resource = max;
  return o;
}

TEST(HpoAsha, RungsAtGraceTimesEtaPowers) {
  EXPECT_EQ(hpcml::hpo::Asha(Direction::kMinimize, asha_options(2, 3, 60)).rungs(),
            (std::vector<std::int64_t>{2, 6, 18, 54}));
  EXPECT_EQ(hpcml::hpo::Asha(Direction::kMinimize, asha_options(2, 3, 54)).rungs(),
            (std::vector<std::int64_t>{2, 6, 18}));
  EXPECT_TRUE(hpcml::hpo::Asha(Direction::kMinimize, asha_options(5, 2, 5)).rungs().empty());
  try {
    const hpcml::hpo::Asha asha(Direction::kMinimize, asha_options(1, 1, 9));
    FAIL() << "eta 1 accepted, " << asha.rungs().size() << " rungs";
  } catch (const hpcml::ConfigError& e) {
    EXPECT_NE(e.message().find("'hpo.scheduler.reduction_factor'"), std::string::npos) << e.message();
  }
  EXPECT_THROW(hpcml::hpo::Asha(Direction::kMinimize, asha_options(0, 3, 9)), hpcml::ConfigError);
  EXPECT_THROW(hpcml::hpo::Asha(Direction::kMinimize, asha_options(10, 3, 9)), hpcml::ConfigError);
}

TEST(HpoAsha, HandWorkedPromotionsAndStopsBothDirections) {
  // eta = 3, first rung (resource 1). A trial continues iff its value is within the
  // m = max(1, floor(n / 3)) best of the n values at the rung so far, its own included:
  //   5   n=1 m=1 best so far                -> continue (the first report always does)
  //   3   n=2 m=1 best                       -> continue
  //   4   n=3 m=1 best is 3                  -> stop
  //   1   n=4 m=1 best                       -> continue
  //   6   n=5 m=1                            -> stop
  //   2   n=6 m=2 two best {1, 2}            -> continue
  //   3.5 n=7 m=2 two best {1, 2}            -> stop
  //   3   n=8 m=2 two best {1, 2}            -> stop
  //   1.5 n=9 m=3 three best {1, 1.5, 2}     -> continue
  const double values[] = {5, 3, 4, 1, 6, 2, 3.5, 3, 1.5};
  const AshaDecision go = AshaDecision::kContinue, stop = AshaDecision::kStop;
  const AshaDecision expected[] = {go, go, stop, go, stop, go, stop, stop, go};
  hpcml::hpo::Asha min(Direction::kMinimize, asha_options(1, 3, 27));
  hpcml::hpo::Asha max(Direction::kMaximize, asha_options(1, 3, 27));
  for (int i = 0; i < 9; ++i) {
    EXPECT_EQ(min.report(i, 1, values[i]), expected[i]) << "minimize, trial " << i;
    EXPECT_EQ(max.report(i, 1, -values[i]), expected[i]) << "maximize, trial " << i;
  }
  // Next rung (resource 3), a fresh population: trial 3 first continues, trial 1 worse stops.
  EXPECT_EQ(min.report(3, 3, 0.9), go);
  EXPECT_EQ(min.report(1, 3, 2.5), stop);
  EXPECT_EQ(min.values_at(1), (std::vector<double>{0.9, 2.5}));
}

TEST(HpoAsha, MisuseAndNanAreErrorsOrStops) {
  hpcml::hpo::Asha asha(Direction::kMinimize, asha_options(1, 3, 27));
  EXPECT_EQ(asha.report(0, 1, NAN), AshaDecision::kStop);      // even as the first report
  EXPECT_EQ(asha.report(1, 1, 7.0), AshaDecision::kContinue);  // the NaN ranks last
  EXPECT_THROW(asha.report(1, 1, 7.0), hpcml::Error);          // twice at a rung
  EXPECT_THROW(asha.report(2, 2, 1.0), hpcml::Error);          // 2 is not a rung
  EXPECT_THROW(asha.report(0, 3, 1.0), hpcml::Error);          // told to stop before
  EXPECT_THROW(asha.report(3, 27, 1.0), hpcml::Error);         // max_resource is not a rung
}

// The promotion form: (trial, from, to) of the next promotion, or (-1, -1, -1) for none.
std::vector<std::int64_t> next_promotion(hpcml::hpo::Asha& asha) {
  const auto p = asha.promote();
  if (!p) return {-1, -1, -1};
  return {p->trial, p->from, p->to};
}

TEST(HpoAsha, HandWorkedPromotionFormBothDirections) {
  // eta = 3, rungs 1, 3, 9, max 27. After each report at rung 1, the rung's m = floor(n / 3)
  // best (ties: earlier report first) not yet promoted are promotable, best first:
  //   t0 5    n=1 m=0                               -> none
  //   t1 3    n=2 m=0                               -> none
  //   t2 4    n=3 m=1 {t1}                          -> t1 (it ranked below no cut: promoted late)
  //   t3 1    n=4 m=1 {t3}                          -> t3
  //   t4 6    n=5 m=1 {t3} promoted                 -> none
  //   t5 2    n=6 m=2 {t3, t5}                      -> t5
  //   t6 3.5  n=7 m=2                               -> none
  //   t7 3    n=8 m=2                               -> none
  //   t8 1.5  n=9 m=3 {t3, t8, t5}                  -> t8
  //   t9..t12 7, 8, 9, 10  n=13 m=4 {.., t1 (3, before t7's tie)} -> none
  //   t13 11  n=14 m=4                              -> none
  //   t14 12  n=15 m=5 {t3, t8, t5, t1, t7}         -> t7, but see below
  // Before asking after t14, t1, t3, t5 report at rung 3 (2.5, 0.9, 2.0): m=1 {t3}. The highest
  // rung goes first: t3 3 -> 9, then t7 1 -> 3, then none.
  const double values[] = {5, 3, 4, 1, 6, 2, 3.5, 3, 1.5, 7, 8, 9, 10, 11, 12};
  const std::vector<std::int64_t> none = {-1, -1, -1};
  const std::vector<std::vector<std::int64_t>> expected = {
      none,      none, {1, 1, 3}, {3, 1, 3}, none, {5, 1, 3}, none, none,
      {8, 1, 3}, none, none,      none,      none, none};
  for (Direction d : {Direction::kMinimize, Direction::kMaximize}) {
    const double sign = d == Direction::kMinimize ? 1 : -1;
    hpcml::hpo::Asha asha(d, asha_options(1, 3, 27));
    for (int i = 0; i < 14; ++i) {
      asha.record(i, 1, sign * values[i]);
      EXPECT_EQ(next_promotion(asha), expected[static_cast<size_t>(i)]) << "trial " << i;
      EXPECT_EQ(next_promotion(asha), none) << "a second promotion after trial " << i;
    }
    asha.record(14, 1, sign * values[14]);
    asha.record(1, 3, sign * 2.5);
    asha.record(3, 3, sign * 0.9);
    asha.record(5, 3, sign * 2.0);
    EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{3, 3, 9}));
    EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{7, 1, 3}));
    EXPECT_EQ(next_promotion(asha), none);
  }
}

TEST(HpoAsha, PromotionFormLastRungGoesToMaxAndNanIsNeverPromoted) {
  hpcml::hpo::Asha asha(Direction::kMinimize, asha_options(1, 2, 3));  // rungs 1, 2; max 3
  asha.record(0, 1, 1.0);
  asha.record(1, 1, 4.0);
  EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{0, 1, 2}));
  asha.record(2, 1, 2.0);
  asha.record(3, 1, 3.0);
  EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{2, 1, 2}));
  asha.record(0, 2, 5.0);
  asha.record(2, 2, 6.0);
  EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{0, 2, 3}));  // the last rung goes to max_resource
  EXPECT_EQ(next_promotion(asha), (std::vector<std::int64_t>{-1, -1, -1}));

  hpcml::hpo::Asha nan(Direction::kMinimize, asha_options(1, 2, 4));
  nan.record(0, 1, NAN);
  nan.record(1, 1, NAN);
  EXPECT_EQ(next_promotion(nan), (std::vector<std::int64_t>{-1, -1, -1}));  // m = 1, but both are NaN
  EXPECT_THROW(nan.record(0, 2, 1.0), hpcml::Error);                           // stopped by its NaN
  EXPECT_THROW(nan.record(1, 1, 1.0), hpcml::Error);                           // twice at a rung
}

TEST(HpoAsha, NeverPromotesBelowTheTopFractionOnARandomStream) {
  for (Direction d : {Direction::kMinimize, Direction::kMaximize}) {
    for (std::int64_t eta : {2, 3, 4}) {
      hpcml::hpo::Asha asha(d, asha_options(1, eta, 1000));
      Rng rng(static_cast<std::uint64_t>(eta));
      std::map<std::int64_t, std::vector<double>> seen;  // rung -> values so far
      std::map<std::int64_t, std::size_t> next_rung;     // trial -> rung index to report at
      int continued = 0, stopped = 0;
      std::int64_t new_trial = 0;
      for (int step = 0; step < 600; ++step) {
        // Either a new trial or a surviving one reports at its next rung.
        std::int64_t trial = new_trial;
        if (!next_rung.empty() && hpcml::hpo::detail::uniform01(rng) < 0.5) {
          auto it = next_rung.begin();
          std::advance(it, hpcml::hpo::detail::uniform_index(rng, next_rung.size()));
          trial = it->first;
        } else {
          ++new_trial;
        }
        const std::size_t k = next_rung[trial];
        if (k >= asha.rungs().size()) {
          next_rung.erase(trial);
          continue;
        }
        const std::int64_t rung = asha.rungs()[k];
        const double v = std::round(hpcml::hpo::detail::uniform01(rng) * 50);  // ties happen
        auto& values = seen[rung];
        values.push_back(v);
        const auto better = std::count_if(values.begin(), values.end(),
                                          [&](double o) { return d == Direction::kMinimize ? o < v : o > v; });
        const std::size_t m = std::max<std::size_t>(1, values.size() / static_cast<std::size_t>(eta));
        const bool in_top = static_cast<std::size_t>(better) < m;
        const AshaDecision got = asha.report(trial, rung, v);
        ASSERT_EQ(got == AshaDecision::kContinue, in_top)
            << "eta " << eta << " rung " << rung << " value " << v << " among " << values.size();
        if (got == AshaDecision::kContinue) {
          ++continued;
          next_rung[trial] = k + 1;
        } else {
          ++stopped;
          next_rung.erase(trial);
        }
      }
      EXPECT_GT(continued, 20);
      EXPECT_GT(stopped, 20);
    }
  }
}

}  // namespace
