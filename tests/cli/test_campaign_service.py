"""`hpcml infer -c` campaigns through the in-job inference service (`infer.via: service`,
docs/campaigns.md): the last ranks serve the model, the others are the campaign's workers. Checked
from the outside with h5py: outputs equal the local path's (FACILE: equal bytes, its rows are
independent; ParticleNet-Lite: within 1e-5, batches are padded differently); a job killed after a
commit and two jobs on one campaign behave as in local mode; a server stopped with SIGSTOP has its
requests re-sent to the other server with nothing lost or duplicated; with no live server the
workers fall back to their own model, or the units fail with one line naming the server rank."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, SOURCE_DIR, run
from test_campaign import computed_done, read_journals, rechunk_fields

FILES = 3
ROWS = 2000
CHUNK = 250


def datasets(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f if isinstance(f[name], h5py.Dataset)}


def rank_pids(root_pid, rank):
    """The pids below `root_pid` whose environment says Open MPI world rank `rank`."""
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            children = []
        todo += children
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env and b"hpcml" in command:
            found.append(pid)
    return found


def wait_for_a_commit(out, timeout=120):
    """Waits until some job journals a unit done in campaign directory `out`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name in glob.glob(os.path.join(out, "journal.*.jsonl")):
            with open(name) as f:
                if '"event":"done"' in f.read().replace(" ", ""):
                    return
        time.sleep(0.05)
    raise AssertionError(f"no unit committed in {out} within {timeout} s")


class CampaignServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-campaign-service-")
        cls.calo = os.path.join(cls.tmp, "calo")
        rc, _, err, _ = run(["datagen", "calo", "-o", cls.calo, "--files", str(FILES), "--events-per-file",
                             str(ROWS)], ranks=2, timeout=300)
        assert rc == 0, err
        cls.inputs = sorted(glob.glob(os.path.join(cls.calo, "calo-channels-*.h5")))
        for path in cls.inputs:
            rechunk_fields(path, CHUNK, ("inputs", "energy"))
        cls.run_dir = os.path.join(cls.tmp, "run")
        rc, _, err, _ = run(["train", "-c", os.path.join(SOURCE_DIR, "configs", "facile.yaml"), "--set", f"data.files=[{cls.inputs[0]}]",
                             "--set", "data.validation_files=[]", "--set", "train.max_steps=20",
                             "--set", f"run.dir={cls.run_dir}"], timeout=300)
        assert rc == 0, err
        cls.local = os.path.join(cls.tmp, "local")
        rc, _, err, _ = run(["infer"] + cls.args(cls.local, via="local"), ranks=2, timeout=300)
        assert rc == 0, err
        cls.reference = os.path.join(cls.tmp, "service")
        rc, _, err, _ = run(["infer"] + cls.args(cls.reference), ranks=3, timeout=300)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def args(cls, out, via="service", extra=()):
        return ["-c", os.path.join(cls.run_dir, "config.yaml"), "--set", f"infer.inputs=[{', '.join(cls.inputs)}]",
                "--set", f"infer.output_dir={out}", "--set", "infer.unit_rows=250", "--set", f"infer.via={via}",
                *extra]

    def outputs_equal(self, a, b):
        for path in self.inputs:
            name = os.path.basename(path).replace(".h5", ".predictions.h5")
            x, y = datasets(os.path.join(a, name)), datasets(os.path.join(b, name))
            self.assertEqual(sorted(x), sorted(y))
            for k in x:
                self.assertEqual(x[k].tobytes(), y[k].tobytes(), f"{name}: {k}")

    def summary(self, out):
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)

    def test_facile_through_the_service_equals_local_and_reports_the_sizing(self):
        self.outputs_equal(self.local, self.reference)
        s = self.summary(self.reference)
        self.assertEqual((s["via"], s["rows"], s["failures"]), ("service", FILES * ROWS, []))
        service = s["service"]
        self.assertEqual(service["rows"], FILES * ROWS)
        self.assertEqual(len(service["servers"]), 1)
        server = service["servers"][0]
        self.assertEqual(server["rank"], 2)
        self.assertGreater(server["utilisation"], 0)
        self.assertLessEqual(server["utilisation"], 1)
        histogram = server["batch_rows_histogram"]["facile"]
        self.assertEqual(sum(int(rows) * n for rows, n in histogram.items()), FILES * ROWS)
        self.assertEqual(server["requests"], service["requests"])
        for key in ("X_local_forward", "S_pack", "Y_server_forward", "L_transfer_and_wait"):
            self.assertGreaterEqual(service["per_row_us"][key], 0, key)
        self.assertIn("F_eq", service)
        # Only the workers computed units: ranks 0 and 1 of the workers' group.
        self.assertEqual(sorted(s["rows_this_run"]), ["0", "1"])

    def test_particlenet_lite_through_the_service_equals_local(self):
        # Ragged jets: workers send each batch's constituents unpadded; the server pads
        # them to its own batch's longest jet, so equality is to float32 rounding.
        jets = os.path.join(self.tmp, "jets")
        rc, _, err, _ = run(["datagen", "jets", "-o", jets, "--files", "2", "--events-per-file", "300"], ranks=2,
                            timeout=300)
        self.assertEqual(rc, 0, err)
        files = sorted(glob.glob(os.path.join(jets, "*.h5")))
        run_dir = os.path.join(self.tmp, "run-pnl")
        common = ["-c", os.path.join(SOURCE_DIR, "configs", "particlenet-lite.yaml"), "--set", f"data.files=[{files[0]}]",
                  "--set", "data.validation_files=[]", "--set", f"run.dir={run_dir}"]
        rc, _, err, _ = run(["train"] + common + ["--set", "train.max_steps=3"], timeout=300)
        self.assertEqual(rc, 0, err)
        outs = {}
        for via, ranks in (("local", 2), ("service", 3)):
            outs[via] = os.path.join(self.tmp, f"pnl-{via}")
            rc, _, err, _ = run(["infer"] + common + ["--set", f"infer.inputs=[{', '.join(files)}]",
                                                     "--set", f"infer.output_dir={outs[via]}", "--set", "infer.batch_size=64",
                                                     "--set", f"infer.via={via}"], ranks=ranks, timeout=300)
            self.assertEqual(rc, 0, err)
        for path in files:
            name = os.path.basename(path).replace(".h5", ".predictions.h5")
            a, b = datasets(os.path.join(outs["local"], name)), datasets(os.path.join(outs["service"], name))
            self.assertEqual(a["scores"].shape, (300, 2))
            np.testing.assert_array_equal(a["row"], b["row"])
            np.testing.assert_array_equal(a["label"], b["label"])
            np.testing.assert_allclose(b["scores"], a["scores"], rtol=1e-5, atol=1e-6)

    def test_killed_after_a_commit_resumes_to_the_same_bytes(self):
        out = os.path.join(self.tmp, "killed")
        job = subprocess.run([MPIEXEC, "-n", "3"] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.args(out),
                             capture_output=True, timeout=300, env=dict(os.environ, HPCML_TEST_CAMPAIGN_KILL_AFTER="3"))
        self.assertNotEqual(job.returncode, 0, "the campaign was not interrupted")
        rc, _, err, _ = run(["infer"] + self.args(out), ranks=3, timeout=300)
        self.assertEqual(rc, 0, err)
        self.outputs_equal(self.reference, out)
        computed = computed_done(read_journals(out))
        self.assertEqual(len(computed), len(set(computed)))

    def test_two_jobs_share_one_campaign(self):
        out = os.path.join(self.tmp, "two-jobs")
        env = dict(os.environ, HPCML_TEST_CAMPAIGN_SLOW="*:100")
        cmd = [MPIEXEC, "-n", "3"] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.args(out)
        jobs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)]
        for job in jobs:
            _, err = job.communicate(timeout=300)
            self.assertEqual(job.returncode, 0, err.decode())
        self.outputs_equal(self.reference, out)
        journals = read_journals(out)
        self.assertEqual(len(journals), 2)
        computed = computed_done(journals)
        self.assertEqual(len(computed), len(set(computed)), "a unit computed by both jobs")
        self.assertTrue(all(computed_done([j]) for j in journals), "one job computed nothing")

    def stop_a_server_for_a_while(self, out, ranks, server, extra, seconds=4.0):
        """Runs the campaign, SIGSTOPs world rank `server` once a unit is committed, resumes it
        `seconds` later; returns (exit code, stderr, summary)."""
        cmd = [MPIEXEC, "-n", str(ranks)] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.args(out, extra=extra)
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, HPCML_TEST_CAMPAIGN_SLOW="*:250"))
        try:
            wait_for_a_commit(out)
            pids = rank_pids(job.pid, server)
            self.assertEqual(len(pids), 1, f"world rank {server} of the job not found")
            os.kill(pids[0], signal.SIGSTOP)
            time.sleep(seconds)
            os.kill(pids[0], signal.SIGCONT)
            _, err = job.communicate(timeout=300)
        finally:
            if job.poll() is None:
                job.kill()
        return job.returncode, err.decode(), self.summary(out)

    def test_a_stalled_servers_requests_go_to_the_other_server(self):
        out = os.path.join(self.tmp, "stalled")
        rc, err, s = self.stop_a_server_for_a_while(
            out, 4, 3, ["--set", "infer.service.servers=2", "--set", "infer.service.server_timeout_s=1",
                        "--set", "infer.service.retry_s=60", "--set", "log.all_ranks=true"])
        self.assertEqual(rc, 0, err)
        self.assertIn("server rank 3 sent nothing for", err)
        self.assertIn("re-sending its", err)
        self.assertGreaterEqual(s["service"]["rerouted"], 1)
        self.assertEqual(s["service"]["fallbacks"], 0)
        self.assertEqual(s["service"]["rows"], FILES * ROWS)
        self.outputs_equal(self.reference, out)
        computed = computed_done(read_journals(out))
        self.assertEqual(len(computed), len(set(computed)))

    def test_no_live_server_falls_back_or_fails_with_one_line(self):
        out = os.path.join(self.tmp, "fallback")
        rc, err, s = self.stop_a_server_for_a_while(
            out, 3, 2, ["--set", "infer.service.server_timeout_s=1", "--set", "infer.service.retry_s=60",
                        "--set", "infer.service.fallback=true"])
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(s["service"]["fallbacks"], 1)
        self.outputs_equal(self.reference, out)

        out = os.path.join(self.tmp, "no-server")
        rc, err, s = self.stop_a_server_for_a_while(
            out, 3, 2, ["--set", "infer.service.server_timeout_s=1", "--set", "infer.service.retry_s=60"])
        self.assertEqual(rc, 1, err)
        self.assertGreaterEqual(len(s["failures"]), 1)
        for failure in s["failures"]:
            self.assertIn("server rank", failure["error"])
            self.assertIn("2", failure["error"])
            self.assertEqual(len(failure["error"].splitlines()), 1)

    def refused_at_3_ranks(self, name, extra, key, needle):
        """`infer` at 3 ranks with `extra` exits 2 with one line naming `key` that holds `needle`."""
        rc, _, err, _ = run(["infer"] + self.args(os.path.join(self.tmp, name), extra=extra), ranks=3, timeout=120)
        self.assertEqual(rc, 2, err)
        lines = [line for line in err.splitlines() if key in line]
        self.assertEqual(len(lines), 1, err)
        self.assertIn(needle, lines[0])

    def test_a_model_the_service_cannot_run_is_a_config_error(self):
        self.refused_at_3_ranks("bad", ["--set", "model.name=mlp"], "infer.via", "model 'mlp' runs with via: local")
        # One rank cannot be both a worker and a server.
        rc, _, err, _ = run(["infer"] + self.args(os.path.join(self.tmp, "one-rank")), timeout=120)
        self.assertEqual(rc, 2, err)
        self.assertEqual(err.strip().splitlines(), ["hpcml: config error: key 'infer.via': service needs at least 2 "
                                                    "ranks (a worker and a server), found 1"])
        # The service's servers run float32: bf16 is refused rather than silently ignored.
        self.refused_at_3_ranks("bf16", ["--set", "train.precision=bf16"], "train.precision",
                                "infer.via: service runs float32, found bf16")

if __name__ == "__main__":
    unittest.main()
