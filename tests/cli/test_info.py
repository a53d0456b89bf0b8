"""`hpcml info` under mpirun: ranks, local ranks, binding, thread budget, versions."""
import json
import os
import tempfile
import unittest

from support import run


class InfoTest(unittest.TestCase):
    def info(self, ranks, extra_mpi=()):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "info.json")
            rc, out, err, _ = run(["info", "--json", path], ranks=ranks, extra_mpi=extra_mpi)
            self.assertEqual(rc, 0, err)
            with open(path) as f:
                return json.load(f), out

    def test_two_ranks_under_mpirun(self):
        # Two ranks on two cores: mpirun's default binds each rank to one core.
        info, out = self.info(2, extra_mpi=["--bind-to", "core"])
        self.assertEqual(info["launcher"], "mpirun")
        self.assertEqual(info["size"], 2)
        ranks = info["ranks"]
        self.assertEqual([r["rank"] for r in ranks], [0, 1])
        self.assertEqual(sorted(r["local_rank"] for r in ranks), [0, 1])
        self.assertTrue(all(r["local_size"] == 2 for r in ranks))
        self.assertEqual(len({r["node"] for r in ranks}), 1)
        self.assertTrue(all(r["num_cpus"] == 1 for r in ranks), ranks)
        self.assertNotEqual(ranks[0]["cpus"], ranks[1]["cpus"])
        # The thread budget follows the binding: one core, one thread, for LibTorch and OpenBLAS.
        # PyPI's LibTorch 2.x carries its BLAS (MKL) inside libtorch_cpu, whose threads are
        # LibTorch's: no OpenBLAS in the process (-1).
        blas = 1 if info["libtorch"].startswith("1.") else -1
        self.assertTrue(all(r["threads"] == 1 and r["blas_threads"] == blas for r in ranks), ranks)
        self.assertIn("rank  local", out)

    def test_versions_and_features(self):
        info, out = self.info(None)
        self.assertEqual(info["launcher"], "none")
        self.assertRegex(info["libtorch"], r"^\d+\.\d+\.\d+$")
        self.assertIn("Open MPI", info["mpi"])
        self.assertTrue(info["mpi_thread_multiple"])
        self.assertRegex(info["hdf5"], r"^1\.\d+\.\d+")
        # The NCCL backend is built exactly in the CUDA (upstream) line.
        self.assertEqual(info["backends"], (["nccl"] if info["cuda_built"] else []) + ["mpi", "local"])
        self.assertTrue(info["hdf5_parallel"])
        self.assertFalse(info["cuda"])
        self.assertEqual(info["nccl"], info["cuda_built"])
        self.assertTrue(out.startswith("hpcml "), out)

    def test_explicit_thread_budget(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "info.json")
            rc, _, err, _ = run(["info", "--set", "runtime.threads=2", "--json", path])
            self.assertEqual(rc, 0, err)
            with open(path) as f:
                self.assertEqual(json.load(f)["ranks"][0]["threads"], 2)

    def test_three_ranks_oversubscribed(self):
        info, _ = self.info(3)
        self.assertEqual([r["rank"] for r in info["ranks"]], [0, 1, 2])
        self.assertEqual(sorted(r["local_rank"] for r in info["ranks"]), [0, 1, 2])


if __name__ == "__main__":
    unittest.main()
