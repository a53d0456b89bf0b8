"""`hpcml tracking` (docs/tracking.md) on a tiny generated data set: a smoke test of
train and eval, the 1-vs-2-rank test, the Python twin of the learned stages against the
C++ stages, config errors, and the key reference in the docs."""
import json
import os
import sys
import tempfile
import unittest

import h5py
import torch

from support import SOURCE_DIR, run

sys.path.insert(0, SOURCE_DIR)
from models.twins.tracking import load_pipeline, node_features  # noqa: E402

# Small networks and few steps: seconds, not minutes. The global batch (events_per_step)
# is the same at 1 and 2 ranks.
TINY = """
data:
  files: ["{data}/train/tracking-*.h5"]
  validation_files: ["{data}/val/tracking-*.h5"]
  baseline_tune_events: 8
embedding:
  steps: 6
  events_per_step: 2
  dim: 4
  hidden: [32, 32]
  random_pairs: 500
  radius: 0.6
  max_neighbours: 8
filter:
  steps: 6
  events_per_step: 2
  hidden: [32]
  threshold: 0.2
gnn:
  steps: 6
  events_per_step: 2
  hidden: 16
  iterations: 2
run:
  dir: {run}
  log_every: 2
"""

# 1 vs 2 ranks: per-step losses agree to this relative tolerance (the same global batch
# and the same random pairs, summed in a different order), per-stage edge metrics to this
# absolute one (a score near a cut may flip).
LOSS_RTOL = 1e-3
METRIC_ATOL = 0.01


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class TrackingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data = os.path.join(cls.tmp.name, "data")
        for sub, seed, files, events in (("train", 1, 2, 6), ("val", 2, 1, 4)):
            rc, _, err, _ = run(["datagen", "tracking", "-o", os.path.join(cls.data, sub), "--files", str(files),
                                 "--events-per-file", str(events), "--seed", str(seed), "--mean-particles", "40"])
            assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def config(self, name, extra=""):
        run_dir = os.path.join(self.tmp.name, name)
        path = os.path.join(self.tmp.name, name + ".yaml")
        with open(path, "w") as f:
            f.write(TINY.format(data=self.data, run=run_dir) + extra)
        return path, run_dir

    def train(self, name, ranks=None):
        path, run_dir = self.config(name)
        rc, out, err, seconds = run(["tracking", "train", "-c", path, "--set", "runtime.threads=1"], ranks=ranks,
                                    timeout=300)
        self.assertEqual(rc, 0, err + out)
        return path, run_dir, out, seconds

    def test_smoke_train_and_eval(self):
        path, run_dir, out, seconds = self.train("smoke")
        self.assertIn("hpcml tracking eval: 4 validation events", out)
        for line in ("1 embedding radius graph", "2 edge filter", "3 GNN, cut", "baseline (phi", "tracks (pT > 1 GeV"):
            self.assertIn(line, out)
        for name in ("weights.h5", "config.yaml", "metrics.jsonl", "summary.json"):
            self.assertTrue(os.path.exists(os.path.join(run_dir, name)), name)
        metrics = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        self.assertEqual([m["stage"] for m in metrics], ["embedding"] * 3 + ["filter"] * 3 + ["gnn"] * 3)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(summary["train"]["train_events"], 12)
        ev = summary["eval"]
        self.assertEqual(ev["validation_events"], 4)
        for stage in ("embedding", "filter", "gnn", "baseline"):
            self.assertTrue(0 <= ev[stage]["efficiency"] <= 1 and 0 <= ev[stage]["purity"] <= 1, ev[stage])
        # Each stage only removes edges.
        self.assertGreaterEqual(ev["embedding"]["efficiency"], ev["filter"]["efficiency"])
        self.assertGreaterEqual(ev["filter"]["efficiency"], ev["gnn"]["efficiency"])
        self.assertGreater(ev["tracks"]["particles"], 0)
        # eval alone, from the weights, gives the same figures.
        rc, out2, err, _ = run(["tracking", "eval", "-c", path, "--set", "runtime.threads=1"], timeout=120)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            again = json.load(f)["eval"]
        for stage in ("embedding", "filter", "gnn", "baseline", "tracks"):
            self.assertEqual(again[stage]["efficiency"], ev[stage]["efficiency"], stage)

    def test_one_vs_two_ranks(self):
        _, one_dir, _, _ = self.train("one", ranks=1)
        _, two_dir, _, _ = self.train("two", ranks=2)
        one = read_jsonl(os.path.join(one_dir, "metrics.jsonl"))
        two = read_jsonl(os.path.join(two_dir, "metrics.jsonl"))
        self.assertEqual([(m["stage"], m["step"]) for m in one], [(m["stage"], m["step"]) for m in two])
        for a, b in zip(one, two):
            self.assertLess(abs(a["loss"] - b["loss"]), LOSS_RTOL * max(abs(a["loss"]), 1e-6), (a, b))
        with open(os.path.join(one_dir, "summary.json")) as f:
            s1 = json.load(f)
        with open(os.path.join(two_dir, "summary.json")) as f:
            s2 = json.load(f)
        self.assertEqual((s1["train"]["ranks"], s2["train"]["ranks"]), (1, 2))
        for stage in ("embedding", "filter"):
            for key in ("efficiency", "purity"):
                self.assertAlmostEqual(s1["train"][stage][key], s2["train"][stage][key], delta=METRIC_ATOL)
        for stage in ("embedding", "filter", "gnn"):
            for key in ("efficiency", "purity"):
                self.assertAlmostEqual(s1["eval"][stage][key], s2["eval"][stage][key], delta=METRIC_ATOL)
        self.assertEqual(s1["eval"]["baseline"], {**s2["eval"]["baseline"]})

    def test_python_twin_equals_cpp_stages(self):
        path, run_dir, _, _ = self.train("twin")
        dump = os.path.join(self.tmp.name, "dump.h5")
        rc, _, err, _ = run(["tracking", "eval", "-c", path, "--dump-event", dump], timeout=120)
        self.assertEqual(rc, 0, err)
        twin = load_pipeline(dump).eval()
        with h5py.File(dump, "r") as f:
            t = {k: torch.from_numpy(f[k][()]) for k in f if k.startswith("__")}
        self.assertGreater(t["__graph_edges__"].shape[1], 0)
        self.assertGreater(t["__filter_edges__"].shape[1], 0)
        close = dict(rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(node_features(t["__hits__"]), t["__x__"], **close)
            x = t["__x__"]
            torch.testing.assert_close(twin.embedding(x), t["__embedding__"], **close)
            torch.testing.assert_close(twin.filter(x, t["__graph_edges__"]), t["__filter_logits__"], **close)
            torch.testing.assert_close(twin.gnn(x, t["__filter_edges__"]), t["__gnn_logits__"], **close)
        # The weights file itself (run.dir/weights.h5) loads strictly too.
        weights = load_pipeline(os.path.join(run_dir, "weights.h5"))
        self.assertEqual(sorted(weights.state_dict()), sorted(twin.state_dict()))

    def test_config_errors_are_one_line(self):
        path, _ = self.config("bad", "")
        rc, _, err, _ = run(["tracking", "train", "-c", path, "--set", "gnn.events_per_step=3"], ranks=2)
        self.assertNotEqual(rc, 0)
        self.assertIn("gnn.events_per_step is 3; expected a multiple of the 2 rank(s)", err)
        rc, _, err, _ = run(["tracking", "train", "-c", path, "--set", "embedding.radius=-1"])
        self.assertEqual(rc, 2)
        self.assertIn("embedding.radius", err)
        rc, _, err, _ = run(["tracking", "eval", "-c", path, "--set", "run.dir=" + os.path.join(self.tmp.name, "none")])
        self.assertNotEqual(rc, 0)
        self.assertIn("weights file", err)
        self.assertIn("not found", err)

    def test_reference_is_documented(self):
        rc, out, err, _ = run(["tracking", "reference"])
        self.assertEqual(rc, 0, err)
        self.assertIn("| `embedding.radius` |", out)
        with open(os.path.join(SOURCE_DIR, "docs", "tracking.md")) as f:
            self.assertTrue(out.strip() in f.read(), "docs/tracking.md's key table is out of date: paste "
                            "`hpcml tracking reference` into it")


if __name__ == "__main__":
    unittest.main()
