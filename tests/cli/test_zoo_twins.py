"""The zoo models against their Python twins (models/twins/): the C++ model's
weights, batch-norm statistics and output (tests/support/zoo_dump) loaded into the
twin give the same output; `hpcml models --json` reports the twin's parameter count."""
import json
import os
import sys
import tempfile
import unittest

import h5py
import torch

from support import SOURCE_DIR, run

sys.path.insert(0, SOURCE_DIR)
from models.twins.load import load_twin, make_twin, parameter_count  # noqa: E402

ZOO_DUMP = os.environ.get("ZOO_DUMP", os.path.join(SOURCE_DIR, "build", "bin", "zoo_dump"))
PAPER_DEEPCALO_PARAMETERS = 1.8e6


class ZooTwinsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "models.json")
            rc, out, err, _ = run(["models", "--json", path])
            assert rc == 0, err
            with open(path) as f:
                cls.listed = {m["name"]: m for m in json.load(f)["models"]}
            cls.text = out

    def check_twin(self, name, seed):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.h5")
            rc, out, err, _ = run([ZOO_DUMP, name, str(seed), path], timeout=120)
            self.assertEqual(rc, 0, err)
            model = load_twin(name, path).eval()
            with h5py.File(path, "r") as f:
                x = torch.from_numpy(f["__input__"][()])
                expected = torch.from_numpy(f["__output__"][()])
                # The dump ran training-mode batches first: the running stats are not the defaults.
                counts = [f[k][()] for k in f if k.endswith("num_batches_tracked")]
                self.assertTrue(counts and all(c == 3 for c in counts), counts)
        with torch.no_grad():
            got = model(x)
        self.assertEqual(tuple(got.shape), (x.shape[0], 1))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        return model

    def test_facile(self):
        model = self.check_twin("facile", seed=11)
        count = parameter_count(model)
        self.assertEqual(self.listed["facile"]["parameters"], count)
        self.assertTrue(1400 <= count <= 1700, count)
        self.assertEqual(self.listed["facile"]["input"]["field"], "inputs")
        self.assertEqual(self.listed["facile"]["input"]["shape"], [15])

    def test_deepcalo(self):
        model = self.check_twin("deepcalo", seed=12)
        count = parameter_count(model)
        self.assertEqual(self.listed["deepcalo"]["parameters"], count)
        self.assertLess(abs(count - PAPER_DEEPCALO_PARAMETERS) / PAPER_DEEPCALO_PARAMETERS, 0.05, count)
        self.assertEqual(self.listed["deepcalo"]["input"]["field"], "images")
        self.assertEqual(self.listed["deepcalo"]["input"]["shape"], [4, 56, 11])

    def test_listing(self):
        self.assertEqual(sorted(self.listed), ["deepcalo", "facile"])
        for m in self.listed.values():
            self.assertEqual((m["target"], m["task"]), ("energy", "regression"))
            self.assertTrue(os.path.exists(os.path.join(SOURCE_DIR, m["default_config"])), m["default_config"])
            self.assertIn(m["name"], self.text)

    def test_twin_rejects_mismatched_weights(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "facile.h5")
            rc, _, err, _ = run([ZOO_DUMP, "facile", "3", path], timeout=120)
            self.assertEqual(rc, 0, err)
            with self.assertRaisesRegex(ValueError, "missing .*unexpected"):
                load_twin("deepcalo", path)
            with h5py.File(path, "a") as f:
                del f["net.1.bias"]
                f["net.1.bias"] = [0.0] * 7
            with self.assertRaisesRegex(ValueError, r"'net.1.bias' has shape \(7,\)"):
                load_twin("facile", path)
        with self.assertRaisesRegex(ValueError, "expected one of"):
            make_twin("nope")

    def test_unknown_name(self):
        rc, _, err, _ = run([ZOO_DUMP, "nope", "1", os.devnull])
        self.assertEqual(rc, 1)
        self.assertIn("model.name: expected one of [deepcalo, facile], found 'nope'", err)


if __name__ == "__main__":
    unittest.main()
