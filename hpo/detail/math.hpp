/// @file
/// Numerics for the samplers: platform-independent uniform draws, the standard normal's
/// log CDF and inverse, and truncated normals. Internal to hpo.
#pragma once

#include <cstddef>
#include <vector>

#include "hpo/space.hpp"

namespace hpcml::hpo::detail {

/// A double uniform on [0, 1) from the top 53 bits of one draw.
double uniform01(Rng& rng);
/// An index uniform on [0, n) (n > 0), without modulo bias.
std::size_t uniform_index(Rng& rng, std::size_t n);
/// log Phi(x), accurate in both tails.
double log_ndtr(double x);
/// Phi^{-1}(p) for p in (0, 1).
double ndtri(double p);
/// log(Phi(b) - Phi(a)) for a <= b, accurate in the tails (-inf when a == b).
double log_normal_mass(double a, double b);
/// log(exp(a) + exp(b) + ...) of `values` (-inf for none).
double log_sum_exp(const std::vector<double>& values);
/// A draw of N(mu, sigma) truncated to [low, high] (by inverting the CDF).
double sample_truncnorm(double mu, double sigma, double low, double high, Rng& rng);
/// log density at x of N(mu, sigma) truncated to [low, high] (-inf outside).
double truncnorm_log_pdf(double x, double mu, double sigma, double low, double high);

}  // namespace hpcml::hpo::detail
