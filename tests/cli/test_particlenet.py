"""ParticleNet on `hpcml datagen jets` files: a smoke run of the full model, eval's
ROC metrics (ParticleNet-Lite) against an exact computation (the exported weights in the Python twin,
ranks over all validation jets), 1-rank vs 2-rank training of ParticleNet-Lite at
the same global batch, and the errors of a bad input mapping."""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch

from support import SOURCE_DIR, padded_jets, run

sys.path.insert(0, SOURCE_DIR)
sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
from jets_baseline import auc as exact_auc  # noqa: E402  (Mann-Whitney, ties by average rank)
from models.twins.load import load_twin  # noqa: E402


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class ParticleNetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-particlenet-")
        cls.data = os.path.join(cls.tmp, "jets")
        rc, _, err, _ = run(["datagen", "jets", "-o", cls.data, "--files", "3", "--events-per-file", "1500"],
                            ranks=2, timeout=300)
        assert rc == 0, err
        cls.validation = f"{cls.data}/jets-00002.h5"

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def common(self, model, run_dir, extra=()):
        return ["train", "--set", f"model.name={model}", "--set", "data.name=hdf5",
                "--set", f"data.files=[{self.data}/jets-00000.h5, {self.data}/jets-00001.h5]",
                "--set", f"data.validation_files=[{self.validation}]",
                "--set", "data.chunk_rows=100", "--set", "data.window=600",
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.003",
                "--set", "run.progress=lines", "--set", f"run.dir={run_dir}", *extra]

    def test_full_model_smoke(self):
        run_dir = os.path.join(self.tmp, "full")
        rc, out, err, _ = run(self.common("particlenet", run_dir, ["--set", "train.max_steps=3",
                                                                   "--set", "train.batch_size=8",
                                                                   "--set", "data.validation_files=[]"]), timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual((summary["parameters"], summary["steps"]), (366160, 3))
        self.assertEqual(len(read_jsonl(os.path.join(run_dir, "metrics.jsonl"))), 1)

    def test_eval_metrics_match_an_exact_computation(self):
        run_dir = os.path.join(self.tmp, "eval")
        rc, out, err, _ = run(self.common("particlenet-lite", run_dir, ["--set", "train.max_steps=20",
                                                                        "--set", "train.batch_size=32"]), timeout=300)
        self.assertEqual(rc, 0, err)
        rc, out, err, _ = run(["eval", "-c", os.path.join(run_dir, "config.yaml")], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            result = json.load(f)["eval"]
        self.assertIn("auc", out)
        # The same numbers from the exported weights in the twin, over every validation jet.
        params = os.path.join(self.tmp, "lite.h5")
        rc, _, err, _ = run(["export", result["checkpoint"], "-o", params])
        self.assertEqual(rc, 0, err)
        model = load_twin("particlenet-lite", params).eval()
        particles, mask, _, labels = padded_jets(self.validation)
        n = len(labels)
        with torch.no_grad():
            logits = torch.cat([model(torch.from_numpy(particles[i:i + 250]), torch.from_numpy(mask[i:i + 250]))
                                for i in range(0, n, 250)]).double().numpy()
        score = logits[:, 1] - logits[:, 0]
        self.assertEqual(result["samples"], n)
        self.assertAlmostEqual(result["accuracy"], float(((score > 0) == (labels == 1)).mean()), delta=2 / n)
        self.assertAlmostEqual(result["auc"], exact_auc(score, labels), delta=2e-3)
        # 1/eps_B at eps_S = 30%: the background fraction above the signal's 70th percentile.
        threshold = np.quantile(score[labels == 1], 0.7)
        eps_b = max(float((score[labels == 0] > threshold).mean()), 0.5 / (labels == 0).sum())
        self.assertLess(abs(np.log(result["rejection_30"] / (1 / eps_b))), 0.15, (result["rejection_30"], 1 / eps_b))

    def test_lite_two_ranks_reach_the_one_rank_metric(self):
        # Same global batch (64) and steps; the validation AUC over 1500 jets has a
        # standard error of about 0.01, and two training runs differ by their data
        # order and dropout: 0.04 is about 3 standard deviations of the difference.
        auc = {}
        for ranks in (1, 2):
            run_dir = os.path.join(self.tmp, f"lite-{ranks}")
            rc, _, err, _ = run(self.common("particlenet-lite", run_dir, [
                "--set", f"train.batch_size={64 // ranks}", "--set", "train.epochs=2",
                "--set", "schedule.name=cosine", "--set", "schedule.warmup_steps=10"]), ranks=ranks, timeout=600)
            self.assertEqual(rc, 0, err)
            val = [r for r in read_jsonl(os.path.join(run_dir, "metrics.jsonl")) if "val_auc" in r]
            self.assertEqual(len(val), 2)
            self.assertEqual(val[-1]["val_samples"], 1500)
            auc[ranks] = val[-1]["val_auc"]
        self.assertGreater(auc[1], 0.75, auc)  # it learns
        self.assertLess(abs(auc[1] - auc[2]), 0.04, auc)

    def test_bad_input_mapping_names_the_key(self):
        run_dir = os.path.join(self.tmp, "bad")
        cases = [
            (["--set", "data.inputs.points=constituents/values"],
             "key 'data.inputs.points': model particlenet-lite has no input 'points'; expected one of [particles, mask]"),
            (["--set", "data.inputs.mask=hits/mask"],
             "key 'data.inputs.mask': 'hits/mask' is the padding mask of collection 'hits', which"),
            (["--set", "data.inputs.particles=label"], "label"),
        ]
        for extra, message in cases:
            with self.subTest(extra=extra):
                rc, _, err, _ = run(self.common("particlenet-lite", run_dir, ["--set", "train.max_steps=1", *extra]),
                                    timeout=120)
                self.assertNotEqual(rc, 0)
                self.assertIn(message, err)
                self.assertNotIn("Traceback", err)
                self.assertLessEqual(len([l for l in err.splitlines() if "error" in l.lower()]), 2, err)


if __name__ == "__main__":
    unittest.main()
