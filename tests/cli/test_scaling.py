"""`hpcml bench scaling` (docs/scaling.md), checked from the outside: a weak sweep at 1, 2 and 4 ranks
(4 oversubscribed) and a strong one at 1 and 2 write points, scaling.json and PNG plots; each point's
throughput is the median of its timed intervals recomputed from the run's metrics.jsonl, its
breakdown their mean; efficiency is recomputed from the points; the 1-rank profile's parameter bytes
are the MLP's shapes and its compute per sample the breakdown's; strong scaling splits the global
batch; --target finds the first validation reaching it; `bench allreduce --reducer` rows; bad options
are one line."""
import json
import os
import shutil
import tempfile
import unittest

from support import run

MLP = ["--set", "runtime.threads=1", "--set", "model.name=mlp", "--set", "model.hidden=[32]",
       "--set", "data.features=16", "--set", "data.classes=3", "--set", "data.samples=4096",
       "--set", "data.validation_samples=256", "--set", "train.batch_size=32", "--set", "optimizer.lr=0.05"]


def one_line_error(test, rc, out, err, *needles):
    test.assertNotEqual(rc, 0)
    lines = [line for line in err.splitlines() if line.strip()]
    test.assertEqual(len(lines), 1, err)
    test.assertTrue(lines[0].startswith("hpcml: "), err)
    test.assertNotIn("terminate", err)
    test.assertNotIn("Traceback", err)
    for needle in needles:
        test.assertIn(needle, err)


class ScalingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-scaling-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def sweep(self, name, mode, ranks, extra=()):
        out = os.path.join(self.tmp, name)
        for n in ranks:
            rc, stdout, err, _ = run(["bench", "scaling", "--mode", mode, "--out", out, "--steps", "20",
                                      "--interval", "10"] + MLP + list(extra), ranks=n, timeout=300)
            self.assertEqual(rc, 0, err)
            self.assertIn(f"bench scaling ({mode})", stdout)
        with open(os.path.join(out, "scaling.json")) as f:
            return out, json.load(f)["modes"][mode]

    def test_weak_sweep_at_1_2_4_ranks_writes_points_json_and_plots(self):
        out, rows = self.sweep("weak", "weak", (1, 2, 4))
        self.assertEqual([r["ranks"] for r in rows], [1, 2, 4])
        for png in ("throughput.png", "efficiency.png", "breakdown.png"):
            with open(os.path.join(out, png), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", png)
        for r in rows:
            self.assertEqual(r["batch_per_rank"], 32)
            self.assertEqual(r["global_batch"], 32 * r["ranks"])
            # The point from the run's own metrics: the timed steps (after the first 10) in intervals of 10
            # (one rank logs every step; more ranks every 10), the interval of median throughput.
            with open(os.path.join(r["run_dir"], "metrics.jsonl")) as f:
                lines = [json.loads(line) for line in f if "time_ms" in line]
            self.assertEqual(len(lines), 30 if r["ranks"] == 1 else 3)
            intervals, last = [], 0
            for m in lines:
                steps, last = m["step"] - last, m["step"]
                if m["step"] <= 10:
                    continue
                if not intervals or intervals[-1]["steps"] >= 10:
                    intervals.append({"steps": 0, "seconds": 0.0, "ms": {}})
                cur = intervals[-1]
                cur["steps"] += steps
                cur["seconds"] += steps * 32 * r["ranks"] / m["samples_per_s"]
                for k, v in m["time_ms"].items():
                    cur["ms"][k] = cur["ms"].get(k, 0.0) + v * steps
            self.assertEqual([i["steps"] for i in intervals], [10, 10])
            rate = lambda i: i["steps"] * 32 * r["ranks"] / i["seconds"]  # noqa: E731
            mid = sorted(intervals, key=rate)[1]
            self.assertAlmostEqual(r["samples_per_s"], rate(mid), delta=1e-9 * rate(mid))
            self.assertEqual(len(r["samples_per_s_intervals"]), 2)
            t = {k: v / 10 for k, v in mid["ms"].items()}
            b = r["breakdown_ms"]
            self.assertAlmostEqual(b["compute"], t["forward"] + t["backward"], places=6)
            self.assertAlmostEqual(b["exposed_comm"], t["comm_wait"], places=6)
            self.assertAlmostEqual(b["data_wait"], t["data"], places=6)
            self.assertAlmostEqual(b["optimizer"], t["optimizer"], places=6)
            self.assertAlmostEqual(r["step_ms"], 1000 * 32 * r["ranks"] / r["samples_per_s"], places=6)
            self.assertLessEqual(b["compute"] + b["exposed_comm"] + b["data_wait"] + b["optimizer"],
                                 r["step_ms"] * 1.000001)
            self.assertAlmostEqual(r["efficiency"], r["samples_per_s"] / rows[0]["samples_per_s"] / r["ranks"],
                                   places=9)
        self.assertEqual(rows[0]["breakdown_ms"]["exposed_comm"], 0)  # one rank reduces nothing
        self.assertEqual(rows[1]["transport"], "shm")  # both ranks on this node: shared memory (auto)

        with open(os.path.join(out, "profile-weak.json")) as f:
            profile = json.load(f)
        # MLP 16 -> 32 -> 3: weights and biases in registration order, float32.
        self.assertEqual(profile["parameter_bytes"], [4 * 32 * 16, 4 * 32, 4 * 3 * 32, 4 * 3])
        self.assertEqual(sum(profile["buckets_bytes"]), sum(profile["parameter_bytes"]))
        self.assertAlmostEqual(profile["compute_per_sample_s"], rows[0]["breakdown_ms"]["compute"] / 1000 / 32,
                               places=12)
        self.assertEqual(profile["batch_per_rank"], 32)
        # Every timed step's forward + backward, from the 1-rank run's per-step lines.
        with open(os.path.join(rows[0]["run_dir"], "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f if "time_ms" in line]
        self.assertEqual(profile["step_compute_s"],
                         [(m["time_ms"]["forward"] + m["time_ms"]["backward"]) / 1000 for m in steps if m["step"] > 10])
        self.assertAlmostEqual(profile["backward_fraction"],
                               rows[0]["breakdown_ms"]["backward"] / rows[0]["breakdown_ms"]["compute"], places=12)

        # A second repetition of the 2-rank point: the row is the median over both.
        rc, _, err, _ = run(["bench", "scaling", "--out", out, "--steps", "20", "--interval", "10", "--no-plots"]
                            + MLP, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "scaling.json")) as f:
            two = [r for r in json.load(f)["modes"]["weak"] if r["ranks"] == 2][0]
        self.assertEqual(two["repetitions"], 2)
        self.assertEqual(len(os.listdir(os.path.join(out, "points"))), 4)
        self.assertIn(two["samples_per_s"], two["samples_per_s_reps"])
        self.assertEqual(two["samples_per_s"], max(two["samples_per_s_reps"]))  # the upper middle of two

    def test_independent_ranks_train_alone_on_a_loaded_node(self):
        out = os.path.join(self.tmp, "independent")
        rc, stdout, err, _ = run(["bench", "scaling", "--independent", "--out", out, "--steps", "20", "--interval",
                                  "10", "--no-plots"] + MLP, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "points", "weak-independent-n2-r0.json")) as f:
            point = json.load(f)
        self.assertEqual(point["transport"], "none")
        self.assertEqual(point["breakdown_ms"]["exposed_comm"], 0)
        # Each rank its own run, trained alone: same data and seed, so the same parameters.
        digests = []
        for rank in (0, 1):
            run_dir = os.path.join(out, "runs", f"weak-independent-n2-r0-rank{rank}")
            with open(os.path.join(run_dir, "summary.json")) as f:
                digests.append(json.load(f)["parameters_sha256"])
        self.assertEqual(digests[0], digests[1])
        with open(os.path.join(out, "profile-weak-independent-n2.json")) as f:
            self.assertEqual(len(json.load(f)["step_compute_s"]), 20)

    def test_strong_scaling_splits_the_global_batch(self):
        _, rows = self.sweep("strong", "strong", (1, 2), ["--global-batch", "64"])
        self.assertEqual([(r["ranks"], r["batch_per_rank"], r["global_batch"]) for r in rows], [(1, 64, 64),
                                                                                               (2, 32, 64)])
        rc, out, err, _ = run(["bench", "scaling", "--mode", "strong", "--global-batch", "63", "--out",
                               os.path.join(self.tmp, "odd")] + MLP, ranks=2, timeout=120)
        self.assertNotEqual(rc, 0)
        self.assertEqual(err.count("global batch (63"), 1, err)  # one line, from rank 0
        self.assertIn("multiple of 2 ranks", err)
        self.assertNotIn("terminate called", err)

    def test_time_to_target_is_the_first_validation_reaching_it(self):
        out = os.path.join(self.tmp, "target")
        rc, stdout, err, _ = run(["bench", "scaling", "--out", out, "--target", "val_accuracy>=0.0", "--no-plots",
                                  "--set", "train.epochs=2"] + MLP, ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "points", "weak-n1-r0.json")) as f:
            point = json.load(f)
        with open(os.path.join(point["run_dir"], "metrics.jsonl")) as f:
            validations = [json.loads(line) for line in f if "val_accuracy" in line]
        self.assertEqual(len(validations), 2)  # one per epoch
        self.assertEqual(point["time_to_target_s"], validations[0]["time_s"])
        self.assertLess(validations[0]["time_s"], validations[1]["time_s"])
        self.assertIn("val_accuracy>=0.0 at 1 rank(s):", stdout)
        rc, _, err, _ = run(["bench", "scaling", "--out", os.path.join(self.tmp, "never"), "--no-plots",
                             "--target", "val_loss<=-1", "--set", "train.epochs=1"] + MLP, ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(self.tmp, "never", "points", "weak-n1-r0.json")) as f:
            self.assertIsNone(json.load(f)["time_to_target_s"])

    def test_bad_options_are_one_line(self):
        out = os.path.join(self.tmp, "bad")
        cases = [(["--mode", "diagonal"], ["--mode: expected weak or strong, found 'diagonal'"]),
                 (["--steps", "15"], ["--steps (15) must be a positive multiple of --interval (10)"]),
                 (["--global-batch", "64"], ["--global-batch: expected a positive number of samples with --mode "
                                             "strong, found 64 with --mode weak"]),
                 (["--mode", "strong", "--global-batch", "-1"], ["--global-batch", "found -1"]),
                 (["--target", "accuracy>0.5"], ["--target: expected METRIC>=VALUE", "'accuracy>0.5'"]),
                 (["--target", "accuracy>=0.5"], ["expected a validation metric", "'accuracy'"])]
        for args, needles in cases:
            with self.subTest(args=args):
                rc, stdout, err, _ = run(["bench", "scaling", "--out", out] + args + MLP, timeout=120)
                one_line_error(self, rc, stdout, err, *needles)

    def test_bench_allreduce_reducer_rows(self):
        path = os.path.join(self.tmp, "allreduce.json")
        rc, _, err, _ = run(["bench", "allreduce", "--reducer", "--min-bytes", "4K", "--max-bytes", "64K",
                             "--reps", "1", "--target-ms", "5", "--json", path], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(path) as f:
            rows = json.load(f)
        for impl in ("mpi", "hpcml", "reducer-mpi", "reducer-shm"):
            sizes = sorted(r["bytes"] for r in rows if r["impl"] == impl and r["path"] != "nonblocking")
            self.assertEqual(sizes, [4096, 16384, 65536], impl)
        for r in rows:
            self.assertEqual(r["ranks"], 2)
            self.assertGreater(r["latency_us"], 0, r)


if __name__ == "__main__":
    unittest.main()
