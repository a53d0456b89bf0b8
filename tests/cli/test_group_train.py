"""Training on a rank group: at 4 ranks, two groups of 2 train two different configs at once (each into
its own run directory), and each group's final parameter digest equals that config trained alone on 2
ranks by `hpcml train`. The same code runs in both (launch::train on the communicator it is given), so
the digests must match bit for bit."""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

from support import MPIEXEC, MPIEXEC_PREFLAGS, run

GROUP_TRAIN = os.environ.get("GROUP_TRAIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin",
                                                          "group_train"))

# Two different trainings: other widths, seeds, optimizers and step counts.
CONFIGS = {
    "a": {"model": {"hidden": [64, 64]}, "train": {"max_steps": 40, "batch_size": 32, "seed": 3},
          "data": {"samples": 2048, "features": 32}},
    "b": {"model": {"hidden": [32]}, "train": {"max_steps": 30, "batch_size": 16, "seed": 11},
          "optimizer": {"name": "adamw", "lr": 0.001}, "data": {"samples": 1024, "features": 16}},
}
COMMON = {"runtime": {"threads": 1, "collective_timeout_s": 120}, "checkpoint": {"every_steps": 10}}


def write_config(path, body, run_dir):
    config = json.loads(json.dumps(body))
    for key, value in COMMON.items():
        config.setdefault(key, {}).update(value)
    config["run"] = {"dir": run_dir}
    with open(path, "w") as f:
        json.dump(config, f)  # JSON is YAML


def digest(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)["parameters_sha256"]


class GroupTrainTest(unittest.TestCase):
    def test_two_groups_train_two_configs_as_each_alone(self):
        with tempfile.TemporaryDirectory() as tmp:
            alone, grouped = {}, {}
            for name, body in CONFIGS.items():
                write_config(os.path.join(tmp, f"{name}-alone.yaml"), body, os.path.join(tmp, f"{name}-alone"))
                write_config(os.path.join(tmp, f"{name}-group.yaml"), body, os.path.join(tmp, f"{name}-group"))
                rc, out, err, _ = run(["train", "-c", os.path.join(tmp, f"{name}-alone.yaml")], ranks=2, timeout=300)
                self.assertEqual(rc, 0, err)
                alone[name] = digest(os.path.join(tmp, f"{name}-alone"))
            self.assertNotEqual(alone["a"], alone["b"])
            rc, out, err, _ = run([GROUP_TRAIN, "2", os.path.join(tmp, "a-group.yaml"),
                                   os.path.join(tmp, "b-group.yaml")], ranks=4, timeout=300)
            self.assertEqual(rc, 0, err)
            self.assertIn("group_train: 2 trained, 0 failed", out)
            for name in CONFIGS:
                run_dir = os.path.join(tmp, f"{name}-group")
                grouped[name] = digest(run_dir)
                self.assertEqual(grouped[name], alone[name], f"config {name}: group of 2 vs alone on 2 ranks")
                with open(os.path.join(run_dir, "summary.json")) as f:
                    self.assertEqual(json.load(f)["ranks"], 2)
                self.assertTrue(os.listdir(os.path.join(run_dir, "checkpoints")))
            # Both groups trained at once, and their log lines name their group.
            self.assertRegex(err, r"\[rank 0/2 of world/group_train/worker0\] info: training")
            self.assertRegex(err, r"\[rank 0/2 of world/group_train/worker1\] info: training")

    def test_a_signal_stops_every_group_at_a_checkpoint_and_the_rerun_finishes_both(self):
        # Longer trainings, so the signal lands mid-run; resume: auto continues from the checkpoint.
        slow = {"model": {"hidden": [256, 256]}, "data": {"samples": 8192, "features": 128},
                "train": {"max_steps": 400, "batch_size": 64}, "checkpoint": {"every_steps": 25}}
        with tempfile.TemporaryDirectory() as tmp:
            configs = []
            for name, seed in (("a", 5), ("b", 6)):
                body = json.loads(json.dumps(slow))
                body["train"]["seed"] = seed
                path = os.path.join(tmp, f"{name}.yaml")
                write_config(path, body, os.path.join(tmp, name))
                with open(path) as f:
                    config = json.load(f)
                config["run"]["resume"] = "auto"
                with open(path, "w") as f:
                    json.dump(config, f)
                configs.append(path)
            journal = os.path.join(tmp, "farm.jsonl")
            cmd = [MPIEXEC, "-n", "4"] + MPIEXEC_PREFLAGS + [GROUP_TRAIN, "2", "--journal", journal] + configs
            job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and job.poll() is None:
                if all(os.path.exists(os.path.join(tmp, n, "checkpoints")) and
                       os.listdir(os.path.join(tmp, n, "checkpoints")) for n in "ab"):
                    break
                time.sleep(0.05)
            self.assertIsNone(job.poll(), "the trainings ended before the signal")
            job.send_signal(signal.SIGUSR1)  # mpirun forwards it to every rank
            _, err = job.communicate(timeout=120)
            self.assertEqual(job.returncode, 75, err)
            for worker in ("worker0", "worker1"):
                self.assertRegex(err, rf"\[rank 0/2 of world/group_train/{worker}\] warning: signal 10 received: "
                                      r"stopped at step \d+ after writing a checkpoint")
            with open(journal) as f:
                events = [json.loads(l) for l in f]
            self.assertEqual(sorted(e["id"] for e in events if e["event"] == "interrupted"), ["config0", "config1"])
            self.assertEqual(events[-1]["event"], "stopped")
            # The re-run continues both from their checkpoints and ends as uninterrupted runs do.
            rc, out, err, _ = run([GROUP_TRAIN, "2", "--journal", journal] + configs, ranks=4, timeout=300)
            self.assertEqual(rc, 0, err)
            self.assertEqual(err.count("resumed from"), 2, err)
            for name, path in zip("ab", configs):
                alone_dir = os.path.join(tmp, f"{name}-alone")
                rc, _, err, _ = run(["train", "-c", path, "--set", f"run.dir={alone_dir}"], ranks=2, timeout=300)
                self.assertEqual(rc, 0, err)
                self.assertEqual(digest(os.path.join(tmp, name)), digest(alone_dir), f"config {name}")


if __name__ == "__main__":
    unittest.main()
