"""Training on a rank group: at 4 ranks, two groups of 2 train two different configs at once (each into
its own run directory), and each group's final parameter digest equals that config trained alone on 2
ranks by `hpcml train`. The same code runs in both (launch::train on the communicator it is given), so
the digests must match bit for bit."""
import json
import os
import tempfile
import unittest

from support import run

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


if __name__ == "__main__":
    unittest.main()
