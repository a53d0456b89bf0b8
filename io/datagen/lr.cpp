// Likelihood ratios: events from two densities whose ratio is known in closed form, an
// interference search in miniature (see datagen.hpp and docs/datasets.md#lr).
#include <cmath>
#include <complex>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"

namespace hpcml::io::datagen {

namespace {

using detail::uniform;

struct Amplitudes {
  double background;               // A_B (real)
  std::complex<double> signal;     // A_S
};

Amplitudes amplitudes(const LrOptions& o, double m, double c, double phi) {
  const double ratio = o.m_lo / m;
  const double background = ratio * ratio * (1 + o.a * c * c);
  const std::complex<double> bw = (o.width / 2) / std::complex<double>(o.mass - m, -o.width / 2);
  const std::complex<double> signal = o.kappa * bw * std::sqrt(std::max(0.0, 1 - c * c)) * std::polar(1.0, phi);
  return {background, signal};
}

// |A_B + sqrt(mu) A_S|^2, unnormalised.
double intensity(const LrOptions& o, double mu, double m, double c, double phi) {
  const Amplitudes a = amplitudes(o, m, c, phi);
  return std::norm(a.background + std::sqrt(mu) * a.signal);
}

// The box integrals of |A_B|^2 and |A_S|^2 over m and cos theta (phi gives 2 pi to both).
double background_integral(const LrOptions& o) {
  const double m_part = std::pow(o.m_lo, 4) * (std::pow(o.m_lo, -3) - std::pow(o.m_hi, -3)) / 3;
  const double c_part = 2 + 4 * o.a / 3 + 2 * o.a * o.a / 5;
  return m_part * c_part;
}

double signal_integral(const LrOptions& o) {
  const double g = o.width / 2;
  const double m_part = g * (std::atan((o.m_hi - o.mass) / g) - std::atan((o.m_lo - o.mass) / g));
  return o.kappa * o.kappa * m_part * 4.0 / 3.0;
}

}  // namespace

double lr_log_ratio(const LrOptions& o, double m, double c, double phi) {
  const double numerator = intensity(o, o.mu, m, c, phi), denominator = intensity(o, 0, m, c, phi);
  return std::log(numerator / denominator) - std::log1p(o.mu * signal_integral(o) / background_integral(o));
}

Table generate_lr(const LrOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  HPCML_CHECK_AS(ConfigError, o.mu >= 0 && o.m_lo > 0 && o.m_lo < o.m_hi && o.width > 0,
                 "datagen lr: expected mu >= 0, 0 < m_lo < m_hi and a width > 0");
  // Accept-reject from uniform proposals on the box under a bound of |A_B + sqrt(mu) A_S|^2.
  const double max_background = 1 + std::max(0.0, o.a);
  const double bound = std::pow(max_background + std::sqrt(o.mu) * o.kappa, 2);
  std::vector<float> x;
  std::vector<int64_t> labels;
  std::vector<double> log_r;
  x.reserve(static_cast<size_t>(events) * 3);
  for (int64_t i = 0; i < events; ++i) {
    auto rng = detail::event_rng(seed, first_event + i);
    const int64_t label = uniform(rng) < o.signal_fraction ? 1 : 0;
    const double mu = label == 1 ? o.mu : 0.0;
    float m = 0, c = 0, phi = 0;
    for (;;) {
      // Drawn in double, rounded to the float32 that is stored; accepted on those values.
      m = static_cast<float>(uniform(rng, o.m_lo, o.m_hi));
      c = static_cast<float>(uniform(rng, -1, 1));
      phi = static_cast<float>(uniform(rng, 0, 2 * M_PI));
      if (m < o.m_lo || m > o.m_hi || phi >= 2 * M_PI) continue;  // rounding out of the box
      if (uniform(rng) * bound <= intensity(o, mu, m, c, phi)) break;
    }
    x.insert(x.end(), {m, c, phi});
    labels.push_back(label);
    log_r.push_back(lr_log_ratio(o, m, c, phi));
  }
  Table t;
  t.schema = "hpcml.lr";
  t.rows = events;
  t.fixed.push_back(detail::f32_column("x", {events, 3}, std::move(x), {"GeV", "", "rad"}, {"m", "cos_theta", "phi"}));
  Column label;
  label.name = "label";
  label.shape = {events};
  label.data = std::move(labels);
  t.fixed.push_back(std::move(label));
  Column truth;
  truth.name = "log_r";
  truth.shape = {events};
  truth.data = std::move(log_r);
  t.fixed.push_back(std::move(truth));
  t.attributes = {{"generator", "hpcml datagen lr"},
                  {"lr.mu", detail::number(o.mu)},
                  {"lr.signal_fraction", detail::number(o.signal_fraction)},
                  {"lr.m_GeV", detail::number(o.m_lo) + "," + detail::number(o.m_hi)},
                  {"lr.a", detail::number(o.a)},
                  {"lr.resonance_GeV", detail::number(o.mass) + "," + detail::number(o.width)},
                  {"lr.kappa", detail::number(o.kappa)},
                  {"lr.densities", "p1 ~ |A_B + sqrt(mu) A_S|^2, p0 ~ |A_B|^2 (docs/datasets.md#lr)"}};
  return t;
}

}  // namespace hpcml::io::datagen
