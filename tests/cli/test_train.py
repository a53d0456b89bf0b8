"""`hpcml train` on 2 ranks: exact resume after SIGKILL and after SIGUSR1, resume
on another rank count, the optimizer step inside vs after the reduction (and with node-shared
parameters), one rank's exception ending the job, the shape-mismatch error, metrics without
duplicates, export readable by h5py, the Chrome trace, and the config file as an argument (`train CONFIG`)."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, run, sigkill_one_rank

# Slow enough (tens of ms per step) that a run can be interrupted mid-way.
SLOW = ["--set", "data.features=256", "--set", "model.hidden=[512,512]", "--set", "train.batch_size=128",
        "--set", "data.samples=4096", "--set", "train.max_steps=240", "--set", "checkpoint.every_steps=20",
        "--set", "train.log_every=5", "--set", "runtime.collective_timeout_s=60"]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def metric_steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(l)["step"] for l in f if l.strip() and "loss" in json.loads(l)]


class TrainTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.reference = os.path.join(cls.tmp.name, "reference")
        rc, out, err, _ = run(["train", "--set", f"run.dir={cls.reference}"] + SLOW, ranks=2, timeout=300)
        assert rc == 0, err
        cls.reference_digest = summary(cls.reference)["parameters_sha256"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start(self, run_dir, extra=()):
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "train", "--set", f"run.dir={run_dir}"] + SLOW + list(extra)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for_step(self, proc, run_dir, step):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), "the run ended before it could be interrupted")
            try:
                steps = metric_steps(run_dir)
            except (FileNotFoundError, json.JSONDecodeError):
                steps = []
            if steps and steps[-1] >= step:
                return steps[-1]
            time.sleep(0.05)
        self.fail("no progress")

    def resume(self, run_dir, extra=()):
        rc, out, err, _ = run(["train", "--resume", "--set", f"run.dir={run_dir}"] + SLOW + list(extra), ranks=2,
                              timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"resumed from .*step-\d+\.pt at step \d+")
        return summary(run_dir)["parameters_sha256"]

    def test_sigkill_between_checkpoints_then_resume_is_bit_identical(self):
        run_dir = os.path.join(self.tmp.name, "killed")
        proc = self.start(run_dir)
        self.wait_for_step(proc, run_dir, 65)
        # SIGKILL one rank, as a node failure would; mpirun then ends the job.
        self.assertNotEqual(sigkill_one_rank(proc), 0)
        self.assertFalse(os.path.exists(os.path.join(run_dir, "summary.json")))
        self.assertFalse([f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.endswith(".tmp")])
        self.assertEqual(self.resume(run_dir), self.reference_digest)
        steps = metric_steps(run_dir)
        self.assertEqual(steps, sorted(set(steps)), "metrics.jsonl has duplicate or unordered steps after resume")
        self.assertEqual(steps[-1], 240)

    def test_step_after_the_reduction_trains_the_reference_model(self):
        # The reference ran SGD (momentum 0.9) per bucket inside the gradient reduction (the
        # default); stepping after the reduction instead is the same arithmetic: same digest.
        run_dir = os.path.join(self.tmp.name, "step-after")
        rc, out, err, _ = run(["train", "--set", f"run.dir={run_dir}", "--set", "optimizer.step_in_reduction=false"]
                              + SLOW, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertIn("optimizer step after it", err)
        self.assertEqual(summary(run_dir)["parameters_sha256"], self.reference_digest)

    def test_sgd_without_momentum_shares_parameters_and_resumes_exactly(self):
        # SGD without momentum keeps no per-element state, so inside the reduction the two
        # ranks share one copy of the parameters and each updates half. Same model as each
        # rank stepping its own copy after the reduction, and a run killed between
        # checkpoints resumes to it bit for bit.
        plain_sgd = ["--set", "optimizer.momentum=0"]
        after_dir = os.path.join(self.tmp.name, "sgd0-after")
        rc, _, err, _ = run(["train", "--set", f"run.dir={after_dir}", "--set", "optimizer.step_in_reduction=false"]
                            + SLOW + plain_sgd, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("node-shared", err)
        expected = summary(after_dir)["parameters_sha256"]
        self.assertNotEqual(expected, self.reference_digest)  # momentum 0 is another model
        shared_dir = os.path.join(self.tmp.name, "sgd0-shared")
        rc, _, err, _ = run(["train", "--set", f"run.dir={shared_dir}"] + SLOW + plain_sgd, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertIn("optimizer step in the reduction, each rank updating 1/2 of the node-shared parameters", err)
        self.assertEqual(summary(shared_dir)["parameters_sha256"], expected)
        killed_dir = os.path.join(self.tmp.name, "sgd0-killed")
        proc = self.start(killed_dir, plain_sgd)
        self.wait_for_step(proc, killed_dir, 65)
        self.assertNotEqual(sigkill_one_rank(proc, which=0), 0)
        self.assertEqual(self.resume(killed_dir, plain_sgd), expected)

    def test_adamw_with_bf16_steps_in_the_reduction_as_after_it(self):
        # AdamW over bf16 shared memory: inside the reduction its update reads the 16-bit
        # averages where they lie; after it, from the widened float32 gradients. Same model.
        digests = []
        for inside in ("true", "false"):
            run_dir = os.path.join(self.tmp.name, f"adamw-{inside}")
            rc, out, err, _ = run(["train", "--set", f"run.dir={run_dir}", "--set", "optimizer.name=adamw",
                                   "--set", "optimizer.lr=0.001", "--set", "optimizer.weight_decay=0.01",
                                   "--set", "reducer.compression=bf16", "--set", "train.max_steps=30",
                                   "--set", f"optimizer.step_in_reduction={inside}"], ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            self.assertIn("gradients via shm", err)
            self.assertIn("optimizer step in the reduction" if inside == "true" else "optimizer step after it", err)
            digests.append(summary(run_dir)["parameters_sha256"])
        self.assertEqual(digests[0], digests[1])

    def test_resume_on_another_rank_count_warns_and_continues_from_the_checkpoint(self):
        # The reference's 2-rank checkpoint at step 200, resumed on 1 rank: allowed, with a
        # warning; the data is re-sharded and the run goes on at step 200 to max_steps.
        run_dir = os.path.join(self.tmp.name, "one-rank")
        shutil.copytree(self.reference, run_dir)
        checkpoints = os.path.join(run_dir, "checkpoints")
        for name in os.listdir(checkpoints):
            if name != "step-200.pt":
                os.remove(os.path.join(checkpoints, name))
        os.remove(os.path.join(run_dir, "summary.json"))
        rc, out, err, _ = run(["train", "--resume", "--set", f"run.dir={run_dir}"] + SLOW, ranks=1, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, r"resuming a checkpoint written by 2 rank\(s\) x \d+ thread\(s\) on 1 x \d+: the data is "
                              r"re-sharded and the result will not be bit-identical")
        self.assertRegex(err, r"resumed from .*step-200\.pt at step 200")
        steps = metric_steps(run_dir)
        self.assertEqual(steps, sorted(set(steps)), "duplicate or unordered steps")
        self.assertEqual(steps[-1], 240)
        self.assertEqual(summary(run_dir)["steps"], 240)
        with open(os.path.join(self.reference, "metrics.jsonl")) as f:
            reference = [json.loads(l) for l in f if l.strip() and "loss" in json.loads(l)]
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            resumed = [json.loads(l) for l in f if l.strip() and "loss" in json.loads(l)]
        # Rows up to the checkpoint are the 2-rank run's, kept as they were.
        self.assertEqual([r["loss"] for r in resumed if r["step"] <= 200],
                         [r["loss"] for r in reference if r["step"] <= 200])
        # It continued from the checkpoint's parameters, not from scratch: its first loss is
        # far closer to the reference's at that step than to the first steps' loss.
        first = next(r for r in resumed if r["step"] > 200)
        at_step = next(r for r in reference if r["step"] == first["step"])
        self.assertLess(abs(first["loss"] - at_step["loss"]), 0.25 * (reference[0]["loss"] - at_step["loss"]),
                        (first, at_step, reference[0]))
        self.assertNotEqual(summary(run_dir)["parameters_sha256"], self.reference_digest)

    def test_sigusr1_stops_at_one_step_checkpoints_and_exits_75(self):
        run_dir = os.path.join(self.tmp.name, "preempted")
        proc = self.start(run_dir)
        self.wait_for_step(proc, run_dir, 30)
        proc.send_signal(signal.SIGUSR1)  # mpirun forwards SIGUSR1 to every rank
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 75, err)
        stopped = re.search(r"stopped at step (\d+) after writing a checkpoint", err)
        self.assertIsNotNone(stopped, err)
        self.assertTrue(os.path.exists(os.path.join(run_dir, "checkpoints", f"step-{stopped.group(1)}.pt")))
        self.assertEqual(self.resume(run_dir), self.reference_digest)

    def test_export_is_readable_by_h5py(self):
        out = os.path.join(self.tmp.name, "params.h5")
        ckpt = os.path.join(self.reference, "checkpoints", "step-240.pt")
        rc, _, err, _ = run(["export", ckpt, "-o", out])
        self.assertEqual(rc, 0, err)
        script = ("import h5py, sys, torch\n"
                  "f = h5py.File(sys.argv[1], 'r'); m = torch.jit.load(sys.argv[2])\n"
                  "names = ['0.weight', '0.bias', '2.weight', '2.bias', '4.weight', '4.bias']\n"
                  "assert sorted(f.keys()) == sorted(names), list(f.keys())\n"
                  "for i, n in enumerate(names):\n"
                  "    assert (torch.from_numpy(f[n][()]) == getattr(m, f'param_{i}')).all(), n\n"
                  "print(f.attrs['parameters_sha256'], f.attrs['step'])\n")
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as s:
            s.write(script)
        self.addCleanup(os.unlink, s.name)
        proc = subprocess.run(["/usr/bin/python3", s.name, out, ckpt], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        digest, step = proc.stdout.split()
        self.assertEqual(step, "240")
        self.assertEqual(digest, self.reference_digest)

    def test_checkpoint_of_another_shape_is_a_clear_error(self):
        rc, _, err, _ = run(["train", "--resume", "--set", f"run.dir={self.reference}"] + SLOW +
                            ["--set", "model.hidden=[512,256]"], ranks=2, timeout=120)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"does not fit the model: parameter 2 is '2\.weight' of shape \[512, 512\] in the "
                              r"checkpoint, '2\.weight' of shape \[256, 512\] in the model")

    def test_exception_on_one_rank_ends_the_job_with_its_message(self):
        # Rank 1 alone gets a model file that does not exist (an MPMD line).
        with tempfile.TemporaryDirectory() as d:
            cmd = [MPIEXEC] + MPIEXEC_PREFLAGS + [
                "-n", "1", BIN, "train", "--set", f"run.dir={d}", ":",
                "-n", "1", BIN, "train", "--set", f"run.dir={d}", "--set", "model.name=torchscript",
                "--set", "model.torchscript=/nonexistent/model.pt"]
            start = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            self.assertEqual(proc.returncode, 1, proc.stderr)
            self.assertRegex(proc.stderr, r"hpcml: \[rank 1/2\] error: cannot load TorchScript model "
                                          r"'/nonexistent/model\.pt'")
            self.assertLess(time.monotonic() - start, 30)

    def test_trace_has_every_rank_backward_and_buckets(self):
        with tempfile.TemporaryDirectory() as d:
            rc, _, err, _ = run(["train", "--set", f"run.dir={d}", "--set", "run.trace=true",
                                 "--set", "train.max_steps=5", "--set", "reducer.overlap=always"], ranks=2)
            self.assertEqual(rc, 0, err)
            with open(os.path.join(d, "trace.json")) as f:
                events = json.load(f)
        complete = [e for e in events if e["ph"] == "X"]
        self.assertEqual({e["pid"] for e in complete}, {0, 1})
        names = {e["name"] for e in complete}
        for expected in ("forward", "backward", "optimizer", "allreduce bucket 0", "data"):
            self.assertIn(expected, names)


if __name__ == "__main__":
    unittest.main()


class ConfigArgumentTest(unittest.TestCase):
    """`hpcml train CONFIG` (DESIGN.md's form) is `hpcml train -c CONFIG`; both at once, or a missing
    file, is a one-line error naming them."""

    def test_config_as_an_argument_trains_the_same_model_as_dash_c(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "small.yaml")
            with open(config, "w") as f:
                f.write("data: {name: synthetic, samples: 512, features: 8}\nmodel: {hidden: [16]}\n"
                        "train: {max_steps: 6, batch_size: 32}\nlog: {level: warn}\n")
            digests = []
            for i, form in enumerate(([config], ["-c", config])):
                run_dir = os.path.join(tmp, f"run{i}")
                rc, _, err, _ = run(["train"] + form + ["--set", f"run.dir={run_dir}"], ranks=2)
                self.assertEqual(rc, 0, err)
                with open(os.path.join(run_dir, "config.yaml")) as f:
                    self.assertIn("samples: 512", f.read())
                digests.append(summary(run_dir)["parameters_sha256"])
            self.assertEqual(digests[0], digests[1])
            rc, _, err, _ = run(["train", config, "-c", config])
            self.assertEqual(rc, 2)
            self.assertEqual(err.strip(), f"hpcml: the config twice: -c {config} and the argument {config}; give it once"
                                          " (run with --help for usage)")
        for command in (["train"], ["eval"], ["infer"], ["serve"], ["hpo"], ["ensemble"]):
            rc, _, err, _ = run(command + ["/nonexistent/study.yaml"])
            self.assertEqual(rc, 2, command)
            self.assertEqual(err.strip(), "hpcml: config: File does not exist: /nonexistent/study.yaml"
                                          " (run with --help for usage)", command)
        rc, _, err, _ = run(["hpo", "aks", "--study", "x"])
        self.assertEqual(rc, 2)
        self.assertEqual(err.strip(), "hpcml: unknown subcommand 'aks' of 'hpcml hpo'; expected one of [ask, tell]"
                                      " or a config file; did you mean 'ask'?")
