// Calorimetry: HCAL channel pulses (charge in 8 time samples -> in-time energy, the
// FACILE-style regression) and electron showers in a 4-layer sampling calorimeter
// (images -> energy, the DeepCalo-style regression). See docs/datasets.md#calo.
#include <algorithm>
#include <array>
#include <cmath>

#include "io/datagen/datagen.hpp"

namespace hpcml::io::datagen {

namespace {

using detail::exponential;
using detail::normal;
using detail::uniform;

// --- channels -------------------------------------------------------------------

constexpr int kSamples = 8;        // time samples of 25 ns
constexpr int kInTimeSample = 3;   // the triggered bunch crossing starts TS3
constexpr double kNominalGain = 100;  // fC per GeV at depth 1, before ageing

// Fraction of a pulse starting at `t0` ns (relative to TS0) collected in each sample:
// a Gamma(3, 4.5 ns) time profile (SiPM + shaping), integrated over 25 ns bins.
std::array<double, kSamples> pulse_fractions(double t0) {
  auto cdf = [](double t) {  // regularised lower incomplete gamma P(3, t / tau)
    if (t <= 0) return 0.0;
    const double x = t / 4.5;
    return 1 - std::exp(-x) * (1 + x + x * x / 2);
  };
  std::array<double, kSamples> f{};
  for (int k = 0; k < kSamples; ++k) f[static_cast<size_t>(k)] = cdf(25.0 * (k + 1) - t0) - cdf(25.0 * k - t0);
  return f;
}

// Response relative to the stored gain: radiation ageing grows with |ieta| and is worst in
// the front depths; unknown to a conditions database, learnable from (ieta, depth).
double ageing(int ieta, int depth) {
  const double a = std::abs(ieta) / 16.0;
  return std::exp(-0.35 * a * a / depth) * (1 + 0.04 * std::sin(0.7 * ieta));
}

// QIE-like digitisation: bins widen with the charge (constant relative precision).
double digitise(double q) {
  const double width = std::max(1.0, 0.015 * std::abs(q));
  return (std::floor(q / width) + 0.5) * width;
}

// --- showers --------------------------------------------------------------------

constexpr int kLayers = 4, kEta = 56, kPhi = 11;
constexpr double kEtaPitch = 0.1, kPhiPitch = 0.5;  // cell size in Moliere radii
// Shower depth boundaries in X0 from the front of the dead material: dead, L0..L3, then leakage.
constexpr std::array<double, kLayers + 1> kBoundaries{3.0, 4.0, 8.0, 22.0, 25.0};
constexpr std::array<double, kLayers> kSamplingFraction{0.30, 0.20, 0.18, 0.16};
constexpr double kSpotEnergy = 0.004;  // GeV: mean spot energy (exponential): the sampling term
constexpr double kCriticalEnergy = 0.01;  // GeV
constexpr double kCellSaturation = 40;    // GeV visible: soft saturation of a cell
constexpr double kModulation = 0.12;      // response modulation with the impact point

}  // namespace

Table generate_calo_channels(const CaloChannelsOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  Table t;
  t.schema = "hpcml.calo.channels";
  t.schema_version = 1;
  t.rows = events;
  std::vector<float> inputs, energies;
  inputs.reserve(static_cast<size_t>(events * 15));
  for (int64_t e = 0; e < events; ++e) {
    auto rng = detail::event_rng(seed, first_event + e);
    const double energy = o.energy_min * std::pow(o.energy_max / o.energy_min, uniform(rng));
    int ieta = 1 + static_cast<int>(uniform(rng) * 16);
    if (uniform(rng) < 0.5) ieta = -ieta;
    const int iphi = 1 + static_cast<int>(uniform(rng) * 72);
    const int depth = 1 + static_cast<int>(uniform(rng) * 4);
    const double gain = kNominalGain * (1 + 0.25 * (depth - 1)) * std::exp(normal(rng, 0, 0.15));  // fC/GeV
    const double pedestal = uniform(rng, 3, 12), pedestal_width = uniform(rng, 0.8, 2.5);  // fC per sample
    const int64_t pileup = detail::poisson(rng, o.mean_pileup);
    const double response = ageing(ieta, depth);
    std::array<double, kSamples> charge{};
    // The in-time deposit: time slewing (small pulses arrive later), gain, ageing,
    // photo-statistics and a soft saturation of the SiPM.
    const double t0 = 25.0 * kInTimeSample + 4.0 + 6.0 * std::exp(-energy / 8.0) + normal(rng, 0, 1.0);
    double q = energy * gain * response;
    q = std::max(0.0, q * (1 + normal(rng, 0, 0.1 / std::sqrt(std::max(energy, 0.05)))));
    q = q / (1 + q / 60000.0);
    const auto shape = pulse_fractions(t0);
    for (int k = 0; k < kSamples; ++k) charge[static_cast<size_t>(k)] += q * shape[static_cast<size_t>(k)];
    // Pile-up: soft deposits from every bunch crossing from 4 before to 4 after (in-time included).
    for (int bx = -4; bx <= 4; ++bx) {
      const int64_t hits = detail::poisson(rng, 0.04 * static_cast<double>(pileup));
      double pu = 0;
      for (int64_t i = 0; i < hits; ++i) pu += exponential(rng, 0.6);
      if (pu <= 0) continue;
      const auto pu_shape = pulse_fractions(25.0 * (kInTimeSample + bx) + 4.0 + 6.0 * std::exp(-pu / 8.0));
      for (int k = 0; k < kSamples; ++k) {
        charge[static_cast<size_t>(k)] += pu * gain * response * pu_shape[static_cast<size_t>(k)];
      }
    }
    for (int k = 0; k < kSamples; ++k) {
      const double raw = charge[static_cast<size_t>(k)] + pedestal + normal(rng, 0, pedestal_width);
      inputs.push_back(static_cast<float>(digitise(std::max(0.0, raw))));
    }
    for (const double v : {static_cast<double>(ieta), static_cast<double>(iphi), static_cast<double>(depth), gain,
                           pedestal, pedestal_width, static_cast<double>(pileup)}) {
      inputs.push_back(static_cast<float>(v));
    }
    energies.push_back(static_cast<float>(energy));
  }
  t.fixed.push_back(detail::f32_column(
      "inputs", {events, 15}, std::move(inputs),
      {"fC", "fC", "fC", "fC", "fC", "fC", "fC", "fC", "", "", "", "fC/GeV", "fC", "fC", ""},
      {"charge_ts0", "charge_ts1", "charge_ts2", "charge_ts3", "charge_ts4", "charge_ts5", "charge_ts6", "charge_ts7",
       "ieta", "iphi", "depth", "gain", "pedestal", "pedestal_width", "n_pileup"}));
  t.fixed.push_back(detail::f32_column("energy", {events}, std::move(energies), {"GeV"}));
  t.attributes["generator"] = "hpcml datagen calo (channels)";
  t.attributes["calo.energy_range_GeV"] = detail::number(o.energy_min) + "," + detail::number(o.energy_max) +
                                          " (log-uniform)";
  t.attributes["calo.mean_pileup"] = detail::number(o.mean_pileup);
  t.attributes["calo.target"] = "energy of the in-time deposit (GeV), excluding pile-up";
  return t;
}

Table generate_calo_showers(const CaloShowersOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  Table t;
  t.schema = "hpcml.calo.showers";
  t.schema_version = 1;
  t.rows = events;
  constexpr int64_t kCells = int64_t{kLayers} * kEta * kPhi;
  std::vector<float> images(static_cast<size_t>(events * kCells), 0.0f), energies;
  std::vector<double> cells(static_cast<size_t>(kCells));
  for (int64_t e = 0; e < events; ++e) {
    auto rng = detail::event_rng(seed, first_event + e);
    const double energy = o.energy_min * std::pow(o.energy_max / o.energy_min, uniform(rng));
    std::fill(cells.begin(), cells.end(), 0.0);
    // Impact point anywhere in the central cell; shower-to-shower fluctuation of the depth.
    const double x0 = uniform(rng, -0.5, 0.5) * kEtaPitch, y0 = uniform(rng, -0.5, 0.5) * kPhiPitch;
    const double b = 0.5;
    const double t_max = std::max(0.5, std::log(energy / kCriticalEnergy) - 0.5) * (1 + normal(rng, 0, 0.08));
    const double a = 1 + b * t_max;
    // Where the shower starts (the first conversion, mean free path 9/7 X0): shifts the whole
    // profile, so the energy lost in front of layer 0 fluctuates from shower to shower.
    const double start = exponential(rng, 9.0 / 7.0) - 9.0 / 7.0;
    const int64_t spots = detail::poisson(rng, energy / kSpotEnergy);
    for (int64_t s = 0; s < spots; ++s) {
      const double spot_energy = exponential(rng, kSpotEnergy);
      const double depth = start + detail::gamma(rng, a) / b;  // X0
      if (depth < kBoundaries[0] || depth >= kBoundaries[kLayers]) continue;  // dead material or leakage
      int layer = 0;
      while (depth >= kBoundaries[static_cast<size_t>(layer + 1)]) ++layer;
      // Lateral: core (Moliere-like, widening with depth) plus a halo; r ~ R sqrt(u / (1 - u)).
      const double core = 0.12 * (1 + depth / 15.0), halo = 0.6;
      const double radius = (uniform(rng) < 0.85 ? core : halo);
      const double u = uniform(rng);
      const double r = radius * std::sqrt(u / (1 - u + 1e-12));
      const double angle = uniform(rng, 0, 2 * M_PI);
      const double x = x0 + r * std::cos(angle), y = y0 + r * std::sin(angle);
      const auto i = static_cast<int64_t>(std::floor(x / kEtaPitch + kEta / 2.0));
      const auto j = static_cast<int64_t>(std::floor(y / kPhiPitch + kPhi / 2.0));
      if (i < 0 || i >= kEta || j < 0 || j >= kPhi) continue;  // lateral leakage
      cells[static_cast<size_t>((layer * kEta + i) * kPhi + j)] +=
          spot_energy * kSamplingFraction[static_cast<size_t>(layer)];
    }
    // Response modulation with the impact point across the cell (absorber geometry).
    const double modulation = 1 - kModulation * std::cos(2 * M_PI * x0 / kEtaPitch);
    for (auto& c : cells) c *= modulation;
    float* image = images.data() + e * kCells;
    for (int64_t c = 0; c < kCells; ++c) {
      double v = cells[static_cast<size_t>(c)];
      v = v / (1 + v / kCellSaturation) + normal(rng, 0, o.cell_noise);
      image[c] = v > 3 * o.cell_noise ? static_cast<float>(v) : 0.0f;  // zero suppression
    }
    energies.push_back(static_cast<float>(energy));
  }
  t.fixed.push_back(detail::f32_column("images", {events, kLayers, kEta, kPhi}, std::move(images), {"GeV"}));
  t.fixed.push_back(detail::f32_column("energy", {events}, std::move(energies), {"GeV"}));
  std::vector<float> sf(kSamplingFraction.begin(), kSamplingFraction.end());
  t.meta.push_back(detail::f32_column("sampling_fraction", {kLayers}, std::move(sf), {""}));
  std::vector<float> bounds(kBoundaries.begin(), kBoundaries.end());
  t.meta.push_back(detail::f32_column("layer_boundaries", {kLayers + 1}, std::move(bounds), {"X0"}));
  t.attributes["generator"] = "hpcml datagen calo (showers)";
  t.attributes["calo.energy_range_GeV"] = detail::number(o.energy_min) + "," + detail::number(o.energy_max) +
                                          " (log-uniform)";
  t.attributes["calo.cell_noise_GeV"] = detail::number(o.cell_noise);
  t.attributes["calo.cells"] = "4 layers x 56 (eta, 0.1 R_M) x 11 (phi, 0.5 R_M); visible energy, zero-suppressed at 3 sigma";
  return t;
}

}  // namespace hpcml::io::datagen
