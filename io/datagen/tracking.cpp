// Charged particles through a barrel tracker in a solenoid: helix propagation from
// layer to layer, multiple scattering at each crossing, smeared hits, noise hits.
// See docs/datasets.md#tracking.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"
#include "io/datagen/datagen.hpp"

namespace hpcml::io::datagen {

namespace {

using detail::normal;
using detail::uniform;

struct Hit {
  double x, y, z;
  int32_t layer;
  int64_t particle_id;
};

// A particle's state: position (mm) and momentum (GeV).
struct State {
  double x, y, z, px, py, pz;
};

// Moves `s` along its helix (charge q, field b in T) to the first crossing of the
// cylinder of radius r_layer ahead of it. Returns false when the helix never reaches
// it (a looper) or leaves the barrel (|z| > half_length) first.
bool propagate_to(State& s, double q, double b, double r_layer, double half_length) {
  const double pt = std::hypot(s.px, s.py);
  const double radius = pt / (0.3 * b * std::abs(q)) * 1000.0;  // mm
  const double h = q > 0 ? -1.0 : 1.0;                          // turning sense for B along +z
  const double phi0 = std::atan2(s.py, s.px);
  const double cx = s.x - h * radius * std::sin(phi0), cy = s.y + h * radius * std::cos(phi0);
  const double d = std::hypot(cx, cy);
  // Circle-circle intersection: |p| = r_layer and |p - c| = radius.
  if (d < 1e-9 || r_layer > d + radius || r_layer < std::abs(radius - d)) return false;
  const double a = (r_layer * r_layer - radius * radius + d * d) / (2 * d);
  const double k = std::sqrt(std::max(0.0, r_layer * r_layer - a * a));
  const double ux = cx / d, uy = cy / d;
  double best = 1e300;
  State next = s;
  for (const double sign : {-1.0, 1.0}) {
    const double px = a * ux - sign * k * uy, py = a * uy + sign * k * ux;
    // Momentum direction at that point: (p - c) = radius * (h sin phi, -h cos phi).
    const double phi = std::atan2(h * (px - cx), -h * (py - cy));
    double turn = h * (phi - phi0);
    turn = std::fmod(turn, 2 * M_PI);
    if (turn <= 1e-12) turn += 2 * M_PI;
    if (turn < best) {
      best = turn;
      const double path = radius * turn;  // transverse arc length, mm
      next = {px, py, s.z + path * s.pz / pt, pt * std::cos(phi), pt * std::sin(phi), s.pz};
    }
  }
  if (std::abs(next.z) > half_length) return false;
  s = next;
  return true;
}

// Gaussian multiple-scattering kick (Highland) for material x/X0 crossed at this state.
void scatter(std::mt19937_64& rng, State& s, double x_over_x0) {
  const double p = std::sqrt(s.px * s.px + s.py * s.py + s.pz * s.pz);
  const double theta0 = 0.0136 / p * std::sqrt(x_over_x0) * (1 + 0.038 * std::log(x_over_x0));
  // Two angles in the planes orthogonal to the direction.
  const double nx = s.px / p, ny = s.py / p, nz = s.pz / p;
  double ax = -ny, ay = nx, az = 0;
  double an = std::hypot(ax, ay);
  if (an < 1e-9) ax = 1, ay = 0, an = 1;
  ax /= an, ay /= an;
  const double bx = ny * az - nz * ay, by = nz * ax - nx * az, bz = nx * ay - ny * ax;
  const double t1 = normal(rng, 0, theta0), t2 = normal(rng, 0, theta0);
  double dx = nx + t1 * ax + t2 * bx, dy = ny + t1 * ay + t2 * by, dz = nz + t1 * az + t2 * bz;
  const double dn = std::sqrt(dx * dx + dy * dy + dz * dz);
  s.px = p * dx / dn, s.py = p * dy / dn, s.pz = p * dz / dn;
}

}  // namespace

Table generate_tracking(const TrackingOptions& o, uint64_t seed, int64_t first_event, int64_t events) {
  HPCML_CHECK_AS(ConfigError, !o.layer_radii.empty() && std::is_sorted(o.layer_radii.begin(), o.layer_radii.end()),
                 "datagen tracking: layer radii must be increasing and non-empty");
  Table t;
  t.schema = "hpcml.tracking";
  t.schema_version = 1;
  t.rows = events;
  std::vector<float> hit_values, particle_values;
  std::vector<int32_t> hit_layer;
  std::vector<int64_t> hit_pid, particle_pid, hit_offsets{0}, particle_offsets{0};
  const int32_t layers = static_cast<int32_t>(o.layer_radii.size());
  std::vector<Hit> hits;
  for (int64_t e = 0; e < events; ++e) {
    auto rng = detail::event_rng(seed, first_event + e);
    hits.clear();
    const int64_t n = detail::poisson(rng, o.mean_particles);
    for (int64_t i = 0; i < n; ++i) {
      // Falling spectrum dN/dpT ~ pT^-3 above pt_min (inverse-CDF of a Pareto), truncated.
      const double u = uniform(rng);
      const double a = std::pow(o.pt_min, -2.0), b = std::pow(o.pt_max, -2.0);
      const double pt = std::pow(a - u * (a - b), -0.5);
      const double eta = uniform(rng, -o.eta_max, o.eta_max), phi = uniform(rng, -M_PI, M_PI);
      const double q = uniform(rng) < 0.5 ? -1.0 : 1.0;
      const double vx = normal(rng, 0, 0.015), vy = normal(rng, 0, 0.015), vz = normal(rng, 0, 50.0);
      const int64_t pid = i + 1;
      for (const double v : {pt, eta, phi, q, vx, vy, vz}) particle_values.push_back(static_cast<float>(v));
      particle_pid.push_back(pid);
      State s{vx, vy, vz, pt * std::cos(phi), pt * std::sin(phi), pt * std::sinh(eta)};
      for (int32_t l = 0; l < layers; ++l) {
        const double r = o.layer_radii[static_cast<size_t>(l)];
        if (!propagate_to(s, q, o.b_field, r, o.half_length)) break;
        // The measurement: smeared along r*phi on the cylinder, and along z.
        const double hphi = std::atan2(s.y, s.x) + normal(rng, 0, o.sigma_rphi) / r;
        hits.push_back({r * std::cos(hphi), r * std::sin(hphi), s.z + normal(rng, 0, o.sigma_z), l, pid});
        // Material: longer path at shallow crossing angles.
        const double p = std::sqrt(s.px * s.px + s.py * s.py + s.pz * s.pz);
        const double cos_incidence = std::abs(s.x * s.px + s.y * s.py) / (r * p);
        scatter(rng, s, o.layer_x0 / std::max(cos_incidence, 0.05));
      }
    }
    // Noise: uniform on the layers' surfaces, particle_id 0.
    const int64_t noise = detail::poisson(rng, o.noise_fraction * static_cast<double>(hits.size()));
    for (int64_t i = 0; i < noise; ++i) {
      const auto l = static_cast<int32_t>(uniform(rng) * layers);
      const double r = o.layer_radii[static_cast<size_t>(l)], phi = uniform(rng, -M_PI, M_PI);
      hits.push_back({r * std::cos(phi), r * std::sin(phi), uniform(rng, -o.half_length, o.half_length), l, 0});
    }
    // Readout order carries no truth: shuffle (Fisher-Yates on the event's generator).
    for (size_t i = hits.size(); i > 1; --i) {
      std::swap(hits[i - 1], hits[static_cast<size_t>(uniform(rng) * static_cast<double>(i))]);
    }
    for (const auto& h : hits) {
      for (const double v : {h.x, h.y, h.z}) hit_values.push_back(static_cast<float>(v));
      hit_layer.push_back(h.layer);
      hit_pid.push_back(h.particle_id);
    }
    hit_offsets.push_back(hit_offsets.back() + static_cast<int64_t>(hits.size()));
    particle_offsets.push_back(particle_offsets.back() + n);
  }
  const int64_t n_hits = hit_offsets.back(), n_particles = particle_offsets.back();
  Ragged hit_col;
  hit_col.name = "hits";
  hit_col.offsets = std::move(hit_offsets);
  hit_col.items.push_back(detail::f32_column("values", {n_hits, 3}, std::move(hit_values), {"mm", "mm", "mm"},
                                             {"x", "y", "z"}));
  Column layer;
  layer.name = "layer";
  layer.shape = {n_hits};
  layer.data = std::move(hit_layer);
  layer.units = {""};
  hit_col.items.push_back(std::move(layer));
  Column hpid;
  hpid.name = "particle_id";
  hpid.shape = {n_hits};
  hpid.data = std::move(hit_pid);
  hpid.units = {""};
  hit_col.items.push_back(std::move(hpid));
  t.ragged.push_back(std::move(hit_col));

  Ragged part_col;
  part_col.name = "particles";
  part_col.offsets = std::move(particle_offsets);
  part_col.items.push_back(detail::f32_column("values", {n_particles, 7}, std::move(particle_values),
                                              {"GeV", "", "rad", "e", "mm", "mm", "mm"},
                                              {"pt", "eta", "phi", "q", "vx", "vy", "vz"}));
  Column ppid;
  ppid.name = "particle_id";
  ppid.shape = {n_particles};
  ppid.data = std::move(particle_pid);
  ppid.units = {""};
  part_col.items.push_back(std::move(ppid));
  t.ragged.push_back(std::move(part_col));

  const auto n_layers = static_cast<int64_t>(o.layer_radii.size());
  t.meta.push_back(detail::f32_column("layer_radii", {n_layers}, std::vector<float>(o.layer_radii.begin(), o.layer_radii.end()),
                                      {"mm"}));
  t.meta.push_back(detail::f32_column("half_length", {1}, {static_cast<float>(o.half_length)}, {"mm"}));
  t.meta.push_back(detail::f32_column("b_field", {1}, {static_cast<float>(o.b_field)}, {"T"}));

  t.attributes["generator"] = "hpcml datagen tracking";
  t.attributes["tracking.mean_particles"] = detail::number(o.mean_particles);
  t.attributes["tracking.noise_fraction"] = detail::number(o.noise_fraction);
  t.attributes["tracking.b_field_T"] = detail::number(o.b_field);
  t.attributes["tracking.pt_range_GeV"] = detail::number(o.pt_min) + "," + detail::number(o.pt_max);
  t.attributes["tracking.eta_max"] = detail::number(o.eta_max);
  t.attributes["tracking.sigma_rphi_mm"] = detail::number(o.sigma_rphi);
  t.attributes["tracking.sigma_z_mm"] = detail::number(o.sigma_z);
  t.attributes["tracking.layer_x0"] = detail::number(o.layer_x0);
  t.attributes["tracking.half_length_mm"] = detail::number(o.half_length);
  t.attributes["particle_id"] = "1..n within an event; 0 marks noise hits";
  return t;
}

}  // namespace hpcml::io::datagen
