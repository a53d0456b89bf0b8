"""Bring your own model: a TorchScript module scripted here in Python, with three named
inputs mapped from HDF5 fields by data.inputs (a padded ragged collection, its mask
and a fixed field), trained by `hpcml train` on `hpcml datagen jets` files at 2 ranks
and evaluated by `hpcml eval`. The reference is the same scripted module in Python
with the weights `hpcml export` wrote, over every validation jet."""
import json
import os
import shutil
import sys
import tempfile
import unittest

import h5py
import torch

from deepset import DeepSet
from support import SOURCE_DIR, padded_jets, run

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
from jets_baseline import auc as exact_auc  # noqa: E402  (Mann-Whitney, ties by average rank)


class TorchScriptTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-torchscript-")
        cls.data = os.path.join(cls.tmp, "jets")
        rc, _, err, _ = run(["datagen", "jets", "-o", cls.data, "--files", "3", "--events-per-file", "1500"],
                            ranks=2, timeout=300)
        assert rc == 0, err
        cls.validation = f"{cls.data}/jets-00002.h5"
        torch.manual_seed(0)
        cls.model_path = os.path.join(cls.tmp, "deepset.pt")
        torch.jit.script(DeepSet()).save(cls.model_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def common(self, run_dir, extra=()):
        return ["train", "--set", "model.name=torchscript", "--set", f"model.torchscript={self.model_path}",
                "--set", "data.name=hdf5",
                "--set", f"data.files=[{self.data}/jets-00000.h5, {self.data}/jets-00001.h5]",
                "--set", f"data.validation_files=[{self.validation}]",
                "--set", "data.inputs.particles=constituents/values", "--set", "data.inputs.mask=constituents/mask",
                "--set", "data.inputs.jet=jet", "--set", "data.target=label", "--set", "data.classes=2",
                "--set", "data.chunk_rows=100", "--set", "data.window=600",
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.003", "--set", "train.batch_size=32",
                "--set", "train.epochs=2", "--set", "run.progress=lines", "--set", f"run.dir={run_dir}", *extra]

    def test_named_inputs_train_and_eval_matches_the_module_in_python(self):
        run_dir = os.path.join(self.tmp, "run")
        rc, out, err, _ = run(self.common(run_dir), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        rc, out, err, _ = run(["eval", "-c", os.path.join(run_dir, "config.yaml")], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            result = json.load(f)["eval"]
        params = os.path.join(self.tmp, "deepset.h5")
        rc, _, err, _ = run(["export", result["checkpoint"], "-o", params])
        self.assertEqual(rc, 0, err)
        # The scripted module, loaded in Python, with the trained weights by name.
        model = torch.jit.load(self.model_path).eval()
        with h5py.File(params) as f:  # one dataset per state_dict name; "__" names are metadata
            state = {k: torch.from_numpy(f[k][()]) for k in f.keys() if not k.startswith("__")}
        self.assertEqual(set(state), set(model.state_dict()))
        model.load_state_dict(state, strict=True)
        particles, mask, jet, labels = padded_jets(self.validation)
        n = len(labels)
        with torch.no_grad():
            logits = model(torch.from_numpy(particles), torch.from_numpy(mask),
                           torch.from_numpy(jet)).double().numpy()
        score = logits[:, 1] - logits[:, 0]
        self.assertEqual(result["samples"], n)
        auc = exact_auc(score, labels)
        self.assertGreater(auc, 0.7)  # it learned from the mapped inputs
        self.assertAlmostEqual(result["auc"], auc, delta=2e-3)
        self.assertAlmostEqual(result["accuracy"], float(((score > 0) == (labels == 1)).mean()), delta=2 / n)

    def test_an_unmapped_input_names_the_key(self):
        run_dir = os.path.join(self.tmp, "unmapped")
        args = self.common(run_dir, ["--set", "train.max_steps=1"])
        i = args.index("data.inputs.jet=jet")
        del args[i - 1:i + 1]  # the "--set data.inputs.jet=jet" pair
        rc, _, err, _ = run(args, timeout=120)
        self.assertEqual(rc, 2, err)
        self.assertIn("key 'data.inputs.jet': expected the dataset field of input 'jet' of model torchscript, "
                      "found none", err)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
