// Gravitational-wave inspirals in one detector's noise: a 1PN-corrected chirp (frequency
// evolution integrated back from the ISCO), a damped tail, aLIGO-like coloured Gaussian
// noise, a Tukey window and whitening by the PSD. See docs/datasets.md#gw.
#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"

namespace hpcml::io::datagen {

namespace {

using detail::normal;
using detail::uniform;

bool power_of_two(int64_t n) { return n > 1 && (n & (n - 1)) == 0; }

}  // namespace

Table generate_gw(const GwOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  HPCML_CHECK_AS(ConfigError, power_of_two(o.length), "datagen gw: --length: expected a power of two >= 2; found ",
                 o.length);
  const int64_t n = o.length, bins = n / 2 + 1;
  const double fs = o.sample_rate, df = fs / static_cast<double>(n);
  std::vector<double> psd(static_cast<size_t>(bins));
  for (int64_t k = 0; k < bins; ++k) psd[static_cast<size_t>(k)] = gw_psd(static_cast<double>(k) * df, o.f_low);
  const auto window = tukey_window(n, 0.1);

  Table t;
  t.schema = "hpcml.gw";
  t.schema_version = 1;
  t.rows = events;
  std::vector<float> strain, signal, parameters, snrs;
  strain.reserve(static_cast<size_t>(events * n));
  signal.reserve(static_cast<size_t>(events * n));
  std::vector<double> re(static_cast<size_t>(n)), im(static_cast<size_t>(n)), hre(re.size()), him(re.size()),
      h(re.size());
  for (int64_t e = 0; e < events; ++e) {
    auto rng = detail::event_rng(seed, first_event + e);
    const double mc = uniform(rng, o.chirp_mass_min, o.chirp_mass_max);
    const double q = uniform(rng, o.mass_ratio_min, o.mass_ratio_max);
    // Uniform in volume between the distance bounds.
    const double d3 = uniform(rng, std::pow(o.distance_min, 3), std::pow(o.distance_max, 3));
    const double distance = std::cbrt(d3);
    const double tc = uniform(rng, o.tc_min, o.tc_max), phase = uniform(rng, 0, 2 * M_PI);
    for (const double v : {mc, q, distance, tc, phase}) parameters.push_back(static_cast<float>(v));

    gw_waveform(mc, q, distance, tc, phase, fs, /*f_min=*/o.f_low * 0.5, h);
    // Coloured noise: complex Gaussian bins with E|X_k|^2 = N fs S(f_k) / 2.
    for (int64_t k = 0; k < bins; ++k) {
      const double var = static_cast<double>(n) * fs * psd[static_cast<size_t>(k)] / 2;
      const bool real_only = k == 0 || k == n / 2;
      const double s = real_only ? std::sqrt(var) : std::sqrt(var / 2);
      re[static_cast<size_t>(k)] = normal(rng, 0, s);
      im[static_cast<size_t>(k)] = real_only ? 0.0 : normal(rng, 0, s);
      if (k > 0 && k < n / 2) {
        re[static_cast<size_t>(n - k)] = re[static_cast<size_t>(k)];
        im[static_cast<size_t>(n - k)] = -im[static_cast<size_t>(k)];
      }
    }
    fft(re, im, /*inverse=*/true);
    // Data = (noise + signal) windowed; the signal alone goes the same way for the SNR.
    for (int64_t i = 0; i < n; ++i) {
      const auto u = static_cast<size_t>(i);
      re[u] = (re[u] / static_cast<double>(n) + h[u]) * window[u];
      im[u] = 0;
      hre[u] = h[u] * window[u];
      him[u] = 0;
    }
    fft(re, im, /*inverse=*/false);
    fft(hre, him, /*inverse=*/false);
    // Whiten: divide by sqrt(fs S / 2) so white noise has unit variance per sample; drop bins below f_low.
    for (int64_t k = 0; k < n; ++k) {
      const int64_t kk = k <= n / 2 ? k : n - k;
      const auto u = static_cast<size_t>(k);
      const double f = static_cast<double>(kk) * df;
      const double scale = f < o.f_low ? 0.0 : 1.0 / std::sqrt(fs * psd[static_cast<size_t>(kk)] / 2);
      re[u] *= scale, im[u] *= scale, hre[u] *= scale, him[u] *= scale;
    }
    fft(re, im, /*inverse=*/true);
    fft(hre, him, /*inverse=*/true);
    double snr2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      const auto u = static_cast<size_t>(i);
      strain.push_back(static_cast<float>(re[u] / static_cast<double>(n)));
      const double w = hre[u] / static_cast<double>(n);
      signal.push_back(static_cast<float>(w));
      snr2 += w * w;
    }
    snrs.push_back(static_cast<float>(std::sqrt(snr2)));
  }
  t.fixed.push_back(detail::f32_column("strain", {events, n}, std::move(strain), {""}));
  t.fixed.push_back(detail::f32_column("signal", {events, n}, std::move(signal), {""}));
  t.fixed.push_back(detail::f32_column("parameters", {events, 5}, std::move(parameters),
                                       {"M_sun", "", "Mpc", "s", "rad"},
                                       {"chirp_mass", "mass_ratio", "distance", "t_c", "phase"}));
  t.fixed.push_back(detail::f32_column("snr", {events}, std::move(snrs), {""}));
  Column psd_col;
  psd_col.name = "psd";
  psd_col.shape = {bins};
  psd_col.data = psd;
  psd_col.units = {"1/Hz"};
  t.meta.push_back(std::move(psd_col));
  Column rate;
  rate.name = "sample_rate";
  rate.shape = {1};
  rate.data = std::vector<double>{fs};
  rate.units = {"Hz"};
  t.meta.push_back(std::move(rate));

  t.attributes["generator"] = "hpcml datagen gw";
  t.attributes["gw.sample_rate_Hz"] = detail::number(fs);
  t.attributes["gw.length"] = std::to_string(n);
  t.attributes["gw.f_low_Hz"] = detail::number(o.f_low);
  t.attributes["gw.prior.chirp_mass_M_sun"] = detail::number(o.chirp_mass_min) + "," + detail::number(o.chirp_mass_max);
  t.attributes["gw.prior.mass_ratio"] = detail::number(o.mass_ratio_min) + "," + detail::number(o.mass_ratio_max);
  t.attributes["gw.prior.distance_Mpc"] =
      detail::number(o.distance_min) + "," + detail::number(o.distance_max) + " (uniform in volume)";
  t.attributes["gw.prior.t_c_s"] = detail::number(o.tc_min) + "," + detail::number(o.tc_max);
  t.attributes["gw.prior.phase_rad"] = "0," + detail::number(2 * M_PI);
  t.attributes["gw.psd"] = "Ajith 2011 analytic aLIGO zero-detuned high-power fit, floored below f_low";
  t.attributes["gw.whitening"] = "Tukey(0.1) window, FFT, divided by sqrt(fs S(f)/2), bins below f_low zeroed";
  return t;
}

}  // namespace hpcml::io::datagen
