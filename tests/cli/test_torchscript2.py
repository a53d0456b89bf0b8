"""Models scripted by a current PyTorch (2.11; tests/fixtures/make_torch2_fixtures.py made
them), in both build lines:

- deepset-torch2.pt uses only operators LibTorch 1.13 has: it trains on jets at 2 ranks and
  evaluates in both lines, checked as test_torchscript.py checks its own (the reference is
  the scripted module in Python with the weights `hpcml export` wrote).
- attention-torch2.pt uses scaled_dot_product_attention (PyTorch 2.0): against LibTorch 2.x
  it trains (a regression on `datagen calo` channels) and is served with every reply
  verified against local inference; against 1.13 loading it is one line naming the file,
  the operator and the way out."""
import json
import os
import shutil
import tempfile
import unittest

import test_torchscript
from support import SOURCE_DIR, hpcml_info, run

FIXTURES = os.path.join(SOURCE_DIR, "tests", "fixtures")


class DeepSetFromPyTorch2(test_torchscript.TorchScriptTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_path = os.path.join(FIXTURES, "deepset-torch2.pt")


class AttentionFromPyTorch2(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-torchscript2-")
        rc, _, err, _ = run(["datagen", "calo", "-o", cls.tmp, "--events-per-file", "400", "--files", "1"],
                            timeout=120)
        assert rc == 0, err
        cls.version = hpcml_info()["libtorch"]
        cls.major = int(cls.version.split(".")[0])
        cls.model = os.path.join(FIXTURES, "attention-torch2.pt")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def train_args(self, run_dir):
        files = sorted(f for f in os.listdir(self.tmp) if f.startswith("calo-channels"))
        return ["train", "--set", "model.name=torchscript", "--set", f"model.torchscript={self.model}",
                "--set", "data.name=hdf5", "--set", f"data.files=[{os.path.join(self.tmp, files[0])}]",
                "--set", "data.inputs.x=inputs", "--set", "data.target=energy",
                "--set", "train.batch_size=32", "--set", "train.max_steps=6",
                # energies are O(100) GeV: plain SGD at its default rate diverges on this regression
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.001", "--set", "run.progress=lines",
                "--set", f"run.dir={run_dir}"]

    def test_trains_and_serves_with_libtorch2_or_is_one_line_with_1_13(self):
        run_dir = os.path.join(self.tmp, "run")
        rc, out, err, _ = run(self.train_args(run_dir), ranks=2, timeout=300)
        if self.major < 2:
            self.assertNotEqual(rc, 0)
            lines = [l for l in err.splitlines() if "attention-torch2.pt" in l]
            self.assertTrue(lines, err)
            self.assertIn("Unknown builtin op: aten::scaled_dot_product_attention", lines[0])
            self.assertIn(f"built against LibTorch {self.version}", lines[0])
            self.assertIn("docs/building.md", lines[0])
            self.assertNotIn("Traceback", err)
            self.assertNotIn("Here are some suggestions", err)
            return
        self.assertEqual(rc, 0, out + err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(summary["steps"], 6)
        # Served: a torchscript repository entry, every reply checked against local inference.
        repo = os.path.join(self.tmp, "repo", "attention")
        os.makedirs(repo)
        shutil.copy(self.model, os.path.join(repo, "model.pt"))
        with open(os.path.join(repo, "config.yaml"), "w") as f:
            f.write("platform: torchscript\nmax_batch_size: 256\ninputs: {x: \"float32 [15]\"}\n")
        metrics = os.path.join(self.tmp, "serve-metrics.json")
        rc, out, err, _ = run(["serve", "--set", f"serve.repository={os.path.dirname(repo)}",
                               "--set", "serve.client.model=attention",
                               "--set", f"serve.client.files=[{self.tmp}/calo-channels-*.h5]",
                               "--set", "serve.client.fields={x: inputs}", "--set", "serve.client.verify=true",
                               "--set", f"serve.client.metrics={metrics}"], ranks=2, timeout=180)
        self.assertEqual(rc, 0, out + err)
        with open(metrics) as f:
            m = json.load(f)
        clients = [r for r in m["ranks"] if r["role"] == "client"]
        self.assertTrue(clients)
        for r in clients:
            self.assertEqual(r["verify"]["mismatched"], 0, r["verify"])
            self.assertGreater(r["verify"]["checked"], 0)


if __name__ == "__main__":
    unittest.main()
