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

constexpr double kSunTime = 4.925490947e-6;  // G M_sun / c^3, s
constexpr double kSunLength = 1476.625;      // G M_sun / c^2, m
constexpr double kMegaparsec = 3.0856775814913673e22;  // m
constexpr double kC = 299792458.0;           // m/s

bool power_of_two(int64_t n) { return n > 1 && (n & (n - 1)) == 0; }

// df/dt of the inspiral at frequency f (Hz), with the 1PN correction in the symmetric mass ratio.
double chirp_rate(double f, double mc53, double m_s, double eta) {
  const double cbrt_f = std::cbrt(f), cbrt_m = std::cbrt(M_PI * m_s);
  const double x = cbrt_m * cbrt_m * cbrt_f * cbrt_f;
  // 96/5 pi^(8/3) Mc^(5/3) f^(11/3), with Mc^(5/3) precomputed by the caller (mc53).
  const double newtonian = 96.0 / 5.0 * 21.170591 * mc53 * f * f * f * cbrt_f * cbrt_f;
  return newtonian * std::max(0.1, 1.0 - (743.0 / 336.0 + 11.0 / 4.0 * eta) * x);
}

}  // namespace

void gw_waveform(double mc, double q, double distance_mpc, double tc, double phase, double fs, double f_min,
                 std::vector<double>& h) {
  const auto length = static_cast<int64_t>(h.size());
  const double m1 = mc * std::pow(1 + q, 0.2) / std::pow(q, 0.6), m2 = q * m1;
  const double m = m1 + m2, eta = m1 * m2 / (m * m);
  const double mc_s = mc * kSunTime, m_s = m * kSunTime;
  const double f_isco = 1.0 / (std::pow(6.0, 1.5) * M_PI * m_s);
  const double amp0 = 4.0 * std::pow(mc * kSunLength, 5.0 / 3.0) / (distance_mpc * kMegaparsec);
  auto amplitude = [&](double f) {
    const double c = std::cbrt(M_PI * f / kC);
    return amp0 * c * c;
  };
  std::fill(h.begin(), h.end(), 0.0);
  const double dt = 1.0 / fs;
  // After tc: a damped continuation at the last frequency (a stand-in for merger/ringdown).
  for (int64_t n = static_cast<int64_t>(std::ceil(tc * fs)); n < length; ++n) {
    const double tau = n * dt - tc;
    h[static_cast<size_t>(n)] = amplitude(f_isco) * std::exp(-tau * f_isco) * std::cos(phase + 2 * M_PI * f_isco * tau);
  }
  // Before tc: integrate (f, phase) backwards in time with RK4 from (f_isco, phase).
  double f = f_isco, phi = phase, t = tc;
  const int substeps = 4;
  const double mc53 = std::pow(mc_s, 5.0 / 3.0);
  auto rhs = [&](double ff) { return chirp_rate(ff, mc53, m_s, eta); };
  for (int64_t n = static_cast<int64_t>(std::floor(tc * fs)); n >= 0 && f > f_min; --n) {
    const double target = n * dt;
    const double step = (t - target) / substeps;
    for (int k = 0; k < substeps && step > 0; ++k) {
      // d f / d(-t) = -rate; d phi / d(-t) = -2 pi f.
      const double k1f = -rhs(f), k1p = -2 * M_PI * f;
      const double f2 = std::max(1.0, f + 0.5 * step * k1f);
      const double k2f = -rhs(f2), k2p = -2 * M_PI * f2;
      const double f3 = std::max(1.0, f + 0.5 * step * k2f);
      const double k3f = -rhs(f3), k3p = -2 * M_PI * f3;
      const double f4 = std::max(1.0, f + step * k3f);
      const double k4f = -rhs(f4), k4p = -2 * M_PI * f4;
      f = std::max(1.0, f + step / 6 * (k1f + 2 * k2f + 2 * k3f + k4f));
      phi += step / 6 * (k1p + 2 * k2p + 2 * k3p + k4p);
    }
    t = target;
    h[static_cast<size_t>(n)] = amplitude(f) * std::cos(phi);
  }
}

std::vector<double> tukey_window(int64_t n, double alpha) {
  std::vector<double> w(static_cast<size_t>(n), 1.0);
  const double edge = alpha * static_cast<double>(n - 1) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::min<double>(static_cast<double>(i), static_cast<double>(n - 1 - i));
    if (d < edge) w[static_cast<size_t>(i)] = 0.5 * (1 - std::cos(M_PI * d / edge));
  }
  return w;
}

double gw_psd(double frequency, double f_low) {
  // Ajith (2011) fit to aLIGO zero-detuned high power, x = f / 245.4 Hz.
  const double x = std::max(frequency, f_low) / 245.4;
  const double x2 = x * x;
  return 1e-48 * (0.0152 / (x2 * x2) + 0.2935 * std::pow(x, 9.0 / 4.0) + 2.7951 * std::pow(x, 1.5) -
                  6.5080 * std::pow(x, 0.75) + 17.7622);
}

void fft(std::vector<double>& re, std::vector<double>& im, bool inverse) {
  const size_t n = re.size();
  for (size_t i = 1, j = 0; i < n; ++i) {
    size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(re[i], re[j]), std::swap(im[i], im[j]);
  }
  // Twiddles exp(-+2 pi i k / n), k < n/2; a stage of length len uses every (n/len)-th.
  std::vector<double> cos_table(n / 2), sin_table(n / 2);
  for (size_t k = 0; k < n / 2; ++k) {
    const double angle = 2 * M_PI * static_cast<double>(k) / static_cast<double>(n);
    cos_table[k] = std::cos(angle);
    sin_table[k] = inverse ? std::sin(angle) : -std::sin(angle);
  }
  for (size_t len = 2; len <= n; len <<= 1) {
    const size_t stride = n / len;
    for (size_t i = 0; i < n; i += len) {
      for (size_t k = 0; k < len / 2; ++k) {
        const double wr = cos_table[k * stride], wi = sin_table[k * stride];
        const size_t a = i + k, b = i + k + len / 2;
        const double xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr, im[b] = im[a] - xi;
        re[a] += xr, im[a] += xi;
      }
    }
  }
}

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
