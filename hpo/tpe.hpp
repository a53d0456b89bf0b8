/// @file
/// The Tree-structured Parzen Estimator sampler (Bergstra et al., "Algorithms for
/// Hyper-Parameter Optimization", NeurIPS 2011), following Optuna's default (univariate)
/// TPESampler: start-up random trials, a good/bad split of the finished trials by the quantile
/// gamma, one Parzen estimator per parameter for each group, and the candidate (drawn from the
/// good estimator) with the largest log l(x) - log g(x). See hpo/README.md for every rule.
#pragma once

#include <functional>
#include <vector>

#include "hpo/sampler.hpp"

namespace hpcml::hpo {

/// Optuna's default gamma: min(ceil(0.1 n), 25) of n finished trials are "good".
int default_gamma(int n);
/// Optuna's default weights of n observations in trial order: 1 each below 25; beyond, the
/// oldest n-25 ramp linearly from 1/n up to 1 and the newest 25 weigh 1.
std::vector<double> default_weights(int n);

/// Tuning of the Parzen estimators (Optuna's defaults).
struct ParzenOptions {
  double prior_weight = 1.0;  ///< weight of the prior kernel (before normalisation)
  bool magic_clip = true;     ///< bandwidths at least range / min(100, n + 2)
};

/// A univariate Parzen estimator of one parameter: a mixture of truncated normals (one per
/// observation plus a prior kernel at the middle of the range with bandwidth = the range) for
/// numeric parameters, in log space for log parameters, discretised to the integers for int
/// parameters; a mixture of smoothed one-hot distributions plus a uniform prior for categorical
/// ones. Observations are given in trial order (their weights follow default_weights).
class ParzenEstimator {
 public:
  /// @param[in] observations values of the parameter (int and double as numbers, categorical
  ///   as the index of the choice), in trial order.
  ParzenEstimator(const ParamSpec& spec, const std::vector<double>& observations, const ParzenOptions& options = {});
  /// A draw: a number of [low, high] (rounded for int), or a choice index for categorical.
  double sample(Rng& rng) const;
  /// log of the density at x with respect to x itself (so that it integrates to 1 over
  /// [low, high]; includes the 1/x of a log scale) for uniform/loguniform; log of the
  /// probability of the integer x for int; log probability of choice index x for categorical.
  double log_pdf(double x) const;
  /// One kernel on its own (k < weights().size(); the last is the prior), in the units of
  /// log_pdf: log_pdf(x) = log sum_k weights()[k] exp(kernel_log_pdf(k, x)).
  double kernel_log_pdf(std::size_t k, double x) const;
  /// A draw from kernel k alone.
  double sample_kernel(std::size_t k, Rng& rng) const;

  /// The kernels, in the (log) space they live in: means, bandwidths and normalised weights;
  /// the last kernel is the prior. Empty means for categorical.
  const std::vector<double>& mus() const { return mus_; }
  const std::vector<double>& sigmas() const { return sigmas_; }
  const std::vector<double>& weights() const { return weights_; }
  /// Categorical: the mixture's probability of each choice.
  const std::vector<double>& choice_probs() const { return choice_probs_; }

 private:
  double to_internal(double x) const;
  ParamSpec spec_;
  double low_ = 0, high_ = 0;  // the (log) domain of the kernels, widened by 0.5 for int
  std::vector<double> mus_, sigmas_, weights_, choice_probs_;
  std::vector<double> observed_;  // categorical: the observed choice of each observation kernel
  double smooth_ = 0;             // categorical: the mass every choice gets in an observation kernel
};

/// Options of the TPE sampler (Optuna's defaults, except constant_liar).
struct TpeOptions {
  int n_startup_trials = 10;  ///< random draws until this many trials are complete or pruned
  int n_ei_candidates = 24;   ///< candidates drawn from l(x) per parameter
  ParzenOptions parzen;
  /// Running trials join the bad group ("constant liar"), so that groups asking while others
  /// run are pushed away from the points being evaluated. Optuna's default is off; ours is on.
  bool constant_liar = true;
  /// Multivariate TPE (Falkner et al. 2018; Optuna's `multivariate=True`, its default since
  /// Optuna 4 for one objective): the unconditional parameters are drawn and scored jointly, one
  /// product kernel per trial, so correlations between them count; conditional parameters are
  /// then drawn one by one as in the univariate mode. Off: every parameter on its own.
  bool multivariate = false;
  /// Number of good trials among n finished ones.
  std::function<int(int)> gamma = default_gamma;
};

/// TPE. Trials used: kComplete with a finite value, kPruned (ranked after every complete trial,
/// deeper rungs first, then by the value at their last rung, as Optuna does), kRunning (into the
/// bad group, with constant_liar). kFailed trials, and complete ones with a NaN value, are ignored,
/// as are recorded values a parameter cannot take (a history from an older space).
class TpeSampler : public Sampler {
 public:
  TpeSampler(SearchSpace space, Direction direction, TpeOptions options = {});
  const char* name() const override { return "tpe"; }
  std::optional<Params> ask(const std::vector<TrialRecord>& history, Rng& rng) const override;

  /// The good and bad trials of `history` (pointers into it), in trial-number order.
  struct Split {
    std::vector<const TrialRecord*> good, bad;
  };
  Split split(const std::vector<TrialRecord>& history) const;

 private:
  Value sample_param(const ParamSpec& spec, const Split& split, Rng& rng) const;
  void sample_joint(const Split& split, Rng& rng, Params& out) const;
  SearchSpace space_;
  Direction direction_;
  TpeOptions options_;
};

}  // namespace hpcml::hpo
