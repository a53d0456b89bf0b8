#!/usr/bin/env python3
"""Independent grid estimate of the log evidence of the toy GW model, to check the
importance-sampled log Z that `hpcml infer` writes.

Usage:
    gw_evidence_grid.py EVENTS.h5 POSTERIOR.h5 [--events K] [--json OUT] [--self-check]

EVENTS.h5 comes from `hpcml datagen gw` (datasets strain, signal, parameters; the model's
sample rate, length, f_low and prior ranges are its root attributes), POSTERIOR.h5 from
`hpcml infer` on it (row, samples, weights, log_weights, ess, log_evidence, and log_q if
present). For the first K rows of the posterior file (default 3) it prints the grid log Z
at full and half resolution, the file's IS log Z, IS - grid, the IS standard error
sqrt((n/ESS - 1)/n) (delta method), the ESS, the largest face ratio (below), the largest
|Δ| between the file's log target (log_weights + log_q) and log L + log π here at the ten
top-weight samples, and the seconds taken. --json OUT writes every figure per event.
--self-check first compares the templates here with the file's `signal` and checks the
identities the method relies on.

The model, reimplemented in numpy from io/physics/gw_signal.cpp and models/flows/nsf.cpp
(no hpcml code is run): θ = (chirp mass, mass ratio q, distance, t_c, phase); a 1PN chirp
integrated backwards from f_ISCO at t_c with RK4 (4 substeps a sample) while above
f_min = f_low / 2, a damped tail after t_c, a Tukey(0.1) window, whitening by
sqrt(fs S(f) / 2) with the bins below f_low zeroed (numpy's rfft, not the C++ FFT);
log L = -½‖d - w(θ)‖² - (T/2) log 2π; the prior is uniform in chirp mass, q, t_c and phase
and uniform in volume in distance. The waveform depends on q only through the symmetric
mass ratio η = q / (1 + q)², which the code uses internally (q <= 1).

The method: Z = ∫ L π dθ over the five parameters as nested quadratures.
  * phase: w(θ₄, φ) = cos φ a + sin φ b with a = w(θ₄, 0), b = w(θ₄, π/2), so log L(φ) is
    a quadratic form in (cos φ, sin φ) of five inner products; the uniform phase prior is
    integrated by the periodic trapezoid rule (spectrally accurate; 512 nodes, more above
    SNR ~50) in log space.
  * distance: w scales as 1/d, so a, b are computed once at D_REF and every distance is an
    amplitude α = D_REF / d. Each (mc, q, t_c) point integrates α over ±W conditional
    standard deviations about the least-squares amplitude of (a, b), clipped to the prior,
    by the trapezoid rule with the prior density 3 D_REF³ / ((d_max³ - d_min³) α⁴).
  * (mc, η, t_c): the maximum likelihood is found from the highest-weight IS sample (scipy
    least_squares, amplitude and phase profiled out) and the Fisher matrix there gives the
    Cholesky factor of the (mc, η, t_c) covariance. The grid follows it: mc over ±W sd;
    q over the η interval of ±W conditional sd given mc (mapped to q, uniform nodes in q);
    t_c over ±W conditional sd given (mc, η); every interval clipped to the prior, each
    integrated by the trapezoid rule. This sheared grid resolves the sharp mc-η-t_c
    correlations that an axis-aligned box would need thousands of nodes a side for.
  * templates: t_c enters the RK4 only through its first step ε = t_c - floor(t_c fs)/fs;
    after that every template takes the same RK4 steps, shifted by whole samples. So per
    (mc, η) the RK4 runs at 8 Chebyshev nodes in ε and each t_c's track (frequency and
    phase per sample) is the barycentric interpolant at its ε (~1e-12; self-checked).
  * checks: the slice marginal on every face of the grid that is not a prior edge must be
    < 1e-4 of its peak, else that axis is widened (W and its nodes x1.5, up to twice);
    the IS weight outside the grid is reported; the whole integral is repeated with every
    axis and the phase at half resolution.
"""
import argparse
import dataclasses
import json
import math
import sys
import time

import h5py
import numpy as np
from scipy.optimize import least_squares
from scipy.special import logsumexp

SUN_TIME = 4.925490947e-6  # G M_sun / c^3, s (as gw_signal.cpp)
SUN_LENGTH = 1476.625  # G M_sun / c^2, m
MEGAPARSEC = 3.0856775814913673e22  # m
LIGHT_SPEED = 299792458.0  # m/s
PI_8_3 = 21.170591  # π^(8/3) to the digits gw_signal.cpp uses
D_REF = 1000.0  # Mpc: the distance the grid's templates are computed at
FACE_LIMIT = 1e-4  # largest allowed face density / peak density


@dataclasses.dataclass
class Model:
    """The toy model's settings and prior, from a datagen gw file's root attributes."""
    sample_rate: float
    length: int
    f_low: float
    chirp_mass: tuple
    mass_ratio: tuple
    distance: tuple
    t_c: tuple
    window: np.ndarray = dataclasses.field(repr=False)
    whitening: np.ndarray = dataclasses.field(repr=False)  # (length // 2 + 1,) bin scales

    @property
    def eta_range(self):
        return eta_of_q(self.mass_ratio[0]), eta_of_q(self.mass_ratio[1])

    def log_prior_constant(self):
        """log π(mc, q, d, t_c) - 2 log d: the uniform densities of mc, q and t_c times the
        volume prior's 3 / (d_max³ - d_min³)."""
        widths = [b - a for a, b in (self.chirp_mass, self.mass_ratio, self.t_c)]
        volume = self.distance[1] ** 3 - self.distance[0] ** 3
        return -sum(math.log(w) for w in widths) + math.log(3.0 / volume)


def read_model(path):
    """The Model of a `hpcml datagen gw` file."""
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}

    def pair(key):
        low, high = attrs[key].split("(")[0].split(",")
        return float(low), float(high)

    fs, n, f_low = float(attrs["gw.sample_rate_Hz"]), int(attrs["gw.length"]), float(attrs["gw.f_low_Hz"])
    freqs = np.arange(n // 2 + 1) * fs / n
    whitening = np.where(freqs < f_low, 0.0, 1.0 / np.sqrt(fs * psd(freqs, f_low) / 2))
    return Model(fs, n, f_low, pair("gw.prior.chirp_mass_M_sun"), pair("gw.prior.mass_ratio"),
                 pair("gw.prior.distance_Mpc"), pair("gw.prior.t_c_s"), tukey(n, 0.1), whitening)


def psd(f, f_low):
    """gw_psd: the Ajith (2011) aLIGO fit, floored at f_low (1/Hz)."""
    x = np.maximum(f, f_low) / 245.4
    x2 = x * x
    return 1e-48 * (0.0152 / (x2 * x2) + 0.2935 * x ** 2.25 + 2.7951 * x ** 1.5 - 6.5080 * x ** 0.75 + 17.7622)


def tukey(n, alpha):
    """tukey_window: tapered fraction alpha, half at each end."""
    i = np.arange(n, dtype=float)
    edge = alpha * (n - 1) / 2
    d = np.minimum(i, n - 1 - i)
    return np.where(d < edge, 0.5 * (1 - np.cos(np.pi * d / edge)), 1.0)


def eta_of_q(q):
    return q / (1 + q) ** 2


def q_of_eta(eta):
    """The mass ratio q <= 1 of a symmetric mass ratio eta <= 1/4."""
    return (1 - 2 * eta - np.sqrt(np.maximum(1 - 4 * eta, 0.0))) / (2 * eta)


# --- the waveform -----------------------------------------------------------------------

def f_isco(mc, eta):
    return 1.0 / (6.0 ** 1.5 * np.pi * mc * eta ** -0.6 * SUN_TIME)


def chirp_tracks(mc, eta, eps, phase, steps, fs):
    """RK4 of gw_waveform for B templates at once, backwards from (f_ISCO, phase) at t_c.

    mc, eta, eps, phase: (B,) arrays; eps = t_c - floor(t_c fs) / fs is the first step.
    Returns f, phi of shape (B, steps): the frequency and phase at the samples t_c - eps,
    t_c - eps - 1/fs, ... (sample j is n = floor(t_c fs) - j of the template)."""
    m_s = mc * eta ** -0.6 * SUN_TIME
    cbrt_m = np.cbrt(np.pi * m_s)
    newton = 96.0 / 5.0 * PI_8_3 * (mc * SUN_TIME) ** (5.0 / 3.0)
    pn = (743.0 / 336.0 + 11.0 / 4.0 * eta) * cbrt_m * cbrt_m

    def minus_rate(f):  # d f / d(-t)
        c = np.cbrt(f)
        c2 = c * c
        return -newton * (f * f * f * c2) * np.maximum(0.1, 1.0 - pn * c2)

    f, phi = f_isco(mc, eta).astype(float), np.array(phase, dtype=float)
    out_f, out_phi = np.empty((len(f), steps)), np.empty((len(f), steps))
    for j in range(steps):
        h = eps / 4 if j == 0 else 1.0 / (4 * fs)
        for _ in range(4):
            k1 = minus_rate(f)
            f2 = np.maximum(1.0, f + 0.5 * h * k1)
            k2 = minus_rate(f2)
            f3 = np.maximum(1.0, f + 0.5 * h * k2)
            k3 = minus_rate(f3)
            f4 = np.maximum(1.0, f + h * k3)
            k4 = minus_rate(f4)
            phi = phi - h / 6 * 2 * np.pi * (f + 2 * f2 + 2 * f3 + f4)
            f = np.maximum(1.0, f + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
        out_f[:, j], out_phi[:, j] = f, phi
    return out_f, out_phi


def amplitude(f, mc, distance):
    """The strain amplitude at frequency f: 4 (G Mc / c²)^(5/3) / d (π f / c)^(2/3)."""
    amp0 = 4.0 * (mc * SUN_LENGTH) ** (5.0 / 3.0) / (distance * MEGAPARSEC)
    c = np.cbrt(np.pi * f / LIGHT_SPEED)
    return amp0 * c * c


def assemble(f, phi, mc, eta, distance, tc, phase, model):
    """The complex strain z (B, length) of chirp tracks (B, steps) of templates with merger
    times tc (B,) and initial phases `phase` (B,): gw_waveform is Re z, and Re(z e^{iδ})
    the same template with every phase advanced by δ."""
    fs, n = model.sample_rate, model.length
    mc, eta, distance, tc, phase = (np.asarray(x, dtype=float).reshape(-1, 1) for x in (mc, eta, distance, tc, phase))
    last = np.floor(tc * fs).astype(np.int64)
    fi = f_isco(mc, eta)
    # Sample j is written while the frequency before its step is above f_min.
    written = np.logical_and.accumulate(np.concatenate([fi, f[:, :-1]], axis=1) > 0.5 * model.f_low, axis=1)
    chirp = np.where(written, amplitude(f, mc, distance) * np.exp(1j * phi), 0.0)
    j = last - np.arange(n)
    z = np.where((j >= 0) & (j < f.shape[1]), np.take_along_axis(chirp, np.clip(j, 0, f.shape[1] - 1), axis=1), 0.0)
    # After t_c: the damped tail at f_ISCO.
    first = int(last.min()) + 1
    tau = np.arange(first, n) / fs - tc
    tail = amplitude(fi, mc, distance) * np.exp(-tau * fi + 1j * (phase + 2 * np.pi * fi * tau))
    z[:, first:] = np.where(j[:, first:] < 0, tail, z[:, first:])
    return z


def whiten(h, model):
    """gw_whitened_template's last steps: window, FFT, bin scales, inverse FFT (real)."""
    return np.fft.irfft(np.fft.rfft(h * model.window, axis=-1) * model.whitening, n=model.length, axis=-1)


def templates_eta(mc, eta, distance, tc, phase, model):
    """Whitened templates (B, length) for parameter arrays (B,), mass ratio given as eta."""
    mc, eta, distance, tc, phase = (np.atleast_1d(np.asarray(x, dtype=float)) for x in (mc, eta, distance, tc, phase))
    fs = model.sample_rate
    last = np.floor(tc * fs)
    steps = int(last.max()) + 1
    f, phi = chirp_tracks(mc, eta, tc - last / fs, phase, steps, fs)
    return whiten(assemble(f, phi, mc, eta, distance, tc, phase, model).real, model)


def templates(theta, model):
    """gw_whitened_template: θ (B, 5) = (chirp mass, q, distance, t_c, phase) -> (B, length)."""
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    mc, q, d, tc, phase = theta.T
    return templates_eta(mc, eta_of_q(q), d, tc, phase, model)


def template_pair(mc, eta, tc, model):
    """a = w(θ₄, 0) and b = w(θ₄, π/2) at distance D_REF, each (B, length)."""
    n = np.size(mc)
    both = templates_eta(np.tile(mc, 2), np.tile(eta, 2), np.full(2 * n, D_REF), np.tile(tc, 2),
                         np.repeat([0.0, np.pi / 2], n), model)
    return both[:n], both[n:]


class TrackInterpolator:
    """The chirp tracks of templates sharing (mc, eta) at any t_c, from RK4 runs at
    `nodes` Chebyshev points of the first step ε in [0, 1/fs] (tracks are smooth in ε)."""

    def __init__(self, mc, eta, steps, model, nodes=8):
        self.fs = model.sample_rate
        k = np.arange(nodes)
        self.eps = (1 - np.cos(np.pi * (k + 0.5) / nodes)) / (2 * self.fs)
        self.bary = (-1.0) ** k * np.sin(np.pi * (k + 0.5) / nodes)
        p = len(mc)
        f, phi = chirp_tracks(np.repeat(mc, nodes), np.repeat(eta, nodes), np.tile(self.eps, p),
                              np.zeros(p * nodes), steps, self.fs)
        self.f, self.phi = f.reshape(p, nodes, steps), phi.reshape(p, nodes, steps)

    def tracks(self, rows, tc):
        """f, phi (len(rows), m, steps) for templates of pair `rows` at merger times tc (len(rows), m)."""
        eps = tc - np.floor(tc * self.fs) / self.fs
        diff = eps[..., None] - self.eps
        exact = diff == 0
        terms = self.bary / np.where(exact, 1.0, diff)
        terms = np.where(exact.any(axis=-1, keepdims=True), exact.astype(float), terms)
        weights = terms / terms.sum(axis=-1, keepdims=True)
        return weights @ self.f[rows], weights @ self.phi[rows]


# --- the likelihood ---------------------------------------------------------------------

def log_likelihood(strain, w):
    """gw_log_likelihood: -½‖d - w‖² - (T/2) log 2π for templates w (..., T)."""
    r = np.asarray(strain, dtype=float) - w
    return -0.5 * np.sum(r * r, axis=-1) - 0.5 * r.shape[-1] * math.log(2 * math.pi)


def inner_products(strain, a, b):
    """The five inner products (da, db, aa, bb, ab) of templates a, b (..., T) and data d (T,)."""
    return a @ strain, b @ strain, np.sum(a * a, -1), np.sum(b * b, -1), np.sum(a * b, -1)


def log_phase_marginal(c0, products, alpha, n_phase):
    """log (1/2π) ∫ L(α (cos φ a + sin φ b)) dφ by the periodic trapezoid rule on n_phase points.

    c0 = -½‖d‖² - (T/2) log 2π; products = (da, db, aa, bb, ab), each of shape S;
    alpha of shape S + (m,). Returns S + (m,)."""
    phi = 2 * np.pi * np.arange(n_phase) / n_phase
    c, s = np.cos(phi), np.sin(phi)
    da, db, aa, bb, ab = (np.asarray(x)[..., None, None] for x in products)
    linear = da * c + db * s
    quadratic = aa * c * c + bb * s * s + 2 * ab * c * s
    al = np.asarray(alpha)[..., None]
    z = quadratic * (-0.5 * al)  # then α (linear - ½ α quadratic), in place
    z += linear
    z *= al
    peak = z.max(axis=-1, keepdims=True)
    z -= peak
    np.exp(z, out=z)
    return c0 + peak[..., 0] + np.log(z.sum(axis=-1)) - math.log(n_phase)


def profile_amplitudes(products):
    """The least-squares (X, Y) of d ≈ X a + Y b and the largest standard deviation of
    either, 1 / sqrt(smallest eigenvalue of [[aa, ab], [ab, bb]])."""
    da, db, aa, bb, ab = products
    det = aa * bb - ab * ab
    x, y = (bb * da - ab * db) / det, (aa * db - ab * da) / det
    smallest = 0.5 * (aa + bb) - np.sqrt(0.25 * (aa - bb) ** 2 + ab * ab)
    return x, y, 1.0 / np.sqrt(smallest)


# --- maximum likelihood and the Fisher matrix --------------------------------------------

STEPS = np.array([1e-4, 1e-5, 1e-6])  # central-difference steps in (mc, eta, t_c)


def stencil(p):
    """The six points p ± STEPS[i] e_i (rows 2i, 2i + 1) of central differences at p (3,)."""
    points = np.repeat(np.asarray(p, dtype=float)[None, :], 6, axis=0)
    points[0::2] += np.diag(STEPS)
    points[1::2] -= np.diag(STEPS)
    return points


def profiled_residual(p, strain, model):
    """d - (X a + Y b) at the best (X, Y) for p = (mc, eta, t_c)."""
    a, b = template_pair(p[0], p[1], p[2], model)
    x, y, _ = profile_amplitudes(inner_products(strain, a, b))
    return strain - (x * a + y * b)[0]


def profiled_jacobian(p, strain, model):
    """Central differences of profiled_residual, all six templates in one batch."""
    a, b = template_pair(*stencil(p).T, model)
    x, y, _ = profile_amplitudes(inner_products(strain, a, b))
    r = strain - (x[:, None] * a + y[:, None] * b)
    return ((r[0::2] - r[1::2]) / (2 * STEPS[:, None])).T


def maximum_likelihood(strain, start, model):
    """The maximum of L, searched from θ = `start` (5,), as (mc, eta, t_c, X, Y): X, Y are
    the amplitudes of a, b at D_REF, so d = D_REF / hypot(X, Y) and φ = atan2(Y, X)."""
    lo = [model.chirp_mass[0], model.eta_range[0], model.t_c[0]]
    hi = [model.chirp_mass[1], model.eta_range[1], model.t_c[1]]
    p0 = np.clip([start[0], eta_of_q(start[1]), start[3]], lo, hi)
    fit = least_squares(profiled_residual, p0, jac=profiled_jacobian, bounds=(lo, hi),
                        x_scale=STEPS * 100, args=(strain, model), xtol=1e-10, ftol=1e-12)
    a, b = template_pair(*fit.x, model)
    x, y, _ = profile_amplitudes(inner_products(strain, a, b))
    return np.concatenate([fit.x, [x[0], y[0]]])


def fisher_covariance(best, model):
    """The inverse Fisher matrix of (mc, eta, t_c) at `best`, with (X, Y) marginalised."""
    pairs = template_pair(*np.concatenate([best[None, :3], stencil(best[:3])]).T, model)
    w = best[3] * pairs[0] + best[4] * pairs[1]
    columns = [(w[1 + 2 * i] - w[2 + 2 * i]) / (2 * STEPS[i]) for i in range(3)] + [pairs[0][0], pairs[1][0]]
    jac = np.stack(columns, axis=1)
    return np.linalg.inv(jac.T @ jac)[:3, :3]


# --- the nested grid ----------------------------------------------------------------------

@dataclasses.dataclass
class Level:
    """One axis of the nested grid: nodes, trapezoid weights and whether each interval
    end is the ±W box (True) or a prior edge (False); all of the outer levels' shape."""
    nodes: np.ndarray
    weights: np.ndarray
    low_is_box: np.ndarray
    high_is_box: np.ndarray


def interval(centre, half_width, bounds):
    """[centre - half_width, centre + half_width] ∩ bounds: (low, high, low_is_box, high_is_box)."""
    lo, hi = centre - half_width, centre + half_width
    a = np.clip(lo, *bounds)
    return a, np.maximum(a, np.clip(hi, *bounds)), lo > bounds[0], hi < bounds[1]


def trapezoid(span, n):
    """The Level of n trapezoid nodes on span = interval(...) (arrays broadcast)."""
    low, high, low_is_box, high_is_box = span
    t = np.linspace(0.0, 1.0, n)
    ends = np.where((t == 0) | (t == 1), 0.5, 1.0)
    return Level(low[..., None] + (high - low)[..., None] * t, ((high - low) / (n - 1))[..., None] * ends,
                 np.asarray(low_is_box), np.asarray(high_is_box))


def q_level(mc_nodes, centre, chol, widths, n, model):
    """The q nodes for each mc node: the η interval of ±W conditional sd, mapped to q."""
    u1 = (mc_nodes - centre[0]) / chol[0, 0]
    eta_lo, eta_hi, low_is_box, high_is_box = interval(centre[1] + chol[1, 0] * u1, widths[1] * chol[1, 1],
                                                       model.eta_range)
    return trapezoid((q_of_eta(eta_lo), q_of_eta(eta_hi), low_is_box, high_is_box), n)


def alpha_level(products, width, n, model):
    """The amplitude nodes α = D_REF / d of each (mc, q, t_c) point: ±W sd about the least-
    squares amplitude; where that misses the prior, the 2W sd of the prior nearest to it."""
    x, y, sd = profile_amplitudes(products)
    bounds = (D_REF / model.distance[1], D_REF / model.distance[0])
    best = np.hypot(x, y)
    lo, hi, low_is_box, high_is_box = interval(best, width * sd, bounds)
    missed = hi == lo
    near_lo, near_hi, _, _ = interval(np.clip(best, *bounds), 2 * width * sd, bounds)
    return trapezoid((np.where(missed, near_lo, lo), np.where(missed, near_hi, hi), low_is_box, high_is_box), n)


def grid_products(strain, model, mc, eta, tc):
    """The inner products (da, db, aa, bb, ab), each (n1, n2, n3), of the templates a, b at
    every grid point: mc (n1,), eta (n1, n2), tc (n1, n2, n3)."""
    n1, n2, n3 = tc.shape
    pair_mc, pair_eta, pair_tc = np.repeat(mc, n2), eta.reshape(-1), tc.reshape(n1 * n2, n3)
    steps = int(np.floor(tc.max() * model.sample_rate)) + 1
    products = np.empty((5, n1 * n2, n3))
    per_batch = max(1, 2048 // n3)  # pairs whose templates are whitened together
    for begin in range(0, n1 * n2, 8 * per_batch):
        rows = np.arange(begin, min(begin + 8 * per_batch, n1 * n2))
        interp = TrackInterpolator(pair_mc[rows], pair_eta[rows], steps, model)
        for sub in range(0, len(rows), per_batch):
            local = np.arange(sub, min(sub + per_batch, len(rows)))
            f, phi = interp.tracks(local, pair_tc[rows[local]])
            mcs, etas = (np.repeat(x[rows[local]], n3) for x in (pair_mc, pair_eta))
            tcs, dist = pair_tc[rows[local]].reshape(-1), np.full(len(local) * n3, D_REF)
            z = assemble(f.reshape(-1, steps), phi.reshape(-1, steps), mcs, etas, dist, tcs, np.zeros(len(tcs)), model)
            a, b = whiten(z.real, model), whiten(-z.imag, model)  # Re z, Re(z e^{iπ/2})
            products[:, rows[local]] = np.stack(inner_products(strain, a, b)).reshape(5, len(local), n3)
    return products.reshape(5, n1, n2, n3)


def grid_integrand(strain, model, centre, chol, widths, sizes, n_phase):
    """The nested grid's four Levels (mc, q, t_c, α) and its log integrand (n1, n2, n3, n4):
    log of the phase-marginalised L times the prior density in (mc, q, t_c, α)."""
    n1, n2, n3, n4 = sizes
    mc = trapezoid(interval(np.asarray(centre[0]), widths[0] * chol[0, 0], model.chirp_mass), n1)
    q = q_level(mc.nodes, centre, chol, widths, n2, model)
    eta = eta_of_q(q.nodes)
    u1 = ((mc.nodes - centre[0]) / chol[0, 0])[:, None]
    u2 = (eta - centre[1] - chol[1, 0] * u1) / chol[1, 1]
    tc = trapezoid(interval(centre[2] + chol[2, 0] * u1 + chol[2, 1] * u2, widths[2] * chol[2, 2], model.t_c), n3)
    products = grid_products(strain, model, mc.nodes, eta, tc.nodes)
    alpha = alpha_level(products, widths[3], n4, model)

    c0 = -0.5 * float(strain @ strain) - 0.5 * model.length * math.log(2 * math.pi)
    flat, nodes = products.reshape(5, -1), alpha.nodes.reshape(-1, n4)
    log_f = np.empty_like(nodes)
    block = max(1, 2 ** 23 // (n4 * n_phase))
    for begin in range(0, len(nodes), block):
        sl = slice(begin, begin + block)
        log_f[sl] = log_phase_marginal(c0, flat[:, sl], nodes[sl], n_phase)
    log_f += model.log_prior_constant() + 3 * math.log(D_REF) - 4 * np.log(nodes)
    return [mc, q, tc, alpha], log_f.reshape(sizes)


def to_grid(x):
    """An array of a level's shape (n1, ..., ni) made to broadcast against the 4-D grid."""
    return x.reshape(x.shape + (1,) * (4 - x.ndim))


def face_ratios(levels, log_f):
    """Per axis, the slice marginal at its low and high end (box ends only) / its peak."""
    log_w = [to_grid(np.log(lv.weights)) for lv in levels]
    ratios = []
    for i in range(4):
        others = log_f + sum(lw for j, lw in enumerate(log_w) if j != i)
        peak = logsumexp(others, axis=tuple(k for k in range(4) if k != i)).max()
        pair = []
        for end, flag in ((0, levels[i].low_is_box), (-1, levels[i].high_is_box)):
            face = np.take(np.where(to_grid(flag), others, -np.inf), [end], axis=i)
            pair.append(float(np.exp(logsumexp(face) - peak)))
        ratios.append(pair)
    return ratios


def grid_log_evidence(strain, model, centre, chol, widths, sizes, n_phase):
    """log Z of the nested grid and its face ratios [[low, high] per axis]."""
    levels, log_f = grid_integrand(strain, model, centre, chol, widths, sizes, n_phase)
    with np.errstate(divide="ignore"):  # empty intervals have weight 0
        log_w = sum(to_grid(np.log(lv.weights)) for lv in levels)
        return float(logsumexp(log_f + log_w)), face_ratios(levels, log_f)


# --- per event -----------------------------------------------------------------------------

SIZES = (32, 32, 32, 24)  # nodes per axis (mc, q, t_c, α) at full resolution
N_PHASE = 512  # phase nodes at full resolution, more for loud events (see phase_nodes)


def phase_nodes(snr):
    """Phase nodes for an event of matched-filter SNR snr: L(φ) has width ~1/snr, and the
    periodic trapezoid rule's error ~exp(-2π² (width / spacing)²) is negligible with
    spacing <= 2/3 of the width."""
    return max(N_PHASE, 2 ** math.ceil(math.log2(3 * math.pi * snr)))


def widened_grid(strain, model, centre, chol, sizes, n_phase, widths=(6.0, 6.0, 6.0, 6.0), tries=2):
    """grid_log_evidence, widening (x1.5, with x1.5 the nodes) each axis whose box face
    holds more than FACE_LIMIT of the peak density, up to `tries` times."""
    widths, sizes = list(widths), list(sizes)
    for attempt in range(tries + 1):
        log_z, faces = grid_log_evidence(strain, model, centre, chol, widths, sizes, n_phase)
        wide = [i for i, pair in enumerate(faces) if max(pair) > FACE_LIMIT]
        if not wide or attempt == tries:
            return log_z, faces, widths, sizes
        for i in wide:
            widths[i] *= 1.5
            sizes[i] = int(math.ceil(sizes[i] * 1.5))


def box_coordinates(theta, centre, chol):
    """The grid coordinates u (n, 3) of θ (n, 5): θ₃ = centre + chol u in (mc, η, t_c)."""
    x = np.stack([theta[:, 0], eta_of_q(theta[:, 1]), theta[:, 3]], axis=1) - centre
    return np.linalg.solve(chol, x.T).T


def log_target(theta, strain, model):
    """log L(θ) + log π(θ) for θ (n, 5), as the IS weights' target (-inf outside the prior)."""
    mc, q, d, tc, phase = theta.T
    inside = np.ones(len(theta), bool)
    for x, (a, b) in zip((mc, q, d, tc), (model.chirp_mass, model.mass_ratio, model.distance, model.t_c)):
        inside &= (x >= a) & (x <= b)
    inside &= (phase >= 0) & (phase < 2 * np.pi)
    out = np.full(len(theta), -np.inf)
    if inside.any():
        t = theta[inside]
        out[inside] = (log_likelihood(strain, templates(t, model)) + model.log_prior_constant() - math.log(2 * np.pi)
                       + 2 * np.log(t[:, 2]))
    return out


def evaluate_event(strain, model, posterior):
    """The grid log Z of one event next to its IS log Z: a dict of figures. `posterior`
    holds the event's samples (n, 5), weights, log_weights, log_evidence, ess and, if the
    file has them, log_q (for the check of the IS target at the top-weight samples)."""
    start_time = time.monotonic()
    samples, weights = posterior["samples"].astype(float), posterior["weights"]
    start = samples[np.argmax(weights)]
    best = maximum_likelihood(strain, start, model)
    cov = fisher_covariance(best, model)
    chol = np.linalg.cholesky(cov)
    amp = math.hypot(best[3], best[4])
    theta_ml = [best[0], float(q_of_eta(best[1])), D_REF / amp, best[2], math.atan2(best[4], best[3]) % (2 * math.pi)]

    a, b = template_pair(*best[:3], model)
    n_phase = phase_nodes(float(np.linalg.norm(best[3] * a + best[4] * b)))
    log_z, faces, widths, sizes = widened_grid(strain, model, best[:3], chol, SIZES, n_phase)
    half = [max(3, (s + 1) // 2) for s in sizes]
    log_z_half, _ = grid_log_evidence(strain, model, best[:3], chol, widths, half, n_phase // 2)
    outside = np.any(np.abs(box_coordinates(samples, best[:3], chol)) > np.array(widths[:3]), axis=1)
    n, ess = len(weights), float(posterior["ess"])
    result = {
        "log_z_grid": log_z, "log_z_grid_half": log_z_half, "log_z_is": float(posterior["log_evidence"]),
        "difference": float(posterior["log_evidence"]) - log_z, "is_stderr": math.sqrt(max(n / ess - 1, 0.0) / n),
        "ess": ess, "samples": n, "is_weight_outside_grid": float(weights[outside].sum()),
        "max_log_l": float(log_likelihood(strain, templates(theta_ml, model))[0]), "theta_ml": theta_ml,
        "fisher_sd": np.sqrt(np.diag(cov)).tolist(), "widths": widths, "sizes": sizes, "half_sizes": half,
        "phase_nodes": n_phase, "face_ratios": faces}
    if "log_q" in posterior:
        top = [k for k in np.argsort(weights)[::-1][:10] if weights[k] > 0]
        ours = log_target(samples[top], strain, model)
        theirs = posterior["log_weights"][top] + posterior["log_q"][top].astype(float)
        result["target_max_abs_diff"] = float(np.max(np.abs(ours - theirs)))
    result["seconds"] = time.monotonic() - start_time
    return result


# --- self-check ----------------------------------------------------------------------------

def relative(x, y):
    """The largest ‖x - y‖ / ‖y‖ over the rows."""
    return float(np.max(np.linalg.norm(x - y, axis=-1) / np.linalg.norm(y, axis=-1)))


def self_check(events_path, model, rows=4):
    """Prints the figures that support the method, for the first `rows` events of the file."""
    with h5py.File(events_path, "r") as f:
        theta = f["parameters"][:rows].astype(float)
        signal = f["signal"][:rows].astype(float)
        strain = f["strain"][0].astype(float)
    print(f"template vs file signal (float32 θ), ‖Δ‖/‖w‖ max over {rows}: "
          f"{relative(templates(theta, model), signal):.2e}")

    mc, eta, d, tc, phase = theta[:, 0], eta_of_q(theta[:, 1]), theta[:, 2], theta[:, 3], theta[:, 4]
    a, b = template_pair(mc, eta, tc, model)
    direct = templates_eta(mc, eta, np.full(rows, D_REF), tc, phase, model)
    print(f"phase linearity, ‖w(φ) - cos φ w(0) - sin φ w(π/2)‖/‖w‖: "
          f"{relative(np.cos(phase)[:, None] * a + np.sin(phase)[:, None] * b, direct):.2e}")
    print(f"1/d scaling, ‖(d_ref/d) w(d_ref) - w(d)‖/‖w‖: "
          f"{relative((D_REF / d)[:, None] * direct, templates(theta, model)):.2e}")

    # Interpolated tracks at other merger times (random sub-sample offsets) vs direct RK4.
    tcs = np.random.default_rng(0).uniform(*model.t_c, size=(rows, 3))
    steps = int(np.floor(tcs.max() * model.sample_rate)) + 1
    f, phi = TrackInterpolator(mc, eta, steps, model).tracks(np.arange(rows), tcs)
    args = np.repeat(mc, 3), np.repeat(eta, 3), np.full(3 * rows, D_REF), tcs.reshape(-1), np.zeros(3 * rows)
    via = whiten(assemble(f.reshape(-1, steps), phi.reshape(-1, steps), *args, model).real, model)
    print(f"ε-interpolated tracks vs direct RK4 at random t_c: {relative(via, templates_eta(*args, model)):.2e}")

    # The phase quadrature vs a direct sum over 20000 phases, for a copy of event 0 at SNR 40.
    loud = 40 / np.linalg.norm(signal[0])
    data = strain + (loud - 1) * signal[0]
    alpha = loud * D_REF / d[0]
    c0 = -0.5 * float(data @ data) - 0.5 * model.length * math.log(2 * math.pi)
    brute = brute_phase_marginal(data, alpha * a[0], alpha * b[0], 20000)
    for n in (N_PHASE // 4, N_PHASE):
        quad = float(log_phase_marginal(c0, inner_products(data, a[0], b[0]), np.array([alpha]), n)[0])
        print(f"phase quadrature ({n} nodes) {quad:.6f} vs 20000-phase sum {brute:.6f}, SNR 40: "
              f"|Δ| {abs(quad - brute):.1e}")


def brute_phase_marginal(strain, a, b, n):
    """log of the mean of L(cos φ a + sin φ b) over n equally spaced φ, from the residuals."""
    phi = 2 * np.pi * np.arange(n) / n
    log_l = np.concatenate([log_likelihood(strain, np.cos(p)[:, None] * a + np.sin(p)[:, None] * b)
                            for p in np.array_split(phi, 20)])
    return float(logsumexp(log_l) - math.log(n))


# --- main ----------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("events_file", metavar="EVENTS.h5", help="hpcml datagen gw file")
    parser.add_argument("posterior", metavar="POSTERIOR.h5", help="hpcml infer posterior file of it")
    parser.add_argument("--events", type=int, default=3, help="rows of the posterior file (default 3)")
    parser.add_argument("--json", help="write the per-event figures here")
    parser.add_argument("--self-check", action="store_true", help="check the templates and identities first")
    args = parser.parse_args(argv)

    model = read_model(args.events_file)
    if args.self_check:
        self_check(args.events_file, model)
    with h5py.File(args.posterior, "r") as post, h5py.File(args.events_file, "r") as ev:
        count = min(args.events, len(post["row"]))
        fields = [k for k in ("samples", "weights", "log_weights", "log_q", "log_evidence", "ess") if k in post]
        results = []
        print(f"{'row':>4} {'grid log Z':>12} {'half res':>12} {'IS log Z':>12} {'IS - grid':>9} {'IS se':>6} "
              f"{'ESS':>6} {'max face':>9} {'Δtarget':>8} {'s':>6}")
        for i in range(count):
            row = int(post["row"][i])
            r = evaluate_event(ev["strain"][row].astype(float), model, {k: post[k][i] for k in fields})
            results.append({"row": row, **r})
            print(f"{row:>4} {r['log_z_grid']:12.3f} {r['log_z_grid_half']:12.3f} {r['log_z_is']:12.3f} "
                  f"{r['difference']:9.3f} {r['is_stderr']:6.3f} {r['ess']:6.1f} "
                  f"{max(map(max, r['face_ratios'])):9.1e} {r.get('target_max_abs_diff', math.nan):8.1e} "
                  f"{r['seconds']:6.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
