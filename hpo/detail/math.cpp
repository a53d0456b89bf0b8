#include "hpo/detail/math.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace hpcml::hpo::detail {
namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double kLogSqrt2Pi = 0.91893853320467274178;  // log(sqrt(2 pi))

// log(exp(la) - exp(lb)) for la >= lb.
double log_diff_exp(double la, double lb) {
  if (lb == -kInf) return la;
  if (lb >= la) return -kInf;
  return la + std::log1p(-std::exp(lb - la));
}
}  // namespace

double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

std::size_t uniform_index(Rng& rng, std::size_t n) {
  // Rejection keeps every index equally likely for any n.
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t r = rng();
  while (r >= limit) r = rng();
  return static_cast<std::size_t>(r % n);
}

double log_ndtr(double x) {
  if (x > 6) return std::log1p(-0.5 * std::erfc(x / kSqrt2));
  if (x > -20) return std::log(0.5 * std::erfc(-x / kSqrt2));
  // Asymptotic series of the Mills ratio, where erfc would underflow.
  const double x2 = x * x;
  const double series = 1 - 1 / x2 + 3 / (x2 * x2) - 15 / (x2 * x2 * x2) + 105 / (x2 * x2 * x2 * x2);
  return -0.5 * x2 - std::log(-x) - kLogSqrt2Pi + std::log(series);
}

double ndtri(double p) {
  if (p <= 0) return -kInf;
  if (p >= 1) return kInf;
  // Acklam's rational approximation (relative error 1.2e-9), then one Halley step.
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double p_low = 0.02425;
  double x;
  if (p < p_low) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - p_low) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double e = 0.5 * std::erfc(-x / kSqrt2) - p;
  const double u = e * std::exp(kLogSqrt2Pi + 0.5 * x * x);
  return x - u / (1 + 0.5 * x * u);
}

double log_normal_mass(double a, double b) {
  if (!(a < b)) return -kInf;
  if (a >= 0) return log_diff_exp(log_ndtr(-a), log_ndtr(-b));  // right tail, by symmetry
  if (b <= 0) return log_diff_exp(log_ndtr(b), log_ndtr(a));
  return std::log1p(-std::exp(log_ndtr(a)) - std::exp(log_ndtr(-b)));
}

double log_sum_exp(const std::vector<double>& values) {
  double m = -kInf;
  for (double v : values) m = std::max(m, v);
  if (m == -kInf) return -kInf;
  double s = 0;
  for (double v : values) s += std::exp(v - m);
  return m + std::log(s);
}

double sample_truncnorm(double mu, double sigma, double low, double high, Rng& rng) {
  double a = (low - mu) / sigma;
  double b = (high - mu) / sigma;
  // Invert the CDF on the side of the mean where it has precision.
  const bool flip = a > 0;
  if (flip) {
    const double t = a;
    a = -b;
    b = -t;
  }
  const double pa = std::exp(log_ndtr(a));
  const double pb = std::exp(log_ndtr(b));
  const double u = pa + (pb - pa) * uniform01(rng);
  double z = (u > 0 && u < 1) ? ndtri(u) : a;
  z = std::clamp(z, a, b);
  if (flip) z = -z;
  return std::clamp(mu + sigma * z, low, high);
}

double truncnorm_log_pdf(double x, double mu, double sigma, double low, double high) {
  if (x < low || x > high) return -kInf;
  const double z = (x - mu) / sigma;
  return -0.5 * z * z - kLogSqrt2Pi - std::log(sigma) - log_normal_mass((low - mu) / sigma, (high - mu) / sigma);
}

}  // namespace hpcml::hpo::detail
