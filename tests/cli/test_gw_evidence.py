"""bench/gw_evidence_grid.py, the independent numpy check of the GW importance-sampled
log evidence: its templates against the `signal` that `hpcml datagen gw` writes, and the
identities its grid relies on (phase linearity, 1/d scaling, t_c tracks interpolated in the
first RK4 step, the periodic phase quadrature against a brute-force sum)."""
import math
import os
import shutil
import sys
import tempfile
import unittest

import h5py
import numpy as np

from support import run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import gw_evidence_grid as gw  # noqa: E402


class GwEvidenceGridTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-gw-evidence-")
        rc, _, err, _ = run(["datagen", "gw", "-o", cls.tmp, "--files", "1", "--events-per-file", "4",
                             "--sample-rate", "512", "--length", "1024"], ranks=1, timeout=120)
        assert rc == 0, err
        path = os.path.join(cls.tmp, "gw-00000.h5")
        cls.model = gw.read_model(path)
        with h5py.File(path, "r") as f:
            cls.theta = f["parameters"][()].astype(float)
            cls.signal = f["signal"][()].astype(float)
            cls.strain = f["strain"][()].astype(float)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_model_from_attributes(self):
        m = self.model
        self.assertEqual((m.sample_rate, m.length, m.f_low), (512.0, 1024, 15.0))
        self.assertEqual((m.chirp_mass, m.mass_ratio, m.distance, m.t_c),
                         ((10, 40), (0.25, 1), (300, 3000), (1.2, 1.8)))

    def test_templates_match_datagen_signal(self):
        # The stored parameters are float32; the double ones reproduce datagen to ~1e-7.
        w = gw.templates(self.theta, self.model)
        error = np.linalg.norm(w - self.signal, axis=1) / np.linalg.norm(self.signal, axis=1)
        self.assertLess(error.max(), 1e-3, error)

    def test_phase_linearity(self):
        mc, q, d, tc, phase = self.theta.T
        eta = gw.eta_of_q(q)
        a, b = gw.template_pair(mc, eta, tc, self.model)
        direct = gw.templates_eta(mc, eta, np.full(len(mc), gw.D_REF), tc, phase, self.model)
        combined = np.cos(phase)[:, None] * a + np.sin(phase)[:, None] * b
        self.assertLess(np.abs(combined - direct).max() / np.abs(direct).max(), 1e-10)

    def test_inverse_distance_scaling(self):
        theta = self.theta.copy()
        theta[:, 2] = 500.0
        near, far = gw.templates(theta, self.model), gw.templates(self.theta, self.model)
        scaled = (500.0 / self.theta[:, 2])[:, None] * near
        self.assertLess(np.abs(scaled - far).max() / np.abs(far).max(), 1e-12)

    def test_interpolated_tracks_match_rk4(self):
        mc, eta = self.theta[:, 0], gw.eta_of_q(self.theta[:, 1])
        tcs = np.random.default_rng(1).uniform(*self.model.t_c, size=(len(mc), 3))
        steps = int(np.floor(tcs.max() * self.model.sample_rate)) + 1
        f, phi = gw.TrackInterpolator(mc, eta, steps, self.model).tracks(np.arange(len(mc)), tcs)
        args = np.repeat(mc, 3), np.repeat(eta, 3), np.full(tcs.size, gw.D_REF), tcs.reshape(-1), np.zeros(tcs.size)
        via = gw.whiten(gw.assemble(f.reshape(-1, steps), phi.reshape(-1, steps), *args, self.model).real,
                        self.model)
        direct = gw.templates_eta(*args, self.model)
        self.assertLess(np.abs(via - direct).max() / np.abs(direct).max(), 1e-9)

    def test_phase_quadrature_matches_brute_force_sum(self):
        mc, q, d, tc, phase = self.theta[0]
        a, b = gw.template_pair(mc, gw.eta_of_q(q), tc, self.model)
        # Strain of a loud copy of the event (SNR 40), so L(φ) is sharply peaked.
        loud = 40 / np.linalg.norm(self.signal[0])
        data = self.strain[0] + (loud - 1) * self.signal[0]
        alpha = loud * gw.D_REF / d
        c0 = -0.5 * data @ data - 0.5 * len(data) * math.log(2 * math.pi)
        products = gw.inner_products(data, a[0], b[0])
        quadrature = gw.log_phase_marginal(c0, products, np.array([alpha]), 512)[0]
        brute = gw.brute_phase_marginal(data, alpha * a[0], alpha * b[0], 20000)
        self.assertLess(abs(quadrature - brute), 1e-8, (quadrature, brute))
        # Sharp enough that too coarse a phase grid shows (64 points: ~0.3 off at SNR 40).
        coarse = gw.log_phase_marginal(c0, products, np.array([alpha]), 64)[0]
        self.assertGreater(abs(coarse - brute), 1e-2)

if __name__ == "__main__":
    unittest.main()
