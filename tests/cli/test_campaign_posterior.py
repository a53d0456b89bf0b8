"""`hpcml infer -c` campaigns of a density model (nsf-gw, docs/campaigns.md): the importance-weighted
posterior of every event of every input, checked from the outside: each draw's log q recomputed by
the flow's Python twin (models/twins/nsf.py) from the exported weights, in float64; log weights
finite exactly where the draw is inside the prior box read from the input's attributes; weights,
ESS and efficiency consistent; the true parameters copied. Each event's draws depend on (seed,
file, row) only: 1 rank with other units gives the same draws as 2 ranks, and the first file's
equal `hpcml infer -i`'s. A job killed after a commit, then re-run, writes the same bytes."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np
import torch

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, SOURCE_DIR, run

sys.path.insert(0, SOURCE_DIR)
from models.twins.nsf import NeuralSplineFlow  # noqa: E402

FILES = 3
ROWS = 40
CHUNK = 10
DRAWS = 150
TINY = ["--set", "model.flow.basis=16", "--set", "model.flow.hidden=32", "--set", "model.flow.steps=3",
        "--set", "model.flow.embedding_hidden=[64]", "--set", "model.flow.context=16",
        "--set", "model.flow.svd_waveforms=30", "--set", "model.flow.posterior_samples=30"]


def rechunk(path, chunk):
    """Rewrites the per-event datasets of a datagen file with `chunk` rows per HDF5 chunk."""
    with h5py.File(path, "a") as f:
        for name in [n for n in f if isinstance(f[n], h5py.Dataset) and f[n].shape and f[n].shape[0] == ROWS]:
            data, attrs = f[name][...], dict(f[name].attrs)
            del f[name]
            d = f.create_dataset(name, data=data, chunks=(chunk,) + data.shape[1:])
            for k, v in attrs.items():
                d.attrs[k] = v


def datasets(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f if isinstance(f[name], h5py.Dataset)}


def prior_box(path):
    """The prior's support from a datagen gw file's attributes, in the order of θ."""
    with h5py.File(path, "r") as f:
        a = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}

    def bounds(key):
        lo, hi = a[key].split(" ")[0].split(",")
        return float(lo), float(hi)
    return [bounds("gw.prior.chirp_mass_M_sun"), bounds("gw.prior.mass_ratio"), bounds("gw.prior.distance_Mpc"),
            bounds("gw.prior.t_c_s"), (0.0, 2 * np.pi)]


class CampaignPosteriorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-campaign-gw-")
        cls.data = os.path.join(cls.tmp, "gw")
        rc, _, err, _ = run(["datagen", "gw", "-o", cls.data, "--files", str(FILES), "--events-per-file", str(ROWS),
                             "--sample-rate", "512", "--length", "1024"], ranks=2, timeout=300)
        assert rc == 0, err
        cls.inputs = sorted(os.path.join(cls.data, f) for f in os.listdir(cls.data))
        for path in cls.inputs:
            rechunk(path, CHUNK)
        cls.run_dir = os.path.join(cls.tmp, "run")
        rc, _, err, _ = run(["train", "--set", "model.name=nsf-gw", "--set", "data.name=hdf5",
                             "--set", f"data.files=[{cls.inputs[0]}]", "--set", f"data.validation_files=[{cls.inputs[1]}]",
                             "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.001", "--set", "train.max_steps=4",
                             "--set", "train.batch_size=16", "--set", f"run.dir={cls.run_dir}", *TINY], timeout=300)
        assert rc == 0, err
        cls.reference = os.path.join(cls.tmp, "reference")
        rc, _, err, _ = run(["infer"] + cls.campaign_args(cls.reference), ranks=2, timeout=300)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def campaign_args(cls, out, extra=()):
        return ["-c", os.path.join(cls.run_dir, "config.yaml"), "--set", f"infer.inputs=[{cls.data}/gw-*.h5]",
                "--set", f"infer.output_dir={out}", "--set", f"infer.samples={DRAWS}", "--set", "infer.unit_rows=10",
                "--set", "infer.seed=7", *extra]

    def output(self, out, i):
        return os.path.join(out, f"gw-{i:05d}.predictions.h5")

    def twin(self):
        """The flow's Python twin with the campaign checkpoint's exported weights, in float64."""
        with open(os.path.join(self.reference, "summary.json")) as f:
            summary = json.load(f)
        params = os.path.join(self.tmp, "params.h5")
        rc, _, err, _ = run(["export", summary["checkpoint"], "-o", params])
        self.assertEqual(rc, 0, err)
        model = NeuralSplineFlow(theta_dim=5, strain_length=1024, num_steps=3, num_bins=8, tail_bound=3.0, hidden=32,
                                 hidden_layers=2, linear="lu", n_basis=16, embedding_hidden=[64], context_dim=16)
        with h5py.File(params, "r") as p:
            state = {k: torch.from_numpy(np.asarray(p[k][()])).to(v.dtype) for k, v in model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        return model.double().eval()

    def test_outputs_match_the_twin_and_the_prior(self):
        model = self.twin()
        for i, path in enumerate(self.inputs):
            with self.subTest(file=i):
                o, x = datasets(self.output(self.reference, i)), datasets(path)
                with h5py.File(self.output(self.reference, i), "r") as f:
                    self.assertEqual(f.attrs["schema"], "hpcml.gw.posterior")
                    self.assertEqual(os.path.basename(f.attrs["input_file"]), os.path.basename(path))
                    self.assertEqual(list(f["samples"].attrs["units"]), ["M_sun", "", "Mpc", "s", "rad"])
                np.testing.assert_array_equal(o["row"], np.arange(ROWS))
                np.testing.assert_array_equal(o["parameters"], x["parameters"])
                self.assertEqual(o["samples"].shape, (ROWS, DRAWS, 5))
                self.assertEqual((o["log_weights"].dtype, o["weights"].dtype), (np.float64, np.float64))
                # log q of every draw: the twin's log_prob, in float64.
                strain = torch.from_numpy(x["strain"]).double().repeat_interleave(DRAWS, 0)
                with torch.no_grad():
                    log_q = model.log_prob(torch.from_numpy(o["samples"]).double().reshape(-1, 5), strain)
                np.testing.assert_allclose(o["log_q"], log_q.reshape(ROWS, DRAWS).numpy(), rtol=1e-5, atol=1e-4)
                # Finite log weights exactly inside the prior box.
                inside = np.ones((ROWS, DRAWS), bool)
                for j, (lo, hi) in enumerate(prior_box(path)):
                    s = o["samples"][..., j].astype(np.float64)
                    inside &= (s >= lo) & ((s < hi) if j == 4 else (s <= hi))
                np.testing.assert_array_equal(np.isfinite(o["log_weights"]), inside)
                self.assertGreater(inside.mean(), 0.05)
                w = o["weights"]
                some = inside.any(1)
                np.testing.assert_allclose(w[some].sum(1), 1.0, rtol=1e-9)
                np.testing.assert_array_equal(w[~some], 0)
                np.testing.assert_allclose(o["ess"][some], 1 / (w[some] ** 2).sum(1), rtol=1e-9)
                np.testing.assert_allclose(o["efficiency"], o["ess"] / DRAWS, rtol=1e-12)

    def test_draws_depend_on_seed_file_and_row_only(self):
        # One rank, one thread, units of 20 rows instead of 10 (2 ranks of 1 thread each).
        out = os.path.join(self.tmp, "one-rank")
        rc, _, err, _ = run(["infer"] + self.campaign_args(out, ["--set", "infer.unit_rows=20",
                                                                 "--set", "runtime.threads=1"]), timeout=300)
        self.assertEqual(rc, 0, err)
        for i in range(FILES):
            a, b = datasets(self.output(self.reference, i)), datasets(self.output(out, i))
            np.testing.assert_allclose(a["samples"], b["samples"], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(a["log_q"], b["log_q"], rtol=1e-5, atol=1e-4)
        # The first file's events, as `hpcml infer -i/-o` draws them with the same seed.
        single = os.path.join(self.tmp, "single.h5")
        rc, _, err, _ = run(["infer", "-c", os.path.join(self.run_dir, "config.yaml"), "-i", self.inputs[0],
                             "-o", single, "--events", "0", "--samples", str(DRAWS), "--seed", "7",
                             "--set", "runtime.threads=1"], timeout=300)
        self.assertEqual(rc, 0, err)
        a, b = datasets(self.output(self.reference, 0)), datasets(single)
        self.assertEqual(sorted(a), sorted(b))
        np.testing.assert_allclose(a["samples"], b["samples"], rtol=1e-5, atol=1e-5)
        # Another seed draws other samples.
        other = os.path.join(self.tmp, "other-seed.h5")
        rc, _, err, _ = run(["infer", "-c", os.path.join(self.run_dir, "config.yaml"), "-i", self.inputs[0],
                             "-o", other, "--events", "2", "--samples", str(DRAWS), "--seed", "8"], timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertFalse(np.allclose(datasets(other)["samples"], a["samples"][:2]))

    def test_killed_after_a_commit_resumes_to_the_same_bytes(self):
        out = os.path.join(self.tmp, "killed")
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.campaign_args(out)
        job = subprocess.run(cmd, capture_output=True, timeout=300,
                             env=dict(os.environ, HPCML_TEST_CAMPAIGN_KILL_AFTER="2"))
        self.assertNotEqual(job.returncode, 0, "the campaign was not interrupted")
        self.assertLess(len([f for f in os.listdir(out) if f.endswith(".predictions.h5")]), FILES)
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        for i in range(FILES):
            a, b = datasets(self.output(self.reference, i)), datasets(self.output(out, i))
            self.assertEqual(sorted(a), sorted(b))
            for name in a:
                self.assertEqual((a[name].dtype, a[name].shape), (b[name].dtype, b[name].shape), name)
                self.assertEqual(a[name].tobytes(), b[name].tobytes(), name)
        self.assertEqual(os.listdir(os.path.join(out, "parts")), [])

    def test_a_task_for_a_density_model_is_a_config_error(self):
        rc, _, err, _ = run(["infer"] + self.campaign_args(os.path.join(self.tmp, "bad"),
                                                           ["--set", "infer.task=classification"]))
        self.assertEqual(rc, 2, err)
        lines = [line for line in err.splitlines() if line.startswith("hpcml:")]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("infer.task", lines[0])
        self.assertIn("expected auto, found classification", lines[0])


if __name__ == "__main__":
    unittest.main()
