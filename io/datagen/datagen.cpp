// Shared pieces of the synthetic generators: seeds, random variates, column helpers.
#include "io/datagen/datagen.hpp"

#include <cstdio>

namespace hpcml::io::datagen {

const std::vector<std::string>& domains() {
  static const std::vector<std::string> names{"tracking", "jets", "gw", "calo", "lr"};
  return names;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t index) { return splitmix64(splitmix64(seed) ^ splitmix64(~index)); }

namespace detail {

double normal(std::mt19937_64& rng) {
  // Box-Muller; u1 in (0, 1] so the log is finite.
  const double u1 = 1.0 - uniform(rng);
  const double u2 = uniform(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

int64_t poisson(std::mt19937_64& rng, double mean) {
  if (mean <= 0) return 0;
  if (mean > 60) {
    const double x = std::round(normal(rng, mean, std::sqrt(mean)));
    return x < 0 ? 0 : static_cast<int64_t>(x);
  }
  // Inversion: walk the CDF.
  const double u = uniform(rng);
  double p = std::exp(-mean), cdf = p;
  int64_t k = 0;
  while (u > cdf && k < 1000) {
    ++k;
    p *= mean / static_cast<double>(k);
    cdf += p;
  }
  return k;
}

double gamma(std::mt19937_64& rng, double shape) {
  if (shape < 1) {
    // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
    return gamma(rng, shape + 1.0) * std::pow(1.0 - uniform(rng), 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - uniform(rng);
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

Column f32_column(std::string name, std::vector<int64_t> shape, std::vector<float> data,
                  std::vector<std::string> units, std::vector<std::string> features) {
  Column c;
  c.name = std::move(name);
  c.shape = std::move(shape);
  c.data = std::move(data);
  c.units = std::move(units);
  c.features = std::move(features);
  return c;
}

std::string number(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%.15g", value);
  return text;
}

}  // namespace detail

}  // namespace hpcml::io::datagen
