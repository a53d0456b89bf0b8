/// @file
/// The toy gravitational-wave signal model shared by the generator (`hpcml datagen gw`,
/// io/datagen) and the flow's exact likelihood and templates (models/flows): one
/// detector's whitened strain of a 1PN-corrected inspiral chirp in aLIGO-like noise.
/// It sits below both, so a model never depends on a data generator.
#pragma once

#include <cstdint>
#include <vector>

namespace hpcml::io::gw {

/// Whitened strain of one detector: 1PN-corrected inspiral chirps in aLIGO-like noise.
struct GwOptions {
  double sample_rate = 1024;  ///< Hz
  int64_t length = 2048;      ///< samples; a power of two
  double f_low = 15;          ///< Hz: the PSD is floored below, whitened bins below are zeroed
  double chirp_mass_min = 10, chirp_mass_max = 40;  ///< solar masses
  double mass_ratio_min = 0.25, mass_ratio_max = 1; ///< q = m2/m1
  double distance_min = 300, distance_max = 3000;   ///< Mpc, uniform in volume
  double tc_min = 1.2, tc_max = 1.8;                ///< s from the start of the segment
};

/// One-sided analytic aLIGO-like noise PSD (Ajith 2011 fit), 1/Hz, floored at f_low.
double gw_psd(double frequency, double f_low);

/// The optimally oriented strain of datagen gw (1PN chirp integrated back from f_ISCO at
/// t_c with RK4, damped tail after t_c; zero before the chirp enters f_min) at the
/// samples n / fs, n < h.size(), written into h. Shared by datagen and the flow's templates.
void gw_waveform(double chirp_mass, double mass_ratio, double distance_mpc, double tc, double phase, double fs,
                 double f_min, std::vector<double>& h);

/// Tukey window of length n with tapered fraction alpha (half at each end).
std::vector<double> tukey_window(int64_t n, double alpha);

/// In-place radix-2 FFT of (re, im) (length a power of two); inverse without the 1/N.
void fft(std::vector<double>& re, std::vector<double>& im, bool inverse);

}  // namespace hpcml::io::gw
