"""The neural spline flow against its Python twin (models/twins/nsf.py): the C++ flow's
weights and buffers (tests/support/nsf_dump) loaded into the twin give the same
log_prob and the same inverse transform, in float32 and float64; and the twin's own
inverse(forward(theta)) is the identity."""
import os
import sys
import tempfile
import unittest

import h5py
import torch

from support import SOURCE_DIR, run

sys.path.insert(0, SOURCE_DIR)
from models.twins.nsf import load_nsf  # noqa: E402

NSF_DUMP = os.environ.get("NSF_DUMP", os.path.join(SOURCE_DIR, "build", "bin", "nsf_dump"))


class NsfTwinTest(unittest.TestCase):
    def dump(self, tmp, seed, dtype):
        path = os.path.join(tmp, f"nsf_{dtype}.h5")
        rc, out, err, _ = run([NSF_DUMP, str(seed), dtype, path], timeout=120)
        self.assertEqual(rc, 0, err)
        return path

    def check(self, seed, dtype, rtol, atol):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.dump(tmp, seed, dtype)
            model = load_nsf(path).eval()
            with h5py.File(path, "r") as f:
                data = {k: torch.from_numpy(f[k][()]) for k in f if k.startswith("__")}
                permutations = [f[k][()] for k in f if k.endswith("permutation")]
        self.assertEqual(len(permutations), 5)
        # The dump moved the LU layers off the identity and standardised θ.
        self.assertGreater(model.steps[0].lu.lower.abs().max().item(), 0.01)
        self.assertGreater((model.theta_std - 1).abs().max().item(), 0.01)
        with torch.no_grad():
            got = model.log_prob(data["__theta__"], data["__strain__"])
            theta_from_z, _ = model.inverse_transform(data["__z__"], model.embedding(data["__strain__"]))
        self.assertEqual(got.dtype, data["__log_prob__"].dtype)
        self.assertEqual(tuple(got.shape), (8,))
        torch.testing.assert_close(got, data["__log_prob__"], rtol=rtol, atol=atol)
        torch.testing.assert_close(theta_from_z, data["__theta_from_z__"], rtol=rtol, atol=atol)
        return model, data

    def test_float32(self):
        self.check(seed=5, dtype="float32", rtol=1e-5, atol=1e-6)

    def test_float64(self):
        model, data = self.check(seed=6, dtype="float64", rtol=1e-10, atol=1e-10)
        with torch.no_grad():
            context = model.embedding(data["__strain__"])
            z, lad = model.forward_transform(data["__theta__"], context)
            back, lad_inv = model.inverse_transform(z, context)
        torch.testing.assert_close(back, data["__theta__"], rtol=0, atol=1e-8)
        torch.testing.assert_close(lad + lad_inv, torch.zeros(8, dtype=torch.float64), rtol=0, atol=1e-8)
        samples = model.sample(data["__strain__"][:2], 3)
        self.assertEqual(tuple(samples.shape), (2, 3, 5))

    def test_rejects_mismatched_weights(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = self.dump(tmp, 3, "float32")
            with h5py.File(path, "a") as f:
                del f["steps.0.lu.bias"]
                f["steps.0.lu.bias"] = [0.0] * 4
            with self.assertRaisesRegex(ValueError, r"'steps.0.lu.bias' has shape \(4,\)"):
                load_nsf(path)
            with h5py.File(path, "a") as f:
                del f["steps.0.lu.bias"]
            with self.assertRaisesRegex(ValueError, r"missing \['steps.0.lu.bias'\]"):
                load_nsf(path)

    def test_bad_dtype(self):
        rc, _, err, _ = run([NSF_DUMP, "1", "float16", os.devnull])
        self.assertEqual(rc, 1)
        self.assertIn("nsf_dump: DTYPE: expected float32 or float64, found 'float16'", err)


if __name__ == "__main__":
    unittest.main()
