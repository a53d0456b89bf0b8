#include "hpo/tpe.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.hpp"
#include "hpo/detail/math.hpp"

namespace hpcml::hpo {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Index drawn with probability proportional to `weights` (which sum to about 1).
std::size_t draw_index(const std::vector<double>& weights, Rng& rng) {
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  double u = detail::uniform01(rng) * total;
  for (std::size_t i = 0; i + 1 < weights.size(); ++i) {
    if (u < weights[i]) return i;
    u -= weights[i];
  }
  return weights.size() - 1;
}

std::vector<double> normalised(std::vector<double> w) {
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  for (double& x : w) x /= total;
  return w;
}

// Optuna's univariate bandwidths (as of Optuna 5): each observation's distance to its farther
// neighbour among the sorted observations and the two ends of the range, except that, from two
// observations on, the smallest and largest take the gap to their inner neighbour only; then
// clipped to [range / min(100, n + 2), range]. (Optuna 3 also counted the prior mean as a
// neighbour; it no longer does.)
std::vector<double> bandwidths(const std::vector<double>& mus, double low, double high, bool magic_clip) {
  const std::size_t n = mus.size();
  if (n == 0) return {};
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return mus[a] < mus[b]; });
  std::vector<double> ends{low};
  for (std::size_t i : order) ends.push_back(mus[i]);
  ends.push_back(high);
  std::vector<double> sorted_sigma(n);
  for (std::size_t j = 0; j < n; ++j) sorted_sigma[j] = std::max(ends[j + 1] - ends[j], ends[j + 2] - ends[j + 1]);
  if (n >= 2) {
    sorted_sigma[0] = ends[2] - ends[1];
    sorted_sigma[n - 1] = ends[n] - ends[n - 1];
  }
  std::vector<double> sigma(n);
  for (std::size_t j = 0; j < n; ++j) sigma[order[j]] = sorted_sigma[j];
  const double range = high - low;
  const double min_sigma = magic_clip ? range / std::min(100.0, static_cast<double>(n) + 2.0) : 1e-12;
  for (double& s : sigma) s = std::clamp(s, min_sigma, range);
  return sigma;
}

// Whether a recorded value is one the parameter can take (a history written under an older
// space may hold others; they are left out of the estimators rather than trusted).
bool fits(const ParamSpec& spec, const Value& v) {
  if (spec.is_categorical()) {
    const auto* s = std::get_if<std::string>(&v);
    return s && std::find(spec.choices.begin(), spec.choices.end(), *s) != spec.choices.end();
  }
  if (spec.is_int()) {
    const auto* i = std::get_if<std::int64_t>(&v);
    return i && *i >= spec.low && *i <= spec.high;
  }
  const auto* d = std::get_if<double>(&v);
  return d && *d >= spec.low && *d <= spec.high;
}

double as_number(const ParamSpec& spec, const Value& v) {
  if (spec.is_categorical()) {
    const auto& s = std::get<std::string>(v);
    return static_cast<double>(std::find(spec.choices.begin(), spec.choices.end(), s) - spec.choices.begin());
  }
  if (spec.is_int()) return static_cast<double>(std::get<std::int64_t>(v));
  return std::get<double>(v);
}

Value from_number(const ParamSpec& spec, double x) {
  if (spec.is_categorical()) return spec.choices[static_cast<std::size_t>(x)];
  if (spec.is_int()) return static_cast<std::int64_t>(std::llround(x));
  return x;
}

// Whether trial a ranks before b among pruned trials: deeper rung first, then by value.
bool pruned_before(const TrialRecord& a, const TrialRecord& b, Direction direction) {
  if (a.resource != b.resource) return a.resource > b.resource;
  const double va = a.value.value_or(std::nan(""));
  const double vb = b.value.value_or(std::nan(""));
  if (is_better(va, vb, direction)) return true;
  if (is_better(vb, va, direction)) return false;
  return a.number < b.number;
}

}  // namespace

int default_gamma(int n) { return std::min(static_cast<int>(std::ceil(0.1 * n)), 25); }

std::vector<double> default_weights(int n) {
  std::vector<double> w;
  if (n <= 0) return w;
  if (n < 25) return std::vector<double>(static_cast<std::size_t>(n), 1.0);
  const int ramp = n - 25;
  for (int i = 0; i < ramp; ++i) {
    const double first = 1.0 / n;
    w.push_back(ramp == 1 ? first : first + (1.0 - first) * i / (ramp - 1));
  }
  w.resize(static_cast<std::size_t>(n), 1.0);
  return w;
}

ParzenEstimator::ParzenEstimator(const ParamSpec& spec, const std::vector<double>& observations,
                                 const ParzenOptions& options)
    : spec_(spec) {
  const int n = static_cast<int>(observations.size());
  std::vector<double> w = default_weights(n);
  w.push_back(n == 0 ? 1.0 : options.prior_weight);
  weights_ = normalised(w);
  if (spec.is_categorical()) {
    const std::size_t k = spec.choices.size();
    choice_probs_.assign(k, weights_.back() / k);  // the prior kernel: uniform
    const double smooth = options.prior_weight / (n + 1);
    smooth_ = smooth;
    observed_.assign(observations.begin(), observations.end());
    for (int i = 0; i < n; ++i) {
      // One observation's kernel: smooth on every choice, +1 on the one observed, normalised.
      const double row = 1.0 + smooth * k;
      for (std::size_t c = 0; c < k; ++c) choice_probs_[c] += weights_[i] * smooth / row;
      choice_probs_[static_cast<std::size_t>(observations[i])] += weights_[i] / row;
    }
    return;
  }
  low_ = spec.is_int() ? spec.low - 0.5 : spec.low;
  high_ = spec.is_int() ? spec.high + 0.5 : spec.high;
  if (spec.log) {
    low_ = std::log(low_);
    high_ = std::log(high_);
  }
  for (double x : observations) mus_.push_back(to_internal(x));
  sigmas_ = bandwidths(mus_, low_, high_, options.magic_clip);
  mus_.push_back(0.5 * (low_ + high_));
  sigmas_.push_back(high_ - low_);
}

double ParzenEstimator::to_internal(double x) const { return spec_.log ? std::log(x) : x; }

double ParzenEstimator::sample(Rng& rng) const {
  if (spec_.is_categorical()) return static_cast<double>(draw_index(choice_probs_, rng));
  return sample_kernel(draw_index(weights_, rng), rng);
}

double ParzenEstimator::sample_kernel(std::size_t k, Rng& rng) const {
  if (spec_.is_categorical()) {
    // Observation kernels: smooth_ on every choice and +1 on the observed one; the prior: uniform.
    std::vector<double> row(spec_.choices.size(), k < observed_.size() ? smooth_ : 1.0);
    if (k < observed_.size()) row[static_cast<std::size_t>(observed_[k])] += 1.0;
    return static_cast<double>(draw_index(row, rng));
  }
  const double t = detail::sample_truncnorm(mus_[k], sigmas_[k], low_, high_, rng);
  const double x = spec_.log ? std::exp(t) : t;
  if (spec_.is_int()) return std::clamp(static_cast<double>(std::llround(x)), spec_.low, spec_.high);
  return std::clamp(x, spec_.low, spec_.high);
}

double ParzenEstimator::kernel_log_pdf(std::size_t k, double x) const {
  if (spec_.is_categorical()) {
    const std::size_t n = spec_.choices.size();
    const auto i = static_cast<std::size_t>(x);
    if (x < 0 || i >= n) return -kInf;
    if (k >= observed_.size()) return -std::log(static_cast<double>(n));
    const double own = static_cast<std::size_t>(observed_[k]) == i ? 1.0 : 0.0;
    return std::log((smooth_ + own) / (1.0 + smooth_ * n));
  }
  if (x < spec_.low || x > spec_.high) return -kInf;
  const double m = mus_[k], s = sigmas_[k];
  if (spec_.is_int()) {
    // The mass of the integer's cell [x - 0.5, x + 0.5] (in log space for log): the cells
    // tile the domain, so the masses sum to 1.
    const double c1 = to_internal(x - 0.5);
    const double c2 = to_internal(x + 0.5);
    return detail::log_normal_mass((c1 - m) / s, (c2 - m) / s) -
           detail::log_normal_mass((low_ - m) / s, (high_ - m) / s);
  }
  const double t = to_internal(x);
  return detail::truncnorm_log_pdf(t, m, s, low_, high_) - (spec_.log ? t : 0.0);
}

double ParzenEstimator::log_pdf(double x) const {
  if (spec_.is_categorical()) {
    const auto i = static_cast<std::size_t>(x);
    return x >= 0 && i < choice_probs_.size() ? std::log(choice_probs_[i]) : -kInf;
  }
  std::vector<double> terms;
  for (std::size_t k = 0; k < weights_.size(); ++k) terms.push_back(std::log(weights_[k]) + kernel_log_pdf(k, x));
  return detail::log_sum_exp(terms);
}

TpeSampler::TpeSampler(SearchSpace space, Direction direction, TpeOptions options)
    : space_(std::move(space)), direction_(direction), options_(std::move(options)) {
  HPCML_CHECK_AS(ConfigError, options_.n_startup_trials >= 0,
                 "config error: key 'hpo.tpe.n_startup_trials': ", "expected >= 0, found ", options_.n_startup_trials);
  HPCML_CHECK_AS(ConfigError, options_.n_ei_candidates >= 1,
                 "config error: key 'hpo.tpe.n_ei_candidates': ", "expected >= 1, found ", options_.n_ei_candidates);
}

TpeSampler::Split TpeSampler::split(const std::vector<TrialRecord>& history) const {
  std::vector<const TrialRecord*> complete, pruned, running;
  for (const auto& t : history) {
    if (t.state == TrialState::kComplete && t.value && std::isfinite(*t.value)) complete.push_back(&t);
    if (t.state == TrialState::kPruned) pruned.push_back(&t);
    if (t.state == TrialState::kRunning && options_.constant_liar) running.push_back(&t);
  }
  std::stable_sort(complete.begin(), complete.end(), [&](const TrialRecord* a, const TrialRecord* b) {
    if (*a->value != *b->value) return is_better(*a->value, *b->value, direction_);
    return a->number < b->number;
  });
  std::stable_sort(pruned.begin(), pruned.end(),
                   [&](const TrialRecord* a, const TrialRecord* b) { return pruned_before(*a, *b, direction_); });
  const int n = static_cast<int>(complete.size() + pruned.size());
  auto n_good = static_cast<std::size_t>(std::clamp(options_.gamma(n), 0, n));
  Split out;
  for (const auto* group : {&complete, &pruned}) {
    for (const TrialRecord* t : *group) (out.good.size() < n_good ? out.good : out.bad).push_back(t);
  }
  out.bad.insert(out.bad.end(), running.begin(), running.end());
  const auto by_number = [](const TrialRecord* a, const TrialRecord* b) { return a->number < b->number; };
  std::sort(out.good.begin(), out.good.end(), by_number);
  std::sort(out.bad.begin(), out.bad.end(), by_number);
  return out;
}

Value TpeSampler::sample_param(const ParamSpec& spec, const Split& split, Rng& rng) const {
  const auto observations = [&](const std::vector<const TrialRecord*>& group) {
    std::vector<double> out;
    for (const TrialRecord* t : group) {
      const auto it = t->params.find(spec.key);
      if (it != t->params.end() && fits(spec, it->second)) out.push_back(as_number(spec, it->second));
    }
    return out;
  };
  const ParzenEstimator good(spec, observations(split.good), options_.parzen);
  const ParzenEstimator bad(spec, observations(split.bad), options_.parzen);
  double best = std::nan("");
  double best_score = -kInf;
  for (int i = 0; i < options_.n_ei_candidates; ++i) {
    const double x = good.sample(rng);
    const double score = good.log_pdf(x) - bad.log_pdf(x);
    if (std::isnan(best) || score > best_score) {
      best = x;
      best_score = score;
    }
  }
  return from_number(spec, best);
}

void TpeSampler::sample_joint(const Split& split, Rng& rng, Params& out) const {
  std::vector<const ParamSpec*> joint;
  for (const auto& p : space_.params()) {
    if (!p.condition) joint.push_back(&p);
  }
  if (joint.empty()) return;
  // One estimator per parameter over the same trials (those with a valid value for every joint
  // parameter), so kernel k of each is trial k's and the weights agree.
  const auto build = [&](const std::vector<const TrialRecord*>& group) {
    std::vector<std::vector<double>> observations(joint.size());
    for (const TrialRecord* t : group) {
      const bool usable = std::all_of(joint.begin(), joint.end(), [&](const ParamSpec* p) {
        const auto it = t->params.find(p->key);
        return it != t->params.end() && fits(*p, it->second);
      });
      if (!usable) continue;
      for (std::size_t d = 0; d < joint.size(); ++d) {
        observations[d].push_back(as_number(*joint[d], t->params.at(joint[d]->key)));
      }
    }
    std::vector<ParzenEstimator> estimators;
    for (std::size_t d = 0; d < joint.size(); ++d) estimators.emplace_back(*joint[d], observations[d], options_.parzen);
    return estimators;
  };
  const std::vector<ParzenEstimator> good = build(split.good);
  const std::vector<ParzenEstimator> bad = build(split.bad);
  const auto log_pdf = [&](const std::vector<ParzenEstimator>& estimators, const std::vector<double>& x) {
    const std::vector<double>& w = estimators.front().weights();
    std::vector<double> terms(w.size());
    for (std::size_t k = 0; k < w.size(); ++k) {
      terms[k] = std::log(w[k]);
      for (std::size_t d = 0; d < x.size(); ++d) terms[k] += estimators[d].kernel_log_pdf(k, x[d]);
    }
    return detail::log_sum_exp(terms);
  };
  std::vector<double> best, x(joint.size());
  double best_score = -kInf;
  for (int i = 0; i < options_.n_ei_candidates; ++i) {
    const std::size_t k = draw_index(good.front().weights(), rng);
    for (std::size_t d = 0; d < joint.size(); ++d) x[d] = good[d].sample_kernel(k, rng);
    const double score = log_pdf(good, x) - log_pdf(bad, x);
    if (best.empty() || score > best_score) {
      best = x;
      best_score = score;
    }
  }
  for (std::size_t d = 0; d < joint.size(); ++d) out[joint[d]->key] = from_number(*joint[d], best[d]);
}

std::optional<Params> TpeSampler::ask(const std::vector<TrialRecord>& history, Rng& rng) const {
  const auto finished = std::count_if(history.begin(), history.end(), [](const TrialRecord& t) {
    return (t.state == TrialState::kComplete && t.value && std::isfinite(*t.value)) || t.state == TrialState::kPruned;
  });
  if (finished < options_.n_startup_trials) return RandomSampler::sample(space_, rng);
  const Split groups = split(history);
  Params out;
  if (options_.multivariate) sample_joint(groups, rng, out);
  for (const auto& p : space_.params()) {
    if (!out.count(p.key) && space_.is_active(p, out)) out[p.key] = sample_param(p, groups, rng);
  }
  return out;
}

}  // namespace hpcml::hpo
