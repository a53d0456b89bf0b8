"""`hpcml train` on HDF5 files written by `hpcml datagen`: regression on calorimeter
channel rows at 1 and 2 ranks, the metrics it records, and the errors for a bad
data section. The references are computed here with numpy from the same files."""
import json
import os
import shutil
import tempfile
import unittest

import h5py
import numpy as np

from support import run


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class TrainHdf5Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-train-h5-")
        cls.data = os.path.join(cls.tmp, "calo")
        rc, out, err, _ = run(["datagen", "calo", "-o", cls.data, "--files", "3", "--events-per-file", "3000"],
                              ranks=2, timeout=300)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def common(self, run_dir, extra=()):
        return ["train", "--set", "data.name=hdf5",
                "--set", f"data.files=[{self.data}/calo-channels-00000.h5, {self.data}/calo-channels-00001.h5]",
                "--set", f"data.validation_files=[{self.data}/calo-channels-00002.h5]",
                "--set", "data.input=inputs", "--set", "data.target=energy",
                "--set", "data.chunk_rows=256", "--set", "data.window=1024",
                "--set", "model.hidden=[32, 16]", "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.003",
                "--set", "train.loss=relative_mse", "--set", "train.epochs=3", "--set", "train.batch_size=100",
                "--set", "run.progress=lines", "--set", f"run.dir={run_dir}", *extra]

    def test_regression_trains_and_validates_on_every_validation_row(self):
        for ranks in (1, 2):
            with self.subTest(ranks=ranks):
                run_dir = os.path.join(self.tmp, f"run-{ranks}")
                batch = 200 // ranks  # same global batch
                rc, out, err, _ = run(self.common(run_dir, ["--set", f"train.batch_size={batch}"]), ranks=ranks,
                                      timeout=300)
                self.assertEqual(rc, 0, err)
                rows = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
                train_rows = [r for r in rows if "loss" in r]
                val_rows = [r for r in rows if "val_loss" in r]
                self.assertTrue(all("resolution" in r and "accuracy" not in r for r in train_rows), train_rows)
                self.assertEqual(len(val_rows), 3)
                # Validation covers the whole validation file once, split over the ranks.
                with h5py.File(f"{self.data}/calo-channels-00002.h5") as f:
                    n_val = f.attrs["rows"]
                    energy = f["energy"][:]
                self.assertTrue(all(r["val_samples"] == n_val for r in val_rows))
                # The network learns: better than predicting the mean energy for every channel
                # (a reference computed here from the file).
                constant = np.sqrt(np.mean(((energy.mean() - energy) / energy) ** 2))
                self.assertLess(val_rows[-1]["val_resolution"], 0.8 * constant, (val_rows, constant))
                # One epoch is floor(6000 / 200) steps at every rank count.
                self.assertEqual(train_rows[-1]["step"], 3 * (6000 // 200))
                with open(os.path.join(run_dir, "summary.json")) as f:
                    summary = json.load(f)
                self.assertEqual(summary["validation"]["val_resolution"], val_rows[-1]["val_resolution"])
                # `hpcml eval` on the final checkpoint, at the other rank count, gives the last
                # validation's metric and adds it to summary.json.
                rc, out, err, _ = run(["eval"] + self.common(run_dir)[1:], ranks=3 - ranks, timeout=300)
                self.assertEqual(rc, 0, err)
                with open(os.path.join(run_dir, "summary.json")) as f:
                    summary = json.load(f)
                self.assertEqual(summary["eval"]["samples"], n_val)
                self.assertAlmostEqual(summary["eval"]["resolution"], val_rows[-1]["val_resolution"], places=5)
                self.assertEqual(summary["steps"], 3 * (6000 // 200))
                self.assertIn("resolution", out)

    def test_facile_two_ranks_reach_the_one_rank_metric(self):
        # Smoke test of the zoo model and the 1-vs-2-rank check: the same global batch
        # (1 x 200 and 2 x 100), the same epochs. The runs differ in data order (shards
        # depend on the rank count) and in batch-norm batches (per rank), so the metric
        # agrees only statistically: stated tolerance 15% of the 1-rank resolution, about
        # 3x the epoch-to-epoch spread seen in these runs.
        got = {}
        for ranks in (1, 2):
            run_dir = os.path.join(self.tmp, f"facile-{ranks}")
            args = self.common(run_dir, ["--set", "model.name=facile", "--set", f"train.batch_size={200 // ranks}",
                                         "--set", "train.epochs=40", "--set", "optimizer.lr=0.01",
                                         "--set", "schedule.name=cosine"])
            rc, out, err, _ = run(args, ranks=ranks, timeout=300)
            self.assertEqual(rc, 0, err)
            with open(os.path.join(run_dir, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual(summary["model"], "facile")
            got[ranks] = summary["validation"]["val_resolution"]
        with h5py.File(f"{self.data}/calo-channels-00002.h5") as f:
            energy = f["energy"][:]
        # The best constant prediction for this metric: c = mean(1/E) / mean(1/E^2).
        best = np.mean(1 / energy) / np.mean(1 / energy ** 2)
        constant = np.sqrt(np.mean(((best - energy) / energy) ** 2))
        print("facile resolution 1 vs 2 ranks:", got, "best constant", constant)
        self.assertLess(got[1], 0.95 * constant, got)
        self.assertLess(abs(got[2] - got[1]), 0.15 * got[1], got)

    def test_sync_batch_norm_trains_facile_on_two_ranks(self):
        # SyncBatchNorm's exactness is tested in sync_batch_norm_mpi_test; here the config key
        # wires it into a 2-rank run (uneven last batches are dropped by the sampler), which
        # learns, and a model without hpcml batch norms is a config error naming the key.
        run_dir = os.path.join(self.tmp, "facile-sync-bn")
        args = self.common(run_dir, ["--set", "model.name=facile", "--set", "model.sync_batch_norm=true",
                                     "--set", "reducer.buffers=per_rank", "--set", "train.epochs=8",
                                     "--set", "optimizer.lr=0.01"])
        rc, out, err, _ = run(args, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertIn("SyncBatchNorm: 1 batch-norm layer(s) use the global batch's statistics", err)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        with h5py.File(f"{self.data}/calo-channels-00002.h5") as f:
            energy = f["energy"][:]
        best = np.mean(1 / energy) / np.mean(1 / energy ** 2)
        constant = np.sqrt(np.mean(((best - energy) / energy) ** 2))
        self.assertLess(summary["validation"]["val_resolution"], constant, summary["validation"])
        rc, out, err, _ = run(self.common(os.path.join(self.tmp, "mlp-sync-bn"),
                                          ["--set", "model.sync_batch_norm=true"]), ranks=2, timeout=120)
        self.assertEqual(rc, 2, err)
        self.assertIn("key 'model.sync_batch_norm': expected a model with hpcml batch-norm layers", err)

    def test_deepcalo_two_ranks_reach_the_one_rank_metric(self):
        # Smoke test of DeepCalo on shower images and the 1-vs-2-rank check: the same
        # global batch (1 x 32 and 2 x 16) and steps (two epochs of 3000 showers). As for
        # FACILE the runs differ in data order and batch-norm batches; stated tolerance
        # 25% of the 1-rank resolution (after 186 steps the curve is still steep, so it is
        # wider than FACILE's).
        got = {}
        for ranks in (1, 2):
            run_dir = os.path.join(self.tmp, f"deepcalo-{ranks}")
            args = self.common(run_dir, ["--set", "model.name=deepcalo", "--set", f"train.batch_size={32 // ranks}",
                                         "--set", "train.epochs=2", "--set", "optimizer.lr=0.003",
                                         "--set", "schedule.name=cosine", "--set", "schedule.warmup_steps=20",
                                         "--set", f"data.files=[{self.data}/calo-showers-00000.h5]",
                                         "--set", f"data.validation_files=[{self.data}/calo-showers-00002.h5]",
                                         "--set", "data.input=images"])
            rc, out, err, _ = run(args, ranks=ranks, timeout=300)
            self.assertEqual(rc, 0, err)
            with open(os.path.join(run_dir, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual((summary["model"], summary["steps"], summary["parameters"]), ("deepcalo", 2 * (3000 // 32), 1813633))
            got[ranks] = summary["validation"]["val_resolution"]
        with h5py.File(f"{self.data}/calo-showers-00002.h5") as f:
            energy = f["energy"][:]
        best = np.mean(1 / energy) / np.mean(1 / energy ** 2)
        constant = np.sqrt(np.mean(((best - energy) / energy) ** 2))
        print("deepcalo resolution 1 vs 2 ranks:", got, "best constant", constant)
        self.assertLess(got[1], 0.8 * constant, got)
        self.assertLess(abs(got[2] - got[1]), 0.25 * got[1], got)

    def test_bad_data_sections_name_the_key_or_the_dataset(self):
        run_dir = os.path.join(self.tmp, "bad")
        rc, _, err, _ = run(self.common(run_dir, ["--set", "data.input=charges"]), ranks=2)
        self.assertNotEqual(rc, 0)
        self.assertIn("calo-channels-00000.h5': dataset 'charges' not found", err)
        rc, _, err, _ = run(["train", "--set", "data.name=hdf5", "--set", f"run.dir={run_dir}"])
        self.assertNotEqual(rc, 0)
        self.assertIn("data.files", err)
        rc, _, err, _ = run(self.common(run_dir, ["--set", "train.loss=cross_entropy"]))
        self.assertNotEqual(rc, 0)
        self.assertIn("train.loss': cross_entropy needs an integer", err)
        for e in (err,):
            self.assertNotIn("Traceback", e)
            self.assertNotIn("terminate called", e)


if __name__ == "__main__":
    unittest.main()
