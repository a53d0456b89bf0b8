/// @file
/// The neural spline flow as a Trainer model (zoo name "nsf-gw", task "density"), the
/// data-dependent initialisation it needs before training, and the calibration
/// statistics `hpcml eval` reports for it (docs/flows.md, docs/models.md).
///
/// Only ATen is needed by users of this header. Single process: the functions here
/// call no collectives; the Trainer combines ranks (Calibration::sums() is summed by
/// an allreduce). Not thread-safe.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/physics/gw_signal.hpp"
#include "models/flows/nsf.hpp"
#include "models/model.hpp"

namespace hpcml::models::flows {

/// The GW parameter names, in the order of the `parameters` field of `datagen gw`.
inline const std::vector<std::string> kGwParameterNames = {"chirp_mass", "mass_ratio", "distance", "t_c", "phase"};

/// A Model whose inputs are "theta" (B, D) and "strain" (B, T) and whose output is
/// log q(theta | strain) (B,): the Trainer's density task minimises -mean(output).
/// Parameter and buffer names are the flow's (the twin's state_dict names).
/// With the phase marginalised (`model.flow.marginalize_phase`) the flow has 4
/// parameters and forward() reads the first 4 of theta's 5 columns: the flow learns
/// q(θ₄ | strain), and gw_importance_sample draws the phase from its exact conditional.
/// With time alignment (`model.flow.align_time`) the flow sees the strain aligned by a
/// TimeAligner and models t_c − t̂ (column 3); the aligner's reference and window are
/// the model's buffers `time_reference` (2, T) and `time_window` (4,), after the flow's.
class NsfModel final : public Model {
 public:
  explicit NsfModel(const NsfOptions& options, bool marginalize_phase = false, bool align_time = false);
  bool marginalize_phase() const { return marginalize_phase_; }
  bool align_time() const { return time_reference_.defined(); }
  /// The flow's (θ, strain) for the data's: theta's first D columns (D + 1 given with the
  /// phase marginalised, else D), and with time alignment t_c − t̂ and the aligned strain.
  std::pair<at::Tensor, at::Tensor> flow_inputs(const at::Tensor& theta, const at::Tensor& strain) const;
  /// The aligner of the buffers; requires align_time().
  TimeAligner aligner() const;
  /// Sets the aligner's buffers (gw_time_reference's pair); requires align_time().
  void set_time_reference(const std::pair<at::Tensor, at::Tensor>& reference);
  std::string name() const override { return "nsf-gw"; }
  std::vector<std::string> input_names() const override { return {"theta", "strain"}; }
  using Model::forward;
  /// log q(theta | strain) (B,). Throws ConfigError naming a missing input or a bad shape.
  at::Tensor forward(const Inputs& inputs) override;
  std::vector<NamedTensor> named_parameters() const override { return flow_.named_parameters(); }
  std::vector<NamedTensor> named_buffers() const override;
  void set_training(bool on) override {
    flow_.train(on);
    training_ = on;
  }
  NeuralSplineFlow& flow() { return flow_; }
  /// Fresh noise in training (DINGO): while training, forward() takes input "signal"
  /// (B, T), the noise-free whitened signal of each strain (`datagen gw`'s `signal`),
  /// and pairs each signal with the noise (strain - signal) of another event of the
  /// batch, by a random permutation from torch's global generator (so a checkpoint
  /// resumes it). Off (the default): the files' (signal + noise) pairs as they are.
  void set_fresh_noise(bool on) { fresh_noise_ = on; }

 private:
  NeuralSplineFlow flow_;
  bool marginalize_phase_ = false;
  at::Tensor time_reference_, time_window_;  // defined with time alignment
  bool fresh_noise_ = false;
  bool training_ = true;
};

/// signal_i + (strain - signal)_{permutation_i}: each signal with the noise of the
/// event `permutation` names. signal, strain (B, T); permutation (B,) int64.
at::Tensor repair_noise(const at::Tensor& signal, const at::Tensor& strain, const at::Tensor& permutation);

/// The zoo factory: the default architecture (5 parameters, 2048-sample strain).
std::unique_ptr<Model> make_nsf_gw(uint64_t seed);

/// The toy-model options recorded in a `datagen gw` file's root attributes
/// (gw.sample_rate_Hz, gw.length, gw.f_low_Hz, gw.prior.*). Throws IoError naming the
/// file and the attribute when one is missing or malformed.
io::gw::GwOptions gw_options_from_file(const std::string& path);

/// Data-dependent initialisation before training (DINGO): θ standardisation from
/// `theta` (N, 5) (all training rows, the flow's columns), and the projection from the
/// SVD of the noise-free whitened templates of the first `waveforms` rows of `theta`
/// (gw_whitened_template with `gw`). With time alignment: the aligner's reference from
/// `gw`, t_c − t̂ standardised on the first `waveforms` rows of `strain` (N' >= waveforms,
/// T; unused otherwise), and the SVD of templates each aligned on itself. Deterministic:
/// the same inputs give the same weights on every rank.
void prepare_gw_flow(NsfModel& model, const at::Tensor& theta, const at::Tensor& strain, int64_t waveforms,
                     const io::gw::GwOptions& gw);

/// Options of the calibration statistics.
struct CalibrationOptions {
  int64_t samples = 1000;      ///< posterior draws per event
  int64_t bins = 100;          ///< bins of the credible level (P–P resolution 1/bins)
  int64_t width_bins = 1000;   ///< bins of a relative interval width on [0, 1]
  int64_t width_parameter = 0; ///< whose 90% interval width is histogrammed (chirp mass)
  double prior_width = 30;     ///< that parameter's prior width (the width's unit)
  int64_t chunk = 64;          ///< events sampled at once (memory: chunk x samples x D)
};

/// Summary of the calibration sums (after summing over ranks).
struct CalibrationResult {
  double events = 0;
  /// Per parameter: fraction of events whose true value lies in the central 50% / 90%
  /// credible interval of its marginal.
  std::vector<double> coverage_50, coverage_90;
  /// Per parameter: the empirical CDF of the credible level q = P(θ_post < θ_true) at
  /// 0, 1/bins, ..., 1 (the P–P curve; calibrated = the diagonal).
  std::vector<std::vector<double>> pp;
  /// Per parameter: KS distance of q from U(0, 1) at the bin edges, and its p-value.
  std::vector<double> ks_distance, ks_p;
  /// Median over events of the 90% interval width of `width_parameter` / prior_width
  /// (resolution 1/width_bins), and the same for the 50% interval.
  double median_width_90 = 0, median_width_50 = 0;
};

/// Simulation-based-calibration statistics of a flow over held-out (θ, strain) pairs,
/// accumulated batch by batch into one float64 tensor (sums()) so ranks combine by
/// an allreduce and the result does not depend on the number of ranks.
class Calibration {
 public:
  Calibration(int64_t theta_dim, const CalibrationOptions& options);
  /// Draws options.samples posterior samples for each strain (B, T) and records the
  /// credible level of each true theta (B, D) and the interval widths.
  void add(NeuralSplineFlow& flow, const at::Tensor& theta, const at::Tensor& strain, at::Generator& generator);
  at::Tensor& sums() { return sums_; }
  CalibrationResult result() const;

 private:
  int64_t dims_;
  CalibrationOptions o_;
  at::Tensor sums_;  // events, then dims x bins level histogram, then 2 x width_bins width histograms
};

/// The Kolmogorov distribution's survival function Q(λ) = 2 Σ (-1)^(k-1) exp(-2k²λ²),
/// with Stephens' small-sample correction λ = (√n + 0.12 + 0.11/√n) D.
double ks_p_value(double distance, double n);

}  // namespace hpcml::models::flows
