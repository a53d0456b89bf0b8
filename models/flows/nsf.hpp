/// @file
/// A DINGO-style neural spline flow for amortised gravitational-wave posteriors
/// p(θ | strain), and importance sampling against the toy GW model's likelihood.
///
/// The pieces (docs/flows.md has the math):
/// - rational-quadratic splines with linear tails (Durkan et al. 2019), elementwise;
/// - affine-free coupling steps: a fixed random permutation, optionally an LU-linear
///   layer, then an RQ-spline coupling conditioned on (identity half, context);
/// - an embedding of the whitened strain: a Linear projection (initialisable from an
///   SVD basis of training waveforms), then an MLP to the context vector;
/// - θ standardisation buffers, included in log_prob, so log_prob is the density of
///   the original θ.
///
/// Direction: the "forward" transform maps θ to the base variable z ~ N(0, I);
/// log_prob is one forward pass, sampling one inverse pass.
///
/// Only ATen is needed by users of this header; the torch::nn modules live in
/// nsf.cpp. Parameter and buffer names equal the state_dict() names of the Python
/// twin in models/twins/nsf.py. Not thread-safe; single process (no collectives).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/physics/gw_signal.hpp"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace hpcml::models::flows {

using NamedTensor = std::pair<std::string, at::Tensor>;

// --- rational-quadratic spline ------------------------------------------------------

/// Bins, tail bound and the minimum bin width / height / knot derivative.
struct SplineOptions {
  int64_t num_bins = 8;     ///< K
  double tail_bound = 3.0;  ///< B: the spline acts on [-B, B], identity outside
  double min_bin_width = 1e-3;
  double min_bin_height = 1e-3;
  double min_derivative = 1e-3;
};

/// A transform's outputs and log|det J| (shape documented at each function).
struct TransformResult {
  at::Tensor outputs;
  at::Tensor logabsdet;
};

/// The monotone RQ spline y = f(x) applied elementwise, with linear (identity) tails
/// outside [-B, B] and unit derivatives at ±B.
///
/// @param[in] inputs       any shape S, floating
/// @param[in] params       shape S + (3K-1): K unnormalised widths, K unnormalised heights,
///                         K-1 unconstrained interior derivatives (softplus + min_derivative)
/// @return outputs of shape S and the elementwise log|df/dx| of shape S (sum it over
///         features for a per-sample log-det). Throws ConfigError on a shape mismatch.
TransformResult rq_spline_forward(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& options);
/// The inverse x = f⁻¹(y) (stable root form of the quadratic), with elementwise
/// log|dx/dy| = -log|df/dx| at x.
TransformResult rq_spline_inverse(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& options);

// --- the flow -----------------------------------------------------------------------

/// Architecture of the flow (defaults: 5 GW parameters, 2048-sample strain).
struct NsfOptions {
  int64_t theta_dim = 5;         ///< D (D = 1 is allowed: each coupling then transforms it from the context alone)
  int64_t strain_length = 2048;  ///< T
  int64_t num_steps = 5;         ///< coupling steps
  SplineOptions spline{};        ///< bins and tail bound (in standardised θ units)
  int64_t hidden = 128;          ///< conditioner width
  int64_t hidden_layers = 2;     ///< conditioner hidden layers
  std::string linear = "lu";     ///< between couplings: "permutation" or "lu" (permutation + LU-linear)
  int64_t n_basis = 64;          ///< outputs of the projection layer
  std::vector<int64_t> embedding_hidden{256, 128};  ///< embedding MLP hidden widths
  int64_t context_dim = 32;                         ///< embedding output (the conditioner's context)
  uint64_t seed = 0;                                ///< torch::manual_seed(seed) before initialisation
};

/// θ and strain samples, with the flow's log density of each sample.
struct FlowSamples {
  at::Tensor samples;   ///< (B, n, D)
  at::Tensor log_prob;  ///< (B, n)
};

namespace detail {
struct NsfModule;
}  // namespace detail

/// The conditional density estimator q(θ | strain): standardisation, `num_steps`
/// × [permutation, (LU-linear), RQ-spline coupling], standard normal base.
/// Float32 by default; `to(at::kDouble)` converts every parameter and buffer.
/// Copies share the underlying module (like a torch::nn module holder).
class NeuralSplineFlow {
 public:
  /// Builds and initialises the flow (torch::manual_seed(options.seed) first).
  /// Throws ConfigError on a non-positive size, an unknown `linear` or K < 2.
  explicit NeuralSplineFlow(const NsfOptions& options);

  const NsfOptions& options() const { return options_; }

  /// log q(θ | strain) of the original (unstandardised) θ.
  /// @param[in] theta  (B, D)
  /// @param[in] strain (B, T), whitened
  /// @return (B,). Throws ConfigError naming the tensor on a shape mismatch.
  at::Tensor log_prob(const at::Tensor& theta, const at::Tensor& strain);
  /// n samples per context: embeds each strain once. @return (B, n, D).
  at::Tensor sample(const at::Tensor& strain, int64_t n, std::optional<at::Generator> generator = std::nullopt);
  /// Samples (B, n, D) and their log q (B, n), from the same pass.
  FlowSamples sample_and_log_prob(const at::Tensor& strain, int64_t n,
                                  std::optional<at::Generator> generator = std::nullopt);

  /// The context vector of each strain: (B, T) -> (B, context_dim).
  at::Tensor embed(const at::Tensor& strain);
  /// θ (B, D) -> z (B, D) given a context (B, context_dim); logabsdet (B,) includes the
  /// standardisation, so log_prob = log N(z; 0, I) + logabsdet.
  TransformResult forward_transform(const at::Tensor& theta, const at::Tensor& context);
  /// z (B, D) -> θ (B, D); logabsdet (B,) of this inverse map (= -forward's at θ).
  TransformResult inverse_transform(const at::Tensor& z, const at::Tensor& context);

  /// Sets the θ standardisation buffers: θ' = (θ - mean) / std. Both (D,), std > 0.
  void set_standardization(const at::Tensor& mean, const at::Tensor& std);
  /// Mean and (population) standard deviation of training θ (N, D), N >= 2.
  void set_standardization_from(const at::Tensor& theta);
  /// Sets the projection weight to the top-`n_basis` right singular vectors of
  /// `waveforms` (N, T), N >= n_basis (rows orthonormal), and its bias to zero.
  void init_projection_from_svd(const at::Tensor& waveforms);

  /// Parameters and buffers by twin state_dict name, in registration order. The
  /// tensors share storage with the flow (an optimizer built on them trains it).
  std::vector<NamedTensor> named_parameters() const;
  std::vector<NamedTensor> named_buffers() const;
  std::vector<at::Tensor> parameters() const;
  void train(bool on);
  /// Converts parameters and buffers (not the int64 permutations) to `dtype`.
  void to(at::ScalarType dtype);
  at::ScalarType dtype() const;
  /// The root torch::nn::Module (for code that includes <torch/torch.h>).
  std::shared_ptr<torch::nn::Module> module() const;

 private:
  void check_strain(const at::Tensor& strain, const char* what) const;
  NsfOptions options_;
  std::shared_ptr<detail::NsfModule> module_;
};

// --- importance sampling ------------------------------------------------------------

/// Weighted samples from the flow proposal q(θ | d) towards p(θ | d) ∝ L(d | θ) π(θ).
struct ImportanceResult {
  at::Tensor samples;       ///< (n, D)
  at::Tensor log_weights;   ///< (n,) float64: log L + log π - log q; -inf outside the prior
  at::Tensor weights;       ///< (n,) float64, normalised to sum 1
  at::Tensor log_prob;      ///< (n,) log q(θ | d) of each draw: the flow's dtype, float64 with the phase drawn
  double ess = 0;           ///< (Σw)² / Σw²
  double efficiency = 0;    ///< ess / n
  double log_evidence = 0;  ///< logsumexp(log w) - log n
};

/// log L(θ) + log π(θ) (unnormalised log posterior) for θ (n, D) -> (n,) float64.
using LogTarget = std::function<at::Tensor(const at::Tensor& theta)>;

/// Draws n samples for one strain (T,) or (1, T) and weights them against `log_target`.
ImportanceResult importance_sample(NeuralSplineFlow& flow, const at::Tensor& strain, int64_t n,
                                   const LogTarget& log_target, std::optional<at::Generator> generator = std::nullopt);

/// ESS, efficiency and log evidence of given log weights (n,) (entries may be -inf).
ImportanceResult summarize_weights(at::Tensor samples, at::Tensor log_weights);

// --- the toy GW model (io/physics/gw_signal.hpp, docs/datasets.md#gw) ----------------

/// The datagen gw prior on θ = (chirp_mass, mass_ratio, distance, t_c, phase).
class GwPrior {
 public:
  explicit GwPrior(const io::gw::GwOptions& options = {}) : o_(options) {}
  /// log π(θ) for θ (n, 5) -> (n,) float64; -inf outside the support.
  at::Tensor log_prob(const at::Tensor& theta) const;
  /// Draws (n, 5) float64 samples.
  at::Tensor sample(int64_t n, std::optional<at::Generator> generator = std::nullopt) const;

 private:
  io::gw::GwOptions o_;
};

/// The whitened, windowed, noise-free template w(θ) exactly as datagen gw builds the
/// signal part of /strain: θ (n, 5) -> (n, T) float64.
at::Tensor gw_whitened_template(const at::Tensor& theta, const io::gw::GwOptions& options = {});

/// log L(d | θ) = -½‖d - w(θ)‖² - (T/2) log 2π for whitened strain d (T,) or (1, T)
/// (unit-variance white noise; the window and the zeroed low bins are neglected).
/// θ (n, 5) -> (n,) float64.
at::Tensor gw_log_likelihood(const at::Tensor& theta, const at::Tensor& strain,
                             const io::gw::GwOptions& options = {});

/// The phase's exact conditional, sampled on a grid ("synthetic phase", as DINGO's): the
/// toy waveform is linear in the phase, w(θ₄, φ) = cos φ w(θ₄, 0) + sin φ w(θ₄, π/2)
/// (gw_waveform: the phase only offsets the carrier), so log L(θ₄, φ) for every φ
/// follows from two templates. The draw takes a cell of `cells` equal cells on
/// [0, 2π) with probability ∝ L at its centre, then φ uniform in the cell.
struct PhaseDraws {
  at::Tensor phase;           ///< (n,) float64, in [0, 2π)
  at::Tensor log_prob;        ///< (n,) float64: log of the piecewise-constant density each φ was drawn from
  at::Tensor log_likelihood;  ///< (n,) float64: log L(d | θ₄, φ) at the drawn φ (gw_log_likelihood's)
};

/// Draws one phase per row of θ₄ (n, 4) [chirp_mass, mass_ratio, distance, t_c], all
/// inside the prior, for whitened strain (T,) or (1, T). cells >= 2. Throws ConfigError
/// naming the tensor on a bad shape.
PhaseDraws gw_draw_phase(const at::Tensor& theta4, const at::Tensor& strain, const io::gw::GwOptions& options,
                         int64_t cells, at::Generator& generator);

/// Time standardisation with an exact proposal density. A deterministic estimate of the
/// coalescence time, t̂(d) = t_ref + τ*/f_s with τ* the integer lag (within the prior's
/// t_c range, ± 0.1 s) maximising the matched-filter power |⟨d(· + τ), r⟩|² against a
/// fixed complex reference r = (w(θ_ref, 0), w(θ_ref, π/2)) merging at t_ref; the strain
/// is rolled by τ* so every event's merger sits near t_ref, and the flow learns
/// t_c − t̂ given the rolled strain. As t̂ is a function of d, q(θ | d) stays a proper
/// density (GNPE's blurred, iterated estimate would not give one).
struct TimeAlignment {
  at::Tensor aligned;  ///< (B, T): strain rolled left by the lag, d(t + τ*)
  at::Tensor t_hat;    ///< (B,) float64 seconds
};

class TimeAligner {
 public:
  /// `reference` (2, T) and `window` (4,) = [f_s, t_ref, lag_min, lag_max] (seconds), as
  /// gw_time_reference makes them (a model keeps them as buffers, so checkpoints carry them).
  TimeAligner(at::Tensor reference, at::Tensor window);
  /// strain (B, T) -> its alignment. Throws ConfigError naming the tensor on a bad shape.
  TimeAlignment align(const at::Tensor& strain) const;

 private:
  at::Tensor reference_, window_;
};

/// The reference of a TimeAligner for `options`: (2, T) float64 templates at the prior's
/// middle (chirp mass, mass ratio, t_c), 1000 Mpc, phase 0 and π/2; and (4,) float64
/// [f_s, t_ref, lag_min, lag_max].
std::pair<at::Tensor, at::Tensor> gw_time_reference(const io::gw::GwOptions& options);

/// Cells of the phase grid importance sampling uses: 2π/2048 rad, within which log L
/// changes by about 0.3 at SNR 100.
inline constexpr int64_t kPhaseCells = 2048;

/// importance_sample with log L + log π of the toy GW model. A flow of 5 parameters
/// proposes θ; a flow of 4 (phase marginalised, `model.flow.marginalize_phase`)
/// proposes θ₄ and gw_draw_phase the phase, so the proposal is q(θ₄ | d) p(φ | θ₄, d)
/// and log_prob holds both; the target, L π of all five, is unchanged. With an
/// `aligner`, the flow sees the aligned strain and proposes t_c − t̂ (column 3).
ImportanceResult gw_importance_sample(NeuralSplineFlow& flow, const at::Tensor& strain, int64_t n,
                                      const io::gw::GwOptions& options = {},
                                      std::optional<at::Generator> generator = std::nullopt,
                                      const TimeAligner* aligner = nullptr);

}  // namespace hpcml::models::flows
