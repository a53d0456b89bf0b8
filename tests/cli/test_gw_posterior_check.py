"""bench/gw_posterior_check.py, the coverage check of importance-weighted posteriors, on a
conjugate Gaussian model whose exact posterior is known: truth ~ N(0, 1), data x ~ N(truth, 1),
posterior N(x/2, 1/2). Draws come from a wider proposal N(x/2, 1); with the exact importance
weights the levels are calibrated, with equal weights the wide proposal is under-confident and
the simultaneous band must reject it."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np
from scipy import stats

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)
import gw_posterior_check as check  # noqa: E402

EVENTS, DRAWS, DIMS = 400, 2000, 5


def conjugate_posteriors(seed):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(EVENTS, DIMS))
    x = truth + rng.normal(size=(EVENTS, DIMS))
    samples = x[:, None, :] / 2 + rng.normal(size=(EVENTS, DRAWS, DIMS))  # proposal N(x/2, 1)
    mean = x[:, None, :] / 2
    log_w = (stats.norm.logpdf(samples, mean, np.sqrt(0.5)) - stats.norm.logpdf(samples, mean, 1.0)).sum(2)
    w = np.exp(log_w - log_w.max(1, keepdims=True))
    return truth, x, samples, w / w.sum(1, keepdims=True)


class GwPosteriorCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-gw-check-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def write(self, name, samples, weights, truth):
        path = os.path.join(self.tmp, name)
        efficiency = weights.sum(1) ** 2 / (DRAWS * (weights ** 2).sum(1))
        with h5py.File(path, "w") as f:
            f["samples"] = samples.astype(np.float32)
            f["weights"] = weights
            f["efficiency"] = efficiency
            f["parameters"] = truth.astype(np.float32)
        return path

    def test_weighted_levels_match_the_exact_posterior_cdf(self):
        truth, x, samples, weights = conjugate_posteriors(1)
        levels = check.credible_levels(samples, weights, truth)
        exact = stats.norm.cdf(truth, x / 2, np.sqrt(0.5))
        self.assertLess(np.abs(levels - exact).max(), 0.05)

    def test_reweighted_posteriors_pass_and_unweighted_proposals_fail(self):
        truth, _, samples, weights = conjugate_posteriors(2)
        out = os.path.join(self.tmp, "weighted.json")
        done = subprocess.run([sys.executable, os.path.join(BENCH, "gw_posterior_check.py"),
                               self.write("weighted.h5", samples, weights, truth), "--json", out],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out) as f:
            result = json.load(f)["reweighted"]
        self.assertTrue(result["within_simultaneous_band"], result)
        # The critical distance is scipy's KS quantile at 1 - 0.01/5 (Bonferroni).
        self.assertAlmostEqual(result["ks_critical_simultaneous_99"], stats.kstwo.ppf(1 - 0.002, EVENTS), places=12)
        equal = np.full_like(weights, 1.0 / DRAWS)
        done = subprocess.run([sys.executable, os.path.join(BENCH, "gw_posterior_check.py"),
                               self.write("equal.h5", samples, equal, truth), "--json", out],
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(out) as f:
            result = json.load(f)["reweighted"]
        self.assertFalse(result["within_simultaneous_band"], result)
        # Under-confident: the central 50% interval covers more than half the events.
        self.assertTrue(all(c > 0.6 for c in result["coverage_50"].values()), result["coverage_50"])


if __name__ == "__main__":
    unittest.main()
