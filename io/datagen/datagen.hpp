/// @file
/// Synthetic physics data sets in hpcml's layout (docs/datasets.md): charged-particle
/// tracking, boosted top vs QCD jets, gravitational-wave chirps in coloured noise, and
/// HCAL channels / electron showers. Torch-free and deterministic: every event draws
/// from its own std::mt19937_64 seeded from (file seed, event index), and the random
/// variates are computed here (not by <random>'s distributions), so a file's content
/// depends only on (seed, file index, options), not on the rank count or the compiler.
///
/// Thread safety: the generate_* functions are pure; call them from any thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "io/physics/gw_signal.hpp"
#include "io/table.hpp"

namespace hpcml::io::datagen {

/// Domains `hpcml datagen` knows, in the order it lists them.
const std::vector<std::string>& domains();

/// The splitmix64 finaliser: a bijective 64-bit mix.
uint64_t splitmix64(uint64_t x);

/// The seed of stream `index` under `seed` (e.g. file k of a run, event i of a file).
uint64_t derive_seed(uint64_t seed, uint64_t index);

// --- tracking -------------------------------------------------------------------

/// Charged particles from a smeared vertex through a barrel tracker in a solenoid.
struct TrackingOptions {
  double mean_particles = 100;  ///< Poisson mean of particles per event
  double noise_fraction = 0.1;  ///< noise hits per true hit (Poisson mean)
  double b_field = 2.0;         ///< solenoid field, T
  double pt_min = 0.5;          ///< GeV
  double pt_max = 100.0;        ///< GeV
  double eta_max = 2.5;
  double sigma_rphi = 0.05;     ///< hit resolution along r*phi, mm
  double sigma_z = 0.5;         ///< hit resolution along z, mm
  double layer_x0 = 0.02;       ///< material per layer crossing, radiation lengths
  double half_length = 1050;    ///< barrel half-length, mm
  std::vector<double> layer_radii{32, 72, 116, 172, 260, 360, 500, 660, 820, 1020};  ///< mm
};

/// Events [first_event, first_event + events) of the file whose stream is `seed`.
Table generate_tracking(const TrackingOptions& options, uint64_t seed, int64_t first_event, int64_t events);

// --- jets -----------------------------------------------------------------------

/// Boosted hadronic top jets (label 1) and QCD light-parton jets (label 0).
struct JetsOptions {
  double pt_min = 550, pt_max = 650;  ///< parton-level jet pT, GeV
  double eta_max = 2.0;
  double radius = 0.8;                ///< jet radius R
  double signal_fraction = 0.5;       ///< probability that a jet is a top jet
  int min_constituents = 20, max_constituents = 100;
};

Table generate_jets(const JetsOptions& options, uint64_t seed, int64_t first_event, int64_t events);

// --- gravitational waves --------------------------------------------------------

/// The toy waveform model (GwOptions, gw_waveform, gw_psd, ...) lives in
/// io/physics/gw_signal.hpp, shared with the flow's likelihood (models/flows).
using gw::fft;
using gw::gw_psd;
using gw::gw_waveform;
using gw::GwOptions;
using gw::tukey_window;

Table generate_gw(const GwOptions& options, uint64_t seed, int64_t first_event, int64_t events);

// --- calorimetry ----------------------------------------------------------------

/// HCAL channel pulses (schema hpcml.calo.channels).
struct CaloChannelsOptions {
  double energy_min = 0.5, energy_max = 200;  ///< GeV, log-uniform
  double mean_pileup = 30;                    ///< mean pile-up interactions
};

/// Electron showers as 4 x 56 x 11 images (schema hpcml.calo.showers).
struct CaloShowersOptions {
  double energy_min = 1, energy_max = 100;  ///< GeV, log-uniform
  double cell_noise = 0.002;                ///< GeV (visible) per cell before zero suppression
};

Table generate_calo_channels(const CaloChannelsOptions& options, uint64_t seed, int64_t first_event, int64_t events);
Table generate_calo_showers(const CaloShowersOptions& options, uint64_t seed, int64_t first_event, int64_t events);

// --- likelihood ratios -------------------------------------------------------------

/// Events from two densities whose ratio is analytic (docs/datasets.md#lr), shaped like
/// an interference search (off-shell H -> ZZ): over x = (m, cos theta, phi) in the box
/// [m_lo, m_hi] x [-1, 1] x [0, 2 pi),
///   A_B = (m_lo / m)^2 (1 + a cos^2 theta)                        (real)
///   A_S = kappa BW(m) sqrt(1 - cos^2 theta) e^{i phi},  BW(m) = (Gamma/2) / ((M - m) - i Gamma/2)
///   p_0 ∝ |A_B|^2 (label 0),  p_1 ∝ |A_B + sqrt(mu) A_S|^2 (label 1),
/// so the interference 2 sqrt(mu) A_B Re(A_S) is negative in places. The normalisations
/// are analytic (the phi integral removes the interference): Z_mu = 2 pi (I_B + mu I_S).
struct LrOptions {
  double mu = 1.0;                 ///< signal strength of class 1
  double signal_fraction = 0.5;    ///< probability that an event is drawn from p_1 (label 1)
  double m_lo = 200, m_hi = 400;   ///< GeV
  double a = 0.5;                  ///< background angular coefficient
  double mass = 300, width = 30;   ///< M and Gamma of the resonance, GeV
  double kappa = 0.6;              ///< signal amplitude
};

/// The true log p_1(x) / p_0(x) (both normalised on the box) for `options`.
double lr_log_ratio(const LrOptions& options, double m, double cos_theta, double phi);

/// Schema hpcml.lr: x (N, 3) float32 [m, cos_theta, phi], label int64, log_r float64
/// (the true log ratio at the stored, float32-rounded x).
Table generate_lr(const LrOptions& options, uint64_t seed, int64_t first_event, int64_t events);

namespace detail {

/// Uniform in [0, 1) from 53 random bits.
inline double uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
inline double uniform(std::mt19937_64& rng, double a, double b) { return a + (b - a) * uniform(rng); }
/// Standard normal (Box-Muller; one value per call).
double normal(std::mt19937_64& rng);
inline double normal(std::mt19937_64& rng, double mean, double sigma) { return mean + sigma * normal(rng); }
/// Exponential with the given mean.
inline double exponential(std::mt19937_64& rng, double mean) { return -mean * std::log1p(-uniform(rng)); }
/// Poisson (inversion for small means, rounded normal for large ones).
int64_t poisson(std::mt19937_64& rng, double mean);
/// Gamma(shape, 1) (Marsaglia-Tsang).
double gamma(std::mt19937_64& rng, double shape);

/// The per-event generator of event `index` of the stream `seed`.
inline std::mt19937_64 event_rng(uint64_t seed, int64_t index) {
  return std::mt19937_64(derive_seed(seed, static_cast<uint64_t>(index)));
}

/// A 1-D or N-D float32 column.
Column f32_column(std::string name, std::vector<int64_t> shape, std::vector<float> data,
                  std::vector<std::string> units, std::vector<std::string> features = {});

/// "%.15g" of a double, for root attributes.
std::string number(double value);

}  // namespace detail

}  // namespace hpcml::io::datagen
