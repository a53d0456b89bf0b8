"""Devices and precision without a GPU, in both build lines: `runtime.device` (info, train,
eval) and `runtime.backend: nccl` refused in one line where there is no device or no CUDA build (at 2
ranks, so no rank waits for ever), `info` reporting each rank's device, and `bench ddp
--precision` (bf16 autocast on the CPU against the fp32 run; fp16 on the CPU allowed by
LibTorch 2.x only)."""
import json
import os
import tempfile
import unittest

from support import hpcml_info, run, without_mpirun_notes


def one_error_line(test, rc, err, *needles):
    """Exit 2 and one line on stderr (Open MPI's MPI_ABORT note, between dashed lines, aside)."""
    test.assertEqual(rc, 2, err)
    lines = without_mpirun_notes(err)
    test.assertEqual(len(lines), 1, err)
    for n in needles:
        test.assertIn(n, lines[0])
    test.assertNotIn("Traceback", err)
    test.assertNotIn("terminate called", err)


class DeviceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.info = hpcml_info()
        cls.cuda_built = cls.info["cuda_built"]
        cls.major = int(cls.info["libtorch"].split(".")[0])
        assert not cls.info["cuda"], "these tests are for machines without a GPU; the gpu tier covers the rest"

    def test_info_reports_each_ranks_device(self):
        got = hpcml_info(2, "--set", "runtime.device=auto")
        self.assertEqual(len(got["ranks"]), 2)
        for r in got["ranks"]:
            self.assertEqual(r["device"], "cpu")
            self.assertEqual(r["cuda_devices_visible"], 0)
            self.assertIn("no CUDA device visible", r["device_why"])
        self.assertEqual("nccl" in got["backends"], self.cuda_built)

    def test_cuda_device_without_one_is_one_line(self):
        rc, _, err, _ = run(["info", "--set", "runtime.device=cuda"], ranks=2, timeout=60)
        if self.cuda_built:
            one_error_line(self, rc, err, "runtime.device", "expected a CUDA device, found none visible")
        else:
            one_error_line(self, rc, err, "runtime.device", "built without CUDA")

    def test_train_and_eval_on_cuda_without_one_are_one_line(self):
        # train and eval take runtime.device (docs/gpu.md); infer still refuses a GPU.
        for command in (["train"], ["eval"]):
            rc, _, err, _ = run(command + ["--set", "runtime.device=cuda"], ranks=2, timeout=60)
            one_error_line(self, rc, err, "runtime.device",
                           "expected a CUDA device, found none visible" if self.cuda_built else "built without CUDA")

    def test_nccl_backend_without_a_device_is_one_line_on_every_rank(self):
        rc, _, err, secs = run(["info", "--set", "runtime.backend=nccl"], ranks=2, timeout=60)
        if self.cuda_built:
            one_error_line(self, rc, err, "runtime.backend", "expected a CUDA device on every rank for backend nccl")
        else:
            one_error_line(self, rc, err, "runtime.backend", "built without CUDA")
        self.assertLess(secs, 30)

    def test_bench_ddp_device_cuda_without_one_is_one_line(self):
        rc, _, err, _ = run(["bench", "ddp", "--device", "cuda", "--steps", "1"], timeout=60)
        one_error_line(self, rc, err, "runtime.device")

    def test_bf16_autocast_on_the_cpu_against_fp32(self):
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for prec in ("fp32", "bf16"):
                path = os.path.join(tmp, prec + ".json")
                rc, out, err, _ = run(["bench", "ddp", "--precision", prec, "--steps", "4", "--warmup", "1",
                                       "--json", path], timeout=120)
                self.assertEqual(rc, 0, out + err)
                with open(path) as f:
                    results[prec] = json.load(f)
            self.assertEqual(results["bf16"]["precision"], "bf16")
            self.assertEqual(results["bf16"]["device"], "cpu")
            # The first loss is one forward of the same weights on the same batch: bf16
            # matmuls (8-bit mantissa, unit roundoff 2^-8) move it by well under 2%.
            a, b = results["fp32"]["first_loss"], results["bf16"]["first_loss"]
            self.assertNotEqual(a, b)  # autocast really changed the arithmetic
            self.assertLess(abs(a - b), 0.02 * a)

    def test_fp16_on_the_cpu_needs_libtorch_2(self):
        rc, out, err, _ = run(["bench", "ddp", "--precision", "fp16", "--steps", "2", "--warmup", "0"], timeout=120)
        if self.major >= 2:
            self.assertEqual(rc, 0, out + err)
            self.assertIn("(fp16)", out)
        else:
            one_error_line(self, rc, err, "--precision fp16", "needs LibTorch 2.x")


if __name__ == "__main__":
    unittest.main()
