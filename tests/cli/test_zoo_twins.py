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
                inputs = {k[len("__input__."):]: torch.from_numpy(f[k][()]) for k in f if k.startswith("__input__.")}
                expected = torch.from_numpy(f["__output__"][()])
                # The dump ran training-mode batches first: the running stats are not the defaults.
                counts = [f[k][()] for k in f if k.endswith("num_batches_tracked")]
                self.assertTrue(counts and all(c == 3 for c in counts), counts)
        with torch.no_grad():
            got = model(**inputs)
        self.assertEqual(tuple(got.shape), tuple(expected.shape))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        return model, inputs, expected

    def test_facile(self):
        model, _, expected = self.check_twin("facile", seed=11)
        self.assertEqual(tuple(expected.shape), (8, 1))
        count = parameter_count(model)
        self.assertEqual(self.listed["facile"]["parameters"], count)
        self.assertTrue(1400 <= count <= 1700, count)
        self.assertEqual(self.listed["facile"]["inputs"], [{"name": "x", "field": "inputs", "shape": [15]}])

    def test_deepcalo(self):
        model, _, _ = self.check_twin("deepcalo", seed=12)
        count = parameter_count(model)
        self.assertEqual(self.listed["deepcalo"]["parameters"], count)
        self.assertLess(abs(count - PAPER_DEEPCALO_PARAMETERS) / PAPER_DEEPCALO_PARAMETERS, 0.05, count)
        self.assertEqual(self.listed["deepcalo"]["inputs"], [{"name": "x", "field": "images", "shape": [4, 56, 11]}])

    def check_particlenet(self, name, seed, parameters):
        model, inputs, expected = self.check_twin(name, seed)
        self.assertEqual(tuple(expected.shape), (8, 2))
        # The exact counts (7 features, input BN, bias-free edge convs and shortcuts).
        self.assertEqual(parameter_count(model), parameters)
        self.assertEqual(self.listed[name]["parameters"], parameters)
        self.assertEqual([(i["name"], i["field"]) for i in self.listed[name]["inputs"]],
                         [("particles", "constituents/values"), ("mask", "constituents/mask")])
        mask = inputs["mask"].bool()
        self.assertTrue(bool((~mask).any()) and bool(mask.all(1).logical_not().any()), "the dump has padding")
        # Padding is masked out: changing padded particles does not change the output.
        changed = dict(inputs)
        changed["particles"] = inputs["particles"] + (~mask).unsqueeze(-1) * 50.0
        with torch.no_grad():
            torch.testing.assert_close(model(**changed), expected, rtol=1e-5, atol=1e-6)

    def test_particlenet(self):
        self.check_particlenet("particlenet", 13, 366160)

    def test_particlenet_lite(self):
        self.check_particlenet("particlenet-lite", 14, 26416)

    def test_listing(self):
        self.assertEqual(sorted(self.listed), ["deepcalo", "facile", "nsf-gw", "particlenet", "particlenet-lite"])
        for m in self.listed.values():
            if m["name"] == "nsf-gw":  # the flow's twin test is test_nsf_twin.py
                self.assertEqual((m["target"], m["task"], m["parameters"]), ("parameters", "density", 328887))
            else:
                task = "classification" if m["name"].startswith("particlenet") else "regression"
                self.assertEqual((m["target"], m["task"]), ("label" if task == "classification" else "energy", task))
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
        self.assertIn("model.name: expected one of [deepcalo, facile, nsf-gw, particlenet, particlenet-lite], found 'nope'", err)


if __name__ == "__main__":
    unittest.main()
