"""`hpcml train` with train.pack (docs/training.md#packed-members): each member of a pack trained
on 2 ranks against the same member trained alone by the ordinary path (weights read back with
h5py from `hpcml export`), the unpacked members' `hpcml eval` (and one member's `hpcml infer`
predictions) against the pack's per-member validation metrics, kill-and-resume of a pack (bit-identical to the uninterrupted pack), and the
one-line config errors (a model that cannot pack, eval of a pack's own config)."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, run, sigkill_one_rank

# A member of a pack is the same arithmetic as alone, but its matrix products run in another
# kernel (baddbmm's per-member GEMMs vs addmm) and its loss is a column mean: float32 sums in
# another order. Over the 90 steps below that drift stays within 1e-4 relative (about 800
# float32 ulps); a wrong gradient, data order or seed is off by orders of magnitude more.
RTOL, ATOL = 1e-4, 1e-5


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def metric_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def exported(checkpoint, out):
    rc, _, err, _ = run(["export", checkpoint, "-o", out], timeout=60)
    assert rc == 0, err
    with h5py.File(out) as f:
        return {name: f[name][()] for name in f.keys()}


def newest_checkpoint(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    steps = sorted(int(f[5:-3]) for f in os.listdir(d) if f.startswith("step-") and f.endswith(".pt"))
    return os.path.join(d, f"step-{steps[-1]}.pt")


class PackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-pack-")
        cls.data = os.path.join(cls.tmp, "calo")
        rc, out, err, _ = run(["datagen", "calo", "-o", cls.data, "--files", "3", "--events-per-file", "2000"],
                              ranks=2, timeout=300)
        assert rc == 0, err
        # The pack: 3 FACILE members (batch norm included) on 2 ranks, Adam, 90 steps.
        cls.pack_dir = os.path.join(cls.tmp, "pack")
        rc, out, err, _ = run(cls.facile(cls.pack_dir, ["--set", "train.pack=3"]), ranks=2, timeout=300)
        assert rc == 0, err
        cls.pack_err = err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def facile(cls, run_dir, extra=()):
        return ["train", "--set", "model.name=facile", "--set", "data.name=hdf5",
                "--set", f"data.files=[{cls.data}/calo-channels-00000.h5, {cls.data}/calo-channels-00001.h5]",
                "--set", f"data.validation_files=[{cls.data}/calo-channels-00002.h5]",
                "--set", "data.chunk_rows=250", "--set", "data.window=1000",
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.003", "--set", "train.loss=relative_mse",
                "--set", "train.epochs=3", "--set", "train.batch_size=64", "--set", "model.seed=5",
                "--set", "train.seed=40", "--set", "train.log_every=10",
                "--set", "run.progress=lines", "--set", f"run.dir={run_dir}", *extra]

    def test_members_equal_members_trained_alone(self):
        last = metric_rows(self.pack_dir)
        steps = summary(self.pack_dir)["steps"]
        self.assertEqual(steps, 93)  # 3 epochs of 4000 rows at 2 x 64
        for k in (0, 2):
            alone_dir = os.path.join(self.tmp, f"alone-{k}")
            rc, out, err, _ = run(self.facile(alone_dir, ["--set", f"model.seed={5 + k}",
                                                          "--set", f"train.seed={40 + k}"]), ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            alone = exported(newest_checkpoint(alone_dir), os.path.join(self.tmp, f"alone-{k}.h5"))
            member_dir = os.path.join(self.pack_dir, f"member-{k}")
            member = exported(os.path.join(member_dir, "checkpoints", f"step-{steps}.pt"),
                              os.path.join(self.tmp, f"member-{k}.h5"))
            self.assertEqual(sorted(alone), sorted(member))
            for name, expected in alone.items():
                np.testing.assert_allclose(member[name], expected, rtol=RTOL, atol=ATOL,
                                           err_msg=f"member {k}: {name}")
            # The members differ from one another (own seed and data order).
            self.assertGreater(np.abs(member["net.1.weight"] - exported(
                os.path.join(self.pack_dir, "member-1", "checkpoints", f"step-{steps}.pt"),
                os.path.join(self.tmp, f"member-1-{k}.h5"))["net.1.weight"]).max(), 1e-3)
            # Per-member training metrics match the alone run's lines.
            alone_rows = [r for r in metric_rows(alone_dir) if "loss" in r]
            pack_rows = [r for r in last if "loss" in r]
            self.assertEqual([r["step"] for r in alone_rows], [r["step"] for r in pack_rows])
            for a, p in zip(alone_rows, pack_rows):
                self.assertEqual(len(p["members"]), 3)
                np.testing.assert_allclose(p["members"][k]["loss"], a["loss"], rtol=1e-4)
                np.testing.assert_allclose(p["members"][k]["resolution"], a["resolution"], rtol=1e-4)

    def test_unpacked_members_evaluate_like_the_packs_members(self):
        validation = [r for r in metric_rows(self.pack_dir) if "val_loss" in r][-1]
        self.assertEqual(len(validation["members"]), 3)
        for k in range(3):
            config = os.path.join(self.pack_dir, f"member-{k}", "config.yaml")
            rc, out, err, _ = run(["eval", "-c", config], ranks=2, timeout=120)
            self.assertEqual(rc, 0, err)
            got = summary(os.path.join(self.pack_dir, f"member-{k}"))["eval"]
            expected = validation["members"][k]
            self.assertEqual(got["samples"], 2000)
            np.testing.assert_allclose(got["loss"], expected["val_loss"], rtol=1e-5)
            np.testing.assert_allclose(got["resolution"], expected["val_resolution"], rtol=1e-5)
        # hpcml infer reads an unpacked member too: its predictions give the member's resolution.
        member = os.path.join(self.pack_dir, "member-1")
        rc, out, err, _ = run(["infer", "-c", os.path.join(member, "config.yaml"), "--set",
                               f"infer.inputs=[{self.data}/calo-channels-00002.h5]"], ranks=2, timeout=120)
        self.assertEqual(rc, 0, err)
        with h5py.File(os.path.join(member, "infer", "calo-channels-00002.predictions.h5")) as f:
            prediction, energy = f["prediction"][:, 0].astype(np.float64), f["energy"][:].astype(np.float64)
        np.testing.assert_allclose(np.sqrt(np.mean(((prediction - energy) / energy) ** 2)),
                                   validation["members"][1]["val_resolution"], rtol=1e-5)
        # The pooled line is the members' pooled metric, not one member's.
        losses = [m["val_loss"] for m in validation["members"]]
        np.testing.assert_allclose(validation["val_loss"], np.mean(losses), rtol=1e-9)

    def test_a_pack_config_is_not_evaluated_as_one_model(self):
        rc, out, err, _ = run(["eval", "-c", os.path.join(self.pack_dir, "config.yaml")], timeout=60)
        self.assertEqual(rc, 2, err)
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("key 'train.pack'", lines[0])
        self.assertIn("member-0/config.yaml", lines[0])

    def test_kill_and_resume_of_a_pack_is_exact(self):
        # A slower pack (MLP members on synthetic data) so that a run can be killed mid-way.
        slow = ["--set", "data.features=128", "--set", "model.hidden=[384,384]", "--set", "train.batch_size=128",
                "--set", "data.samples=4096", "--set", "train.max_steps=120", "--set", "checkpoint.every_steps=20",
                "--set", "train.log_every=5", "--set", "train.pack=2", "--set", "runtime.collective_timeout_s=60"]
        reference = os.path.join(self.tmp, "slow-reference")
        rc, out, err, _ = run(["train", "--set", f"run.dir={reference}"] + slow, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        killed = os.path.join(self.tmp, "slow-killed")
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "train", "--set", f"run.dir={killed}"] + slow
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), "the run ended before it could be interrupted")
            try:
                steps = [r["step"] for r in metric_rows(killed) if "loss" in r]
            except (FileNotFoundError, json.JSONDecodeError):
                steps = []
            if steps and steps[-1] >= 45:
                break
            time.sleep(0.05)
        self.assertNotEqual(sigkill_one_rank(proc), 0)
        self.assertFalse(os.path.exists(os.path.join(killed, "summary.json")))
        rc, out, err, _ = run(["train", "--resume", "--set", f"run.dir={killed}"] + slow, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"resumed from .*step-\d+\.pt at step [1-9]\d*")
        self.assertEqual(summary(killed)["parameters_sha256"], summary(reference)["parameters_sha256"])
        for k in range(2):
            self.assertEqual(summary(os.path.join(killed, f"member-{k}"))["parameters_sha256"],
                             summary(os.path.join(reference, f"member-{k}"))["parameters_sha256"])
        steps = [r["step"] for r in metric_rows(killed) if "loss" in r]
        self.assertEqual(steps, sorted(set(steps)))
        self.assertEqual(steps[-1], 120)
        # The metrics after the resume are the uninterrupted run's, member by member.
        ref_rows = {r["step"]: r for r in metric_rows(reference) if "loss" in r}
        for row in metric_rows(killed):
            if "loss" in row and row["step"] > 60:
                self.assertEqual([m["loss"] for m in row["members"]],
                                 [m["loss"] for m in ref_rows[row["step"]]["members"]])

    def test_a_model_that_cannot_pack_is_a_one_line_config_error(self):
        for model in ("deepcalo", "particlenet-lite", "torchscript"):
            rc, out, err, _ = run(["train", "--set", f"model.name={model}", "--set", "train.pack=4",
                                   "--set", f"run.dir={self.tmp}/no-{model}"], timeout=60)
            self.assertEqual(rc, 2, err)
            lines = [l for l in err.splitlines() if l.strip()]
            self.assertEqual(len(lines), 1, err)
            self.assertIn("key 'train.pack'", lines[0])
            self.assertIn(f"model {model} cannot be packed", lines[0])
            self.assertFalse(os.path.exists(f"{self.tmp}/no-{model}"))


if __name__ == "__main__":
    unittest.main()
