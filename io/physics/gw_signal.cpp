// The toy GW signal model: a 1PN-corrected chirp (frequency evolution integrated back
// from the ISCO), a damped tail, the aLIGO-like PSD, a Tukey window and an FFT.
// See io/physics/gw_signal.hpp and docs/datasets.md#gw.
#include "io/physics/gw_signal.hpp"

#include <algorithm>
#include <cmath>

namespace hpcml::io::gw {

namespace {

constexpr double kSunTime = 4.925490947e-6;  // G M_sun / c^3, s
constexpr double kSunLength = 1476.625;      // G M_sun / c^2, m
constexpr double kMegaparsec = 3.0856775814913673e22;  // m
constexpr double kC = 299792458.0;           // m/s


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

}  // namespace hpcml::io::gw
