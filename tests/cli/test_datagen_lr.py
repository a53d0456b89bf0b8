"""`hpcml datagen lr` (docs/datasets.md#lr) checked from the outside: the stored log r equals
an independent NumPy evaluation of the documented densities on the stored events (normalisations
by quadrature, not the closed forms the generator uses); the class-0 events satisfy the importance
identity E_p0[r] = 1; each class's m distribution follows its density's marginal (chi-square);
the files do not depend on the rank count; bad options are one line."""
import os
import shutil
import tempfile
import unittest

import h5py
import numpy as np

from support import run

M_LO, M_HI, A, MASS, WIDTH, KAPPA = 200.0, 400.0, 0.5, 300.0, 30.0, 0.6


def amplitudes(m, c, phi):
    background = (M_LO / m) ** 2 * (1 + A * c * c)
    bw = (WIDTH / 2) / ((MASS - m) - 1j * WIDTH / 2)
    signal = KAPPA * bw * np.sqrt(np.clip(1 - c * c, 0, None)) * np.exp(1j * phi)
    return background, signal


def intensity(mu, m, c, phi):
    b, s = amplitudes(m, c, phi)
    return np.abs(b + np.sqrt(mu) * s) ** 2


def normalisation(mu, n=400):
    """Z_mu by the midpoint rule on an n^3 grid over the box (not the closed form)."""
    m = M_LO + (np.arange(n) + 0.5) * (M_HI - M_LO) / n
    c = -1 + (np.arange(n) + 0.5) * 2 / n
    phi = (np.arange(n) + 0.5) * 2 * np.pi / n
    cell = (M_HI - M_LO) / n * (2 / n) * (2 * np.pi / n)
    total = 0.0
    for mi in np.array_split(m, 20):
        g = np.meshgrid(mi, c, phi, indexing="ij")
        total += intensity(mu, *g).sum() * cell
    return total


def m_marginal(mu, edges, n=400):
    """Probability of each m bin under p_mu, by quadrature over (c, phi) and within the bin."""
    c = -1 + (np.arange(n) + 0.5) * 2 / n
    phi = (np.arange(64) + 0.5) * 2 * np.pi / 64
    probs = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = lo + (np.arange(20) + 0.5) * (hi - lo) / 20
        g = np.meshgrid(m, c, phi, indexing="ij")
        probs.append(intensity(mu, *g).mean() * (hi - lo))
    probs = np.array(probs)
    return probs / probs.sum()


class DatagenLrTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-lr-")
        cls.out = os.path.join(cls.tmp, "lr")
        rc, _, err, _ = run(["datagen", "lr", "-o", cls.out, "--files", "2", "--events-per-file", "20000"], ranks=2,
                            timeout=300)
        assert rc == 0, err
        cls.x, cls.label, cls.log_r = [], [], []
        for k in range(2):
            with h5py.File(os.path.join(cls.out, f"lr-{k:05d}.h5"), "r") as f:
                assert f.attrs["schema"] == "hpcml.lr"
                cls.x.append(f["x"][...])
                cls.label.append(f["label"][...])
                cls.log_r.append(f["log_r"][...])
        cls.x, cls.label, cls.log_r = (np.concatenate(v) for v in (cls.x, cls.label, cls.log_r))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_stored_log_r_equals_the_documented_densities(self):
        self.assertEqual(self.x.dtype, np.float32)
        self.assertEqual(self.log_r.dtype, np.float64)
        m, c, phi = (self.x[:, i].astype(np.float64) for i in range(3))
        z0, z1 = normalisation(0.0), normalisation(1.0)
        expected = np.log(intensity(1.0, m, c, phi) / intensity(0.0, m, c, phi)) + np.log(z0 / z1)
        np.testing.assert_allclose(self.log_r, expected, rtol=0, atol=1e-4)  # quadrature error ~2e-5
        # The interference is negative in places: r < 1 somewhere inside the box.
        self.assertLess(np.exp(self.log_r).min(), 0.5)
        self.assertGreater(np.exp(self.log_r).max(), 2.0)

    def test_classes_follow_their_densities(self):
        self.assertAlmostEqual(self.label.mean(), 0.5, delta=0.02)
        r0 = np.exp(self.log_r[self.label == 0])
        # E_p0[r] = 1 (the ratio's importance identity), within 5 standard errors.
        self.assertLess(abs(r0.mean() - 1), 5 * r0.std() / np.sqrt(len(r0)))
        edges = np.linspace(M_LO, M_HI, 21)
        for label, mu in ((0, 0.0), (1, 1.0)):
            m = self.x[self.label == label, 0]
            counts, _ = np.histogram(m, edges)
            expected = m_marginal(mu, edges) * len(m)
            chi2 = ((counts - expected) ** 2 / expected).sum()
            self.assertLess(chi2, 50, f"class {label}: chi2 {chi2:.1f} over 20 bins")  # p ~ 2e-4 at 19 dof
            self.assertTrue((self.x[:, 1] >= -1).all() and (self.x[:, 1] <= 1).all())
            self.assertTrue((self.x[:, 2] >= 0).all() and (self.x[:, 2] < 2 * np.pi).all())

    def test_files_do_not_depend_on_the_rank_count(self):
        one = os.path.join(self.tmp, "one-rank")
        rc, _, err, _ = run(["datagen", "lr", "-o", one, "--files", "2", "--events-per-file", "20000"], timeout=300)
        self.assertEqual(rc, 0, err)
        for k in range(2):
            with h5py.File(os.path.join(one, f"lr-{k:05d}.h5"), "r") as a, \
                    h5py.File(os.path.join(self.out, f"lr-{k:05d}.h5"), "r") as b:
                for name in ("x", "label", "log_r"):
                    self.assertEqual(a[name][...].tobytes(), b[name][...].tobytes(), name)

    def test_bad_options_are_one_line(self):
        for args, want in ((["--mu", "-1"], "--mu"), (["--signal-fraction", "2"], "--signal-fraction")):
            rc, _, err, _ = run(["datagen", "lr", "-o", os.path.join(self.tmp, "bad")] + args)
            self.assertEqual(rc, 2, err)
            lines = [line for line in err.splitlines() if line.strip()]
            self.assertEqual(len(lines), 1, err)
            self.assertIn(want, lines[0])


if __name__ == "__main__":
    unittest.main()
