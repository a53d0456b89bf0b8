// Boosted top (t -> bW -> bqq') vs QCD jets: decay kinematics, an angular-ordered
// parton shower, a simple hadronisation, underlying event, detector smearing, and a
// cone of radius R around the parton-level axis. See docs/datasets.md#jets.
#include <algorithm>
#include <array>
#include <cmath>

#include "io/datagen/datagen.hpp"

namespace hpcml::io::datagen {

namespace {

using detail::exponential;
using detail::normal;
using detail::poisson;
using detail::uniform;

struct Vec3 {
  double x = 0, y = 0, z = 0;
};
Vec3 operator+(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
Vec3 operator*(double s, Vec3 a) { return {s * a.x, s * a.y, s * a.z}; }
double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
Vec3 cross(Vec3 a, Vec3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
double norm(Vec3 a) { return std::sqrt(dot(a, a)); }
Vec3 unit(Vec3 a) { return (1.0 / norm(a)) * a; }

struct P4 {
  double e = 0, px = 0, py = 0, pz = 0;
  Vec3 p() const { return {px, py, pz}; }
  double pt() const { return std::hypot(px, py); }
  double eta() const { return std::asinh(pz / std::max(pt(), 1e-12)); }
  double phi() const { return std::atan2(py, px); }
  double mass() const {
    const double m2 = e * e - px * px - py * py - pz * pz;
    return m2 > 0 ? std::sqrt(m2) : 0.0;
  }
};
P4 operator+(P4 a, P4 b) { return {a.e + b.e, a.px + b.px, a.py + b.py, a.pz + b.pz}; }

P4 massless(Vec3 direction, double energy) {
  const Vec3 n = unit(direction);
  return {energy, energy * n.x, energy * n.y, energy * n.z};
}

P4 with_mass(Vec3 momentum, double mass) {
  return {std::sqrt(dot(momentum, momentum) + mass * mass), momentum.x, momentum.y, momentum.z};
}

// Lorentz boost of `v` by velocity `beta` (|beta| < 1).
P4 boost(const P4& v, Vec3 beta) {
  const double b2 = dot(beta, beta);
  if (b2 <= 0) return v;
  const double gamma = 1.0 / std::sqrt(1.0 - b2);
  const double bp = dot(beta, v.p());
  const double g2 = (gamma - 1.0) / b2;
  const Vec3 p = v.p() + (g2 * bp + gamma * v.e) * beta;
  return {gamma * (v.e + bp), p.x, p.y, p.z};
}

Vec3 isotropic(std::mt19937_64& rng) {
  const double cos_t = uniform(rng, -1, 1), phi = uniform(rng, 0, 2 * M_PI);
  const double sin_t = std::sqrt(std::max(0.0, 1 - cos_t * cos_t));
  return {sin_t * std::cos(phi), sin_t * std::sin(phi), cos_t};
}

// `n` (unit) turned by `angle` towards azimuth `psi` around itself.
Vec3 tilt(Vec3 n, double angle, double psi) {
  const Vec3 helper = std::abs(n.z) < 0.9 ? Vec3{0, 0, 1} : Vec3{1, 0, 0};
  const Vec3 a = unit(cross(n, helper));
  const Vec3 b = cross(n, a);
  const Vec3 t = std::cos(psi) * a + std::sin(psi) * b;
  return unit(std::cos(angle) * n + std::sin(angle) * t);
}

double wrap_phi(double dphi) {
  while (dphi > M_PI) dphi -= 2 * M_PI;
  while (dphi < -M_PI) dphi += 2 * M_PI;
  return dphi;
}

// Breit-Wigner truncated to +-5 widths.
double breit_wigner(std::mt19937_64& rng, double mass, double width) {
  for (;;) {
    const double m = mass + 0.5 * width * std::tan(M_PI * (uniform(rng) - 0.5));
    if (std::abs(m - mass) < 5 * width) return m;
  }
}

// Tunable constants of the shower model (calibrated so that a jet-level baseline
// reaches ROC AUC ~0.86; see tests/cli/test_datagen.py).
constexpr double kAlphaS = 0.10;     // fixed coupling
constexpr double kKtCut = 0.5;       // GeV: shower cut-off in relative kT
constexpr double kCA = 3.0, kCF = 4.0 / 3.0;
constexpr double kHadronKt = 0.35;   // GeV: mean kT of hadrons around their parton
constexpr double kUeDensity = 6.0;   // underlying-event particles per unit eta-phi area
constexpr double kUePt = 1.0;        // GeV: mean pT of underlying-event particles
constexpr double kPtThreshold = 0.5; // GeV: constituents below are not reconstructed
constexpr double kHadronsBase = 2.0, kHadronsPerLog = 1.0;  // hadrons per parton: 1 + Poisson(a + b ln(1 + E))
constexpr double kJetResponse = 0.05;  // relative jet-wide response spread
constexpr double kUnmerged = 0.12;     // top jets that lose one prong's products to another jet

struct Parton {
  Vec3 n;
  double e;
};

// Angular-ordered 1->2 shower of one parton (veto algorithm in ln theta), appending final partons.
void shower(std::mt19937_64& rng, Vec3 n, double e, double theta_max, double colour, std::vector<Parton>& out,
            int depth = 0) {
  double theta = theta_max;
  for (;;) {
    const double l_max = std::log(0.5 * e * theta / kKtCut);
    if (l_max <= 0 || depth > 40) break;
    const double rate = 2.0 * colour * kAlphaS / M_PI * l_max;  // emissions per unit ln(theta), overestimated
    theta *= std::exp(-exponential(rng, 1.0) / rate);
    const double l = std::log(0.5 * e * theta / kKtCut);
    if (l <= 0) break;
    if (uniform(rng) * l_max > l) continue;  // vetoed
    const double z_min = kKtCut / (e * theta);
    const double z = z_min * std::pow(0.5 / z_min, uniform(rng));
    const double psi = uniform(rng, 0, 2 * M_PI);
    shower(rng, tilt(n, (1 - z) * theta, psi), z * e, theta, kCA, out, depth + 1);
    n = tilt(n, z * theta, psi + M_PI);
    e *= 1 - z;
  }
  out.push_back({n, e});
}

// Hadrons of one final parton: 1 + Poisson energy shares with a small kT around it.
void hadronise(std::mt19937_64& rng, const Parton& parton, std::vector<P4>& out) {
  const int64_t n = 1 + poisson(rng, kHadronsBase + kHadronsPerLog * std::log1p(parton.e));
  std::vector<double> share(static_cast<size_t>(n));
  double sum = 0;
  for (auto& s : share) sum += (s = exponential(rng, 1.0));
  for (const double s : share) {
    const double e = parton.e * s / sum;
    const double kt = exponential(rng, kHadronKt);
    out.push_back(massless(tilt(parton.n, std::min(1.0, kt / std::max(e, 1e-3)), uniform(rng, 0, 2 * M_PI)), e));
  }
}

// Relative energy resolution of a reconstructed particle.
P4 smear(std::mt19937_64& rng, const P4& v) {
  const double e = v.e;
  const double sigma = std::sqrt(0.02 * 0.02 + 0.15 * 0.15 / std::max(e, 0.1));
  const double scale = std::max(0.05, 1 + sigma * normal(rng));
  const double eta = v.eta() + normal(rng, 0, 0.003), phi = v.phi() + normal(rng, 0, 0.003);
  const double pt = v.pt() * scale;
  return {pt * std::cosh(eta), pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta)};
}

struct Jet {
  int64_t label = 0;
  P4 sum;
  std::vector<P4> constituents;
};

Jet make_jet(std::mt19937_64& rng, const JetsOptions& o, bool top) {
  const double pt = uniform(rng, o.pt_min, o.pt_max);
  const double eta = uniform(rng, -o.eta_max, o.eta_max), phi = uniform(rng, -M_PI, M_PI);
  const Vec3 axis = unit({std::cos(phi), std::sin(phi), std::sinh(eta)});
  std::vector<Parton> partons;
  if (top) {
    // t -> b W, W -> q q', isotropic in the rest frames, boosted along the axis.
    const double mt = breit_wigner(rng, 172.8, 1.4), mw = breit_wigner(rng, 80.4, 2.1), mb = 4.8;
    const double pstar = std::sqrt(std::max(0.0, (mt * mt - (mw + mb) * (mw + mb)) * (mt * mt - (mw - mb) * (mw - mb)))) /
                         (2 * mt);
    const Vec3 d = isotropic(rng);
    const P4 w = with_mass(pstar * d, mw), b = with_mass(-pstar * d, mb);
    const Vec3 dq = isotropic(rng);
    const Vec3 beta_w = (1.0 / w.e) * w.p();
    const P4 q1 = boost(massless(dq, mw / 2), beta_w), q2 = boost(massless(-1.0 * dq, mw / 2), beta_w);
    const double p_top = pt * std::cosh(eta);
    const Vec3 beta_t = (p_top / std::sqrt(p_top * p_top + mt * mt)) * axis;
    // Each daughter showers inside the cone set by its distance to the nearest other prong.
    const std::array<P4, 3> prongs{boost(b, beta_t), boost(q1, beta_t), boost(q2, beta_t)};
    std::array<size_t, 4> prong_begin{};
    for (size_t i = 0; i < 3; ++i) {
      prong_begin[i] = partons.size();
      double nearest = o.radius;
      for (size_t j = 0; j < 3; ++j) {
        if (j != i) nearest = std::min(nearest, std::acos(std::clamp(dot(unit(prongs[i].p()), unit(prongs[j].p())), -1.0, 1.0)));
      }
      shower(rng, unit(prongs[i].p()), prongs[i].e, std::max(nearest, 0.05), kCF, partons);
    }
    prong_begin[3] = partons.size();
    // Not fully merged: with this probability the products of one prong end up in another jet.
    if (uniform(rng) < kUnmerged) {
      const size_t lost = static_cast<size_t>(uniform(rng) * 3);
      partons.erase(partons.begin() + static_cast<std::ptrdiff_t>(prong_begin[lost]),
                    partons.begin() + static_cast<std::ptrdiff_t>(prong_begin[lost + 1]));
    }
  } else {
    // A light quark (40%) or gluon (60%) with the full jet momentum.
    const double colour = uniform(rng) < 0.4 ? kCF : kCA;
    shower(rng, axis, pt * std::cosh(eta), o.radius, colour, partons);
  }
  std::vector<P4> hadrons;
  for (const auto& p : partons) hadronise(rng, p, hadrons);
  // Underlying event and pile-up: soft particles spread uniformly in the cone's area.
  const double area = M_PI * o.radius * o.radius;
  const int64_t n_ue = poisson(rng, kUeDensity * area);
  for (int64_t i = 0; i < n_ue; ++i) {
    const double r = o.radius * std::sqrt(uniform(rng)), a = uniform(rng, 0, 2 * M_PI);
    const double ue_pt = exponential(rng, kUePt), ue_eta = eta + r * std::cos(a), ue_phi = phi + r * std::sin(a);
    hadrons.push_back({ue_pt * std::cosh(ue_eta), ue_pt * std::cos(ue_phi), ue_pt * std::sin(ue_phi),
                       ue_pt * std::sinh(ue_eta)});
  }
  Jet jet;
  jet.label = top ? 1 : 0;
  // Jet-wide response (calibration, pile-up offset): correlated among the constituents.
  const double response = std::max(0.5, 1 + normal(rng, 0, kJetResponse));
  for (const auto& h : hadrons) {
    P4 r = smear(rng, h);
    r = {r.e * response, r.px * response, r.py * response, r.pz * response};
    if (r.pt() < kPtThreshold) continue;
    const double dr = std::hypot(r.eta() - eta, wrap_phi(r.phi() - phi));
    if (dr < o.radius) jet.constituents.push_back(r);
  }
  std::sort(jet.constituents.begin(), jet.constituents.end(),
            [](const P4& a, const P4& b) { return a.pt() > b.pt(); });
  if (jet.constituents.size() > static_cast<size_t>(o.max_constituents)) {
    jet.constituents.resize(static_cast<size_t>(o.max_constituents));
  }
  for (const auto& c : jet.constituents) jet.sum = jet.sum + c;
  return jet;
}

}  // namespace

Table generate_jets(const JetsOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  Table t;
  t.schema = "hpcml.jets";
  t.schema_version = 1;
  t.rows = events;
  std::vector<int64_t> labels;
  std::vector<float> jets, values, features;
  std::vector<int64_t> offsets{0};
  labels.reserve(static_cast<size_t>(events));
  for (int64_t i = 0; i < events; ++i) {
    auto rng = detail::event_rng(seed, first_event + i);
    const bool top = uniform(rng) < o.signal_fraction;
    Jet jet = make_jet(rng, o, top);
    // Too few constituents: regenerate (rare; keeps counts in [min, max] without padding).
    for (int tries = 0; jet.constituents.size() < static_cast<size_t>(o.min_constituents) && tries < 100; ++tries) {
      jet = make_jet(rng, o, top);
    }
    labels.push_back(jet.label);
    const double jpt = jet.sum.pt(), jeta = jet.sum.eta(), jphi = jet.sum.phi(), je = jet.sum.e;
    for (const double v : {jpt, jeta, jphi, jet.sum.mass()}) jets.push_back(static_cast<float>(v));
    for (const auto& c : jet.constituents) {
      for (const double v : {c.e, c.px, c.py, c.pz}) values.push_back(static_cast<float>(v));
      const double deta = c.eta() - jeta, dphi = wrap_phi(c.phi() - jphi);
      for (const double v : {deta, dphi, std::log(c.pt()), std::log(c.e), std::log(c.pt() / jpt), std::log(c.e / je),
                             std::hypot(deta, dphi)}) {
        features.push_back(static_cast<float>(v));
      }
    }
    offsets.push_back(offsets.back() + static_cast<int64_t>(jet.constituents.size()));
  }
  Column label;
  label.name = "label";
  label.shape = {events};
  label.data = std::move(labels);
  label.units = {""};
  t.fixed.push_back(std::move(label));
  t.fixed.push_back(detail::f32_column("jet", {events, 4}, std::move(jets), {"GeV", "", "rad", "GeV"},
                                       {"pt", "eta", "phi", "mass"}));
  Ragged constituents;
  constituents.name = "constituents";
  const int64_t items = offsets.back();
  constituents.offsets = std::move(offsets);
  constituents.items.push_back(
      detail::f32_column("values", {items, 4}, std::move(values), {"GeV", "GeV", "GeV", "GeV"}, {"E", "px", "py", "pz"}));
  constituents.items.push_back(detail::f32_column(
      "features", {items, 7}, std::move(features), {"", "rad", "log(GeV)", "log(GeV)", "", "", ""},
      {"delta_eta", "delta_phi", "log_pt", "log_e", "log_pt_rel", "log_e_rel", "delta_r"}));
  t.ragged.push_back(std::move(constituents));
  t.attributes["generator"] = "hpcml datagen jets";
  t.attributes["jets.pt_range_GeV"] = detail::number(o.pt_min) + "," + detail::number(o.pt_max);
  t.attributes["jets.eta_max"] = detail::number(o.eta_max);
  t.attributes["jets.radius"] = detail::number(o.radius);
  t.attributes["jets.signal_fraction"] = detail::number(o.signal_fraction);
  t.attributes["jets.constituents_range"] =
      std::to_string(o.min_constituents) + "," + std::to_string(o.max_constituents);
  t.attributes["labels"] = "0: QCD (light quark or gluon), 1: hadronic top (t->bW->bqq')";
  return t;
}

}  // namespace hpcml::io::datagen
