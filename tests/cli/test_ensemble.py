"""`hpcml ensemble` (docs/ensembles.md) checked from the outside: members x variations each trained as
the ordinary run of its resolved config (a member's parameters equal `hpcml train` of the config we
derive here); a packed ensemble's members; bootstrap resamples; kill-and-resume of an ensemble (the
resumed members equal the uninterrupted ones); a crashed member retried on the next run, and recorded
crashed once its retries are spent; a diverging member recorded failed and not retried; and the
aggregated inference (`hpcml infer` with run.dir an ensemble) against NumPy over every member's own
ordinary `hpcml infer` campaign."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, kill_session, run


def load(path):
    with open(path) as f:
        return json.load(f)


def journal(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def read_yaml_config(path):
    # config.yaml as hpcml writes it: nested block mappings of scalars and flow lists.
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


class EnsembleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-ensemble-")
        cls.data = os.path.join(cls.tmp, "lr")
        rc, _, err, _ = run(["datagen", "lr", "-o", cls.data, "--files", "3", "--events-per-file", "1500",
                             "--signal-fraction", "0.4"], timeout=300)
        assert rc == 0, err
        cls.files = [os.path.join(cls.data, f"lr-0000{i}.h5") for i in range(3)]
        # The shared ensemble: 3 members x 2 variations on 2 ranks.
        cls.main = os.path.join(cls.tmp, "main")
        rc, _, err, _ = run(["ensemble", "-c", cls.config(cls.main)], ranks=2, timeout=600)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def base(cls):
        return {
            "runtime": {"threads": 1},
            "model": {"name": "mlp", "hidden": [16, 16], "seed": 3},
            "data": {"name": "hdf5", "files": cls.files[:2], "validation_files": [cls.files[2]], "input": "x",
                     "target": "label", "classes": 2, "chunk_rows": 250, "window": 1000},
            "optimizer": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 2, "batch_size": 50, "log_every": 10, "seed": 100},
            "run": {"progress": "lines"},
        }

    @classmethod
    def config(cls, ens_dir, ensemble=None, name="ensemble.yaml"):
        c = cls.base()
        c["ensemble"] = {"members": 3, "dir": ens_dir, "seed": 10,
                         "variations": {"nominal": {}, "wide": {"model.hidden": [24]}}}
        c["ensemble"].update(ensemble or {})
        path = os.path.join(cls.tmp, os.path.basename(ens_dir) + "-" + name)
        with open(path, "w") as f:
            json.dump(c, f)  # JSON is YAML
        return path

    def test_members_times_variations_trained_with_their_resolved_configs(self):
        s = load(os.path.join(self.main, "summary.json"))
        self.assertEqual(s["counts"], {"complete": 6})
        self.assertEqual(sorted((m["variation"], m["member"]) for m in s["members"]),
                         sorted((v, k) for v in ("nominal", "wide") for k in range(3)))
        for m in s["members"]:
            d = os.path.join(self.main, m["variation"], f"member-{m['member']}")
            c = read_yaml_config(os.path.join(d, "config.yaml"))
            # Seeds: the base's plus ensemble.seed + k (seeds: shared); the variation's override.
            self.assertEqual(c["model"]["seed"], 3 + 10 + m["member"])
            self.assertEqual(c["train"]["seed"], 100 + 10 + m["member"])
            self.assertEqual(c["model"]["hidden"], [24] if m["variation"] == "wide" else [16, 16])
            self.assertEqual(os.path.realpath(c["run"]["dir"]), os.path.realpath(d))
            self.assertTrue(os.listdir(os.path.join(d, "checkpoints")))
            self.assertIn("val_loss", m["validation"])
            self.assertAlmostEqual(m["val_loss"], load(os.path.join(d, "summary.json"))["validation"]["val_loss"])
        # A member is the ordinary run of that config: `hpcml train` of it gives the same parameters.
        alone = os.path.join(self.tmp, "alone")
        c = self.base()
        c["model"]["hidden"] = [24]
        c["model"]["seed"] = 3 + 10 + 2
        c["train"]["seed"] = 100 + 10 + 2
        c["run"]["dir"] = alone
        path = os.path.join(self.tmp, "alone.yaml")
        with open(path, "w") as f:
            json.dump(c, f)
        rc, _, err, _ = run(["train", "-c", path], ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        member = load(os.path.join(self.main, "wide", "member-2", "summary.json"))
        self.assertEqual(member["parameters_sha256"], load(os.path.join(alone, "summary.json"))["parameters_sha256"])

    def test_members_on_groups_of_two_ranks(self):
        # ranks_per_member 2 on 3 ranks: one group of 2 (the third rank idle, reported); each member
        # trains data-parallel on its group, with the parameters of `hpcml train` on 2 ranks.
        d = os.path.join(self.tmp, "groups")
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, {"members": 2, "variations": None,
                                                                 "ranks_per_member": 2})], ranks=3, timeout=600)
        self.assertEqual(rc, 0, err)
        self.assertIn("1 rank(s) idle", err)
        s = load(os.path.join(d, "summary.json"))
        self.assertEqual(s["counts"], {"complete": 2})
        member_dir = [os.path.join(d, v) for v in os.listdir(d) if os.path.isdir(os.path.join(d, v, "member-1"))][0]
        member = load(os.path.join(member_dir, "member-1", "summary.json"))
        self.assertEqual(member["ranks"], 2)
        alone = os.path.join(self.tmp, "alone-2")
        c = self.base()
        c["model"]["seed"] = 3 + 10 + 1
        c["train"]["seed"] = 100 + 10 + 1
        c["run"]["dir"] = alone
        path = os.path.join(self.tmp, "alone-2.yaml")
        with open(path, "w") as f:
            json.dump(c, f)
        rc, _, err, _ = run(["train", "-c", path], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertEqual(member["parameters_sha256"], load(os.path.join(alone, "summary.json"))["parameters_sha256"])

    def test_aggregated_mean_and_variance_equal_numpy_over_the_members_outputs(self):
        out = os.path.join(self.tmp, "agg")
        cfg = {"run": {"dir": self.main}, "runtime": {"threads": 1},
               "infer": {"inputs": [self.files[2]], "output_dir": out, "members": True,
                         "copy_fields": ["label", "log_r"], "unit_rows": 500}}
        path = os.path.join(self.tmp, "agg.yaml")
        with open(path, "w") as f:
            json.dump(cfg, f)
        rc, _, err, _ = run(["infer", "-c", path], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        # Class counts of the training files: the prior correction log(n0 / n1).
        labels = np.concatenate([h5py.File(f)["label"][()] for f in self.files[:2]])
        log_prior = np.log((labels == 0).sum() / (labels == 1).sum())
        for v in ("nominal", "wide"):
            scores = []
            for k in range(3):  # every member's own ordinary campaign
                mdir = os.path.join(self.main, v, f"member-{k}")
                own = os.path.join(self.tmp, f"own-{v}-{k}")
                rc, _, err, _ = run(["infer", "-c", mdir + "/config.yaml", "--set", f"infer.inputs=[{self.files[2]}]",
                                     "--set", f"infer.output_dir={own}"], ranks=1, timeout=300)
                self.assertEqual(rc, 0, err)
                with h5py.File(os.path.join(own, "lr-00002.predictions.h5")) as f:
                    scores.append(f["scores"][()].astype(np.float64))
            scores = np.stack(scores, 1)  # (rows, M, 2)
            with h5py.File(os.path.join(out, v, "lr-00002.predictions.h5")) as f:
                got = {name: f[name][()] for name in f.keys() if name != "meta"}
            np.testing.assert_allclose(got["scores_mean"], scores.mean(1), rtol=0, atol=2e-6)
            np.testing.assert_allclose(got["scores_variance"], scores.var(1), rtol=0, atol=2e-7)
            np.testing.assert_allclose(got["scores_members"], scores, rtol=0, atol=2e-6)
            log_r = np.log(scores[..., 1] / scores[..., 0]) + log_prior
            np.testing.assert_allclose(got["log_r_members"], log_r, rtol=0, atol=5e-5)
            np.testing.assert_allclose(got["log_r_mean"], log_r.mean(1), rtol=0, atol=5e-5)
            np.testing.assert_allclose(got["log_r_variance"], log_r.var(1), rtol=1e-3, atol=1e-6)
            np.testing.assert_array_equal(got["row"], np.arange(1500))
            with h5py.File(self.files[2]) as f:
                # Copied fields are read as the campaign reads inputs: floating point as float32.
                np.testing.assert_allclose(got["log_r"], f["log_r"][()], rtol=1e-6, atol=1e-6)
        # Without infer.members: the same mean, and no member columns.
        rc, _, err, _ = run(["infer", "-c", path, "--set", "infer.members=false", "--set",
                             f"infer.output_dir={out}-lean"], ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        with h5py.File(os.path.join(out + "-lean", "wide", "lr-00002.predictions.h5")) as f:
            self.assertNotIn("scores_members", f)
            np.testing.assert_allclose(f["scores_mean"][()], got["scores_mean"], rtol=0, atol=1e-7)

    def test_kill_and_resume(self):
        d = os.path.join(self.tmp, "killed")
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "ensemble", "-c", self.config(d)]
        # One member is held (a test hook), so the kill lands with the ensemble surely unfinished.
        stalled = "nominal/member-1"
        env = dict(os.environ, HPCML_TEST_ENSEMBLE_STALL=stalled)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env=env)
        path = os.path.join(d, "journal.jsonl")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            rows = journal(path) if os.path.exists(path) else []
            if (any(r.get("event") == "done" for r in rows)
                    and any(r.get("event") == "start" and r.get("id") == stalled for r in rows)):
                break
            time.sleep(0.05)
        self.assertIsNone(proc.poll(), "the ensemble ended before the kill")
        kill_session(proc.pid)
        proc.wait(timeout=60)
        before = journal(path)
        done_before = {r["id"] for r in before if r.get("event") == "done"}
        self.assertTrue(done_before)
        self.assertNotIn(stalled, done_before)
        rc, _, err, _ = run(["ensemble", "-c", self.config(d)], ranks=2, timeout=600)
        self.assertEqual(rc, 0, err)
        after = journal(path)
        for task in done_before:  # not trained again
            self.assertEqual([r["event"] for r in after if r.get("id") == task].count("start"), 1)
        s = load(os.path.join(d, "summary.json"))
        self.assertEqual(s["counts"], {"complete": 6})
        # The resumed ensemble equals the uninterrupted one, member by member.
        for m in s["members"]:
            rel = os.path.join(m["variation"], f"member-{m['member']}", "summary.json")
            self.assertEqual(load(os.path.join(d, rel))["parameters_sha256"],
                             load(os.path.join(self.main, rel))["parameters_sha256"], rel)

    def test_crashed_member_retried_then_recorded_crashed(self):
        small = {"members": 2, "variations": None, "max_retries": 1}
        crash = {"HPCML_TEST_ENSEMBLE_CRASH": "nominal/member-1"}
        # Retried: a crash, then a run that completes it.
        d = os.path.join(self.tmp, "crash-once")
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, small)], ranks=1, timeout=300, env=crash)
        self.assertNotEqual(rc, 0)
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, small)], ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        members = {m["member"]: m for m in load(os.path.join(d, "summary.json"))["members"]}
        self.assertEqual(members[1]["state"], "complete")
        self.assertEqual(members[1]["crashes"], 1)
        self.assertEqual(members[0]["crashes"], 0)
        # Spent: 1 + max_retries crashes, then recorded crashed and not started again.
        d = os.path.join(self.tmp, "crash-always")
        for _ in range(2):
            rc, _, err, _ = run(["ensemble", "-c", self.config(d, small)], ranks=1, timeout=300, env=crash)
            self.assertNotEqual(rc, 0)
        rc, out, err, _ = run(["ensemble", "-c", self.config(d, small)], ranks=1, timeout=300, env=crash)
        self.assertEqual(rc, 0, err)
        members = {m["member"]: m for m in load(os.path.join(d, "summary.json"))["members"]}
        self.assertEqual(members[0]["state"], "complete")
        self.assertEqual(members[1]["state"], "crashed")
        self.assertIn("max_retries 1", members[1]["error"])
        starts = [r for r in journal(os.path.join(d, "journal.jsonl"))
                  if r.get("event") == "start" and r["id"] == "nominal/member-1"]
        self.assertEqual(len(starts), 2)

    def test_diverging_member_failed_and_not_retried(self):
        d = os.path.join(self.tmp, "nan")
        spec = {"members": 2, "variations": {"nominal": {}, "hot": {"optimizer.lr": 1e30}}}
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, spec)], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        for attempt in range(2):  # the re-run starts nothing
            s = load(os.path.join(d, "summary.json"))
            states = {(m["variation"], m["member"]): m["state"] for m in s["members"]}
            self.assertEqual(states, {("nominal", 0): "complete", ("nominal", 1): "complete",
                                      ("hot", 0): "failed", ("hot", 1): "failed"})
            for m in s["members"]:
                if m["variation"] == "hot":
                    self.assertIn("diverged", m["error"])
            starts = [r["id"] for r in journal(os.path.join(d, "journal.jsonl")) if r.get("event") == "start"]
            self.assertEqual(sorted(starts), ["hot/member-0", "hot/member-1", "nominal/member-0", "nominal/member-1"])
            if attempt == 0:
                rc, _, err, _ = run(["ensemble", "-c", self.config(d, spec)], ranks=2, timeout=300)
                self.assertEqual(rc, 0, err)

    def test_packed_members_and_bootstrap(self):
        d = os.path.join(self.tmp, "packed")
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, {"pack": 2, "variations": None})], ranks=1,
                            timeout=300)
        self.assertEqual(rc, 0, err)
        s = load(os.path.join(d, "summary.json"))
        self.assertEqual(s["counts"], {"complete": 3})
        self.assertEqual(sorted(m["task"] for m in s["members"]), ["nominal/pack-0", "nominal/pack-0", "nominal/pack-2"])
        for k in range(3):
            c = read_yaml_config(os.path.join(d, "nominal", f"member-{k}", "config.yaml"))
            self.assertEqual((c["model"]["seed"], c["train"]["seed"]), (13 + k, 110 + k))
            self.assertTrue(os.listdir(os.path.join(d, "nominal", f"member-{k}", "checkpoints")))
        # Bootstrap: each member's resample has the training set's size, only its rows, and differs.
        d = os.path.join(self.tmp, "boot")
        rc, _, err, _ = run(["ensemble", "-c", self.config(d, {"bootstrap": True, "members": 2, "variations": None})],
                            ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        original = np.concatenate([h5py.File(f)["x"][()] for f in self.files[:2]])
        rows = {tuple(r) for r in original}
        drawn = []
        for k in range(2):
            path = os.path.join(d, "nominal", "bootstrap", f"member-{k}.h5")
            c = read_yaml_config(os.path.join(d, "nominal", f"member-{k}", "config.yaml"))
            self.assertEqual(c["data"]["files"], [path])
            with h5py.File(path) as f:
                x = f["x"][()]
                self.assertEqual(f.attrs["schema"], "hpcml.lr")
            self.assertEqual(len(x), len(original))
            self.assertTrue(all(tuple(r) in rows for r in x))
            unique = len({tuple(r) for r in x}) / len(x)
            self.assertTrue(0.55 < unique < 0.72, unique)  # 1 - 1/e of the rows, about 0.632
            drawn.append(x)
        self.assertFalse(np.array_equal(drawn[0], drawn[1]))

    def test_config_errors_are_one_line(self):
        cases = [
            ({"members": 0}, "ensemble.members"),
            ({"seeds": "each"}, "ensemble.seeds"),
            ({"variations": {"bad": {"model.hiden": [3]}}}, "model.hiden"),
            ({"variations": {"a/b": {}}}, "ensemble.variations"),
            ({"variations": {"r": {"run.dir": "x"}}}, "run.dir"),
            ({"pack": 2, "bootstrap": True}, "ensemble.bootstrap"),
            ({"memebers": 2}, "memebers"),
        ]
        for spec, key in cases:
            with self.subTest(key=key):
                rc, out, err, _ = run(["ensemble", "-c", self.config(os.path.join(self.tmp, "bad"), spec)], timeout=60)
                self.assertEqual(rc, 2, err)
                lines = [l for l in err.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, err)
                self.assertIn(key, lines[0])


if __name__ == "__main__":
    unittest.main()
