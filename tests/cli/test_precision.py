"""`train.precision` (docs/gpu.md#mixed-precision) on the CPU, in both build lines:
- bf16: `hpcml eval` of a checkpoint gives the validation loss that PyTorch's own
  torch.autocast("cpu", torch.bfloat16) gives for the same weights and events (an independent
  forward pass, weights read from `hpcml export` with h5py), and not the fp32 one; a bf16
  training learns as the fp32 one does;
- fp16: one line naming the key under LibTorch 1.13 (no fp16 autocast on the CPU); under 2.x a
  training with the dynamic loss scale: every metrics line's scale is 2^16 / 2^skipped (no
  growth within 2,000 steps), the checkpoint holds the scaler's state, and a run resumed from
  a checkpoint ends on the same parameters and the same scale as the uninterrupted one."""
import json
import os
import shutil
import tempfile
import unittest

import h5py
import numpy as np
import torch

from support import hpcml_info, run, without_mpirun_notes


def write_config(path, tmp, **train):
    t = {"epochs": 2, "batch_size": 64, "log_every": 5, "loss": "relative_mse"}
    t.update(train)
    lines = ["model: {name: mlp, hidden: [32, 32]}",
             f"data: {{name: hdf5, files: [{tmp}/calo/calo-channels-00000.h5], "
             f"validation_files: [{tmp}/calo/calo-channels-00001.h5], input: inputs, target: energy}}",
             "optimizer: {name: adam, lr: 0.003}",
             "train: {" + ", ".join(f"{k}: {v}" for k, v in t.items()) + "}",
             "run: {progress: lines}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def reference_loss(weights_h5, events_h5, autocast):
    """The MLP's relative MSE, mean(((prediction - energy) / energy)^2), on a file's events, in
    PyTorch, fp32 or under bf16 autocast."""
    with h5py.File(weights_h5, "r") as f:
        w = {k: torch.from_numpy(f[k][()]) for k in f}
    with h5py.File(events_h5, "r") as f:
        x = torch.from_numpy(f["inputs"][()]).float()
        y = torch.from_numpy(f["energy"][()]).float().reshape(-1)
    model = torch.nn.Sequential(torch.nn.Linear(15, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 1))
    model.load_state_dict(w)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x)
    return (((out.float().reshape(-1) - y) / y) ** 2).mean().item()


class PrecisionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-precision-")
        rc, _, err, _ = run(["datagen", "calo", "-o", os.path.join(cls.tmp, "calo"), "--files", "2",
                             "--events-per-file", "4000"], timeout=120)
        assert rc == 0, err
        cls.major = int(hpcml_info()["libtorch"].split(".")[0])
        cls.fp32 = os.path.join(cls.tmp, "fp32")
        config = write_config(os.path.join(cls.tmp, "fp32.yaml"), cls.tmp)
        rc, _, err, _ = run(["train", "-c", config, "--set", f"run.dir={cls.fp32}"], timeout=300)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def eval_loss(self, precision):
        config = write_config(os.path.join(self.tmp, f"eval-{precision}.yaml"), self.tmp, precision=precision)
        rc, out, err, _ = run(["eval", "-c", config, "--set", f"run.dir={self.fp32}"], timeout=120)
        self.assertEqual(rc, 0, out + err)
        return summary(self.fp32)["eval"]["loss"]

    def test_bf16_eval_equals_pytorch_autocast(self):
        weights = os.path.join(self.tmp, "weights.h5")
        checkpoint = max((os.path.join(self.fp32, "checkpoints", f) for f in os.listdir(os.path.join(
            self.fp32, "checkpoints"))), key=os.path.getmtime)
        rc, _, err, _ = run(["export", checkpoint, "-o", weights])
        self.assertEqual(rc, 0, err)
        events = os.path.join(self.tmp, "calo", "calo-channels-00001.h5")
        ref32, ref16 = reference_loss(weights, events, False), reference_loss(weights, events, True)
        got32, got16 = self.eval_loss("fp32"), self.eval_loss("bf16")
        self.assertAlmostEqual(got32, ref32, delta=1e-5 * ref32)
        # bf16 rounds the inputs and the weights (8 significant bits): far from fp32, but the
        # same rounding in both implementations (only float32 sums differ in order).
        self.assertGreater(abs(ref16 - ref32), 3e-4 * ref32)  # 2.7e-3 when written
        self.assertAlmostEqual(got16, ref16, delta=1e-5 * ref16)  # 1e-7 when written

    def test_bf16_training_learns_as_fp32(self):
        run_dir = os.path.join(self.tmp, "bf16")
        config = write_config(os.path.join(self.tmp, "bf16.yaml"), self.tmp, precision="bf16")
        rc, out, err, _ = run(["train", "-c", config, "--set", f"run.dir={run_dir}"], timeout=300)
        self.assertEqual(rc, 0, out + err)
        val = [m["val_loss"] for m in metrics(run_dir) if "val_loss" in m]
        val32 = [m["val_loss"] for m in metrics(self.fp32) if "val_loss" in m]
        first = next(m["loss"] for m in metrics(run_dir) if "loss" in m)
        self.assertEqual(len(val), 2)
        self.assertLess(val[-1], 0.5 * first)  # it learns
        self.assertLess(abs(val[-1] - val32[-1]), 0.1 * val32[-1])
        self.assertNotEqual(summary(run_dir)["parameters_sha256"], summary(self.fp32)["parameters_sha256"])
        self.assertFalse(any("loss_scale" in m for m in metrics(run_dir)))  # bf16 needs no loss scale

    def test_fp16(self):
        config = write_config(os.path.join(self.tmp, "fp16.yaml"), self.tmp, precision="fp16", max_steps=60)
        reference = os.path.join(self.tmp, "fp16")
        extra = ["--set", "checkpoint.every_steps=20", "--set", "checkpoint.keep=5"]
        rc, out, err, _ = run(["train", "-c", config, "--set", f"run.dir={reference}"] + extra, ranks=2, timeout=300)
        if self.major < 2:
            self.assertEqual(rc, 2, out + err)
            lines = without_mpirun_notes(err)
            self.assertEqual(len(lines), 1, err)
            self.assertIn("key 'train.precision': fp16 on cpu", lines[0])
            self.assertIn("needs LibTorch 2.x", lines[0])
            return
        self.assertEqual(rc, 0, out + err)
        rows = [m for m in metrics(reference) if "loss" in m]
        self.assertEqual(len(rows), 12)
        for m in rows:  # scale = 2^16 / 2^skipped while no 2,000 clean steps have passed
            self.assertEqual(m["loss_scale"], 65536.0 / 2 ** m["skipped_steps"], m)
            self.assertLessEqual(m["skipped_steps"], m["step"])
        # This objective's first gradients overflow fp16 at 2^16 (7 halvings to 512 when written):
        # the back-off is exercised, and the steps that ran trained the model.
        self.assertGreaterEqual(rows[-1]["skipped_steps"], 1)
        self.assertLess(rows[-1]["skipped_steps"], 30)
        self.assertLess(rows[-1]["loss"], 0.2 * rows[0]["loss"])
        # The checkpoint carries the scaler (a LibTorch archive: PyTorch opens it as a module).
        ckpt = torch.jit.load(os.path.join(reference, "checkpoints", "step-40.pt"))
        at40 = next(m for m in rows if m["step"] == 40)
        self.assertEqual(ckpt.grad_scaler_scale, at40["loss_scale"])
        self.assertEqual(ckpt.grad_scaler_skipped, at40["skipped_steps"])
        # Resume from step 40: the same parameters and scale as the uninterrupted run.
        resumed = os.path.join(self.tmp, "fp16-resumed")
        shutil.copytree(reference, resumed)
        os.remove(os.path.join(resumed, "summary.json"))
        os.remove(os.path.join(resumed, "checkpoints", "step-60.pt"))
        rc, out, err, _ = run(["train", "-c", config, "--resume", "--set", f"run.dir={resumed}"] + extra, ranks=2,
                              timeout=300)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("at step 40", err)
        self.assertEqual(summary(resumed)["parameters_sha256"], summary(reference)["parameters_sha256"])
        last = [m for m in metrics(resumed) if "loss" in m][-1]
        self.assertEqual((last["loss_scale"], last["skipped_steps"]), (rows[-1]["loss_scale"], rows[-1]["skipped_steps"]))


if __name__ == "__main__":
    unittest.main()
