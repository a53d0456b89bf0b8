"""`hpcml serve` end to end: MPMD role assignment, served FACILE on `hpcml datagen calo`
events verified against local inference, metrics, a bad repository as a one-line error,
and the `bench serve` JSON (tiny sweep: plumbing, not speed)."""
import json
import os
import shutil
import tempfile
import unittest

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, SOURCE_DIR, run

REPOSITORY = os.path.join(SOURCE_DIR, "configs", "serve-models")


def serve_args(tmp, *extra):
    return ["serve", "-c", os.path.join(SOURCE_DIR, "configs", "serve-facile.yaml"),
            "--set", "serve.repository=" + REPOSITORY,
            "--set", "serve.client.files=[%s/calo-channels-*.h5]" % tmp,
            "--set", "serve.client.metrics=%s/metrics.json" % tmp,
            "--set", "serve.client.cpu_work_us=10"] + list(extra)


class ServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        rc, _, err, _ = run(["datagen", "calo", "-o", cls.tmp.name, "--events-per-file", "400", "--files", "1"])
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_served_equals_local_with_metrics(self):
        rc, out, err, _ = run(serve_args(self.tmp.name), ranks=3, timeout=120)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("serve: roles (count): clients 0,1; servers 2", out)
        with open(os.path.join(self.tmp.name, "metrics.json")) as f:
            metrics = json.load(f)
        s = metrics["summary"]
        self.assertEqual(s["events"], 25)  # 400 rows / 16 per event
        for key in ("p50", "p90", "p95", "p99"):
            self.assertGreater(s["latency_us"][key], 0)
        for key in ("queue", "compute_input", "compute_infer", "compute_output"):
            self.assertIn(key, s["server_breakdown_us"])
        self.assertEqual(sum(int(k) * v for k, v in s["batch_rows_histogram"]["facile"].items()),
                         16 * (25 + 2 * 8))  # every event and each client's 8 warm-up requests
        self.assertEqual(len(s["servers"]), 1)
        self.assertIn("F_eq", s)
        clients = [r for r in metrics["ranks"] if r["role"] == "client"]
        self.assertEqual(len(clients), 2)
        for r in clients:
            self.assertEqual(r["verify"]["mismatched"], 0, r["verify"])
            self.assertGreater(r["verify"]["checked"], 0)

    def test_mpmd_line_assigns_roles_by_app_context(self):
        args = serve_args(self.tmp.name)
        cmd = [shutil.which(MPIEXEC) or MPIEXEC] + MPIEXEC_PREFLAGS + ["-n", "1", BIN] + args + [":", "-n", "2", BIN] + args
        rc, out, err, _ = run(cmd, timeout=120)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("serve: roles (mpmd): clients 0; servers 1,2", out)
        with open(os.path.join(self.tmp.name, "metrics.json")) as f:
            s = json.load(f)["summary"]
        self.assertEqual(len(s["servers"]), 2)

    def test_measured_batch_sizes_follow_the_curve(self):
        # measure_batch_sizes: yes on this CPU server (auto measures on GPU servers only): the
        # preferred sizes are those from the smallest whose throughput is within 10% of the best.
        repo = os.path.join(self.tmp.name, "measured-repository")
        shutil.copytree(os.path.join(REPOSITORY, "facile"), os.path.join(repo, "facile"))
        path = os.path.join(repo, "facile", "config.yaml")
        with open(path) as f:
            text = f.read().replace("max_queue_delay_us: 0", "max_queue_delay_us: 2000")
        with open(path, "w") as f:
            f.write(text + "measure_batch_sizes: yes\n")
        rc, out, err, _ = run(serve_args(self.tmp.name, "--set", "serve.repository=" + repo), ranks=3, timeout=120)
        self.assertEqual(rc, 0, out + err)
        with open(os.path.join(self.tmp.name, "metrics.json")) as f:
            server = json.load(f)["summary"]["servers"][0]
        measured = server["measured_batch_sizes"]["facile"]
        rows = [r for r, _ in measured["curve"]]
        self.assertEqual(rows, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])  # powers of 2, then max_batch_size
        best = max(v for _, v in measured["curve"])
        first = next(r for r, v in measured["curve"] if v >= 0.9 * best)
        self.assertEqual(measured["preferred"], [r for r in rows if r >= first])

    def test_bad_repository_is_one_line(self):
        rc, out, err, _ = run(serve_args(self.tmp.name, "--set", "serve.repository=/nonexistent"), ranks=2)
        self.assertNotEqual(rc, 0)
        lines = [l for l in err.splitlines() if l.startswith("hpcml:")]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("serve.repository", lines[0])

    def test_bench_serve_json(self):
        path = os.path.join(self.tmp.name, "bench.json")
        rc, out, err, _ = run(["bench", "serve", "--streams", "1,4", "--seconds", "0.1", "--warmup-s", "0.02",
                               "--cases", "facile", "--json", path], ranks=2, timeout=120)
        self.assertEqual(rc, 0, out + err)
        with open(path) as f:
            result = json.load(f)
        self.assertEqual(len(result["sweep"]), 4)  # 2 stream counts x (dynamic, batch1)
        self.assertEqual({p["batching"] for p in result["sweep"]}, {"dynamic", "batch1"})
        self.assertIn("4", result["gains"]["facile"])
        self.assertGreater(result["server_report"]["requests"], 0)
        self.assertEqual(result["client_ranks"], 1)

    def test_bench_serve_two_clients(self):
        # The separate case with more client ranks: both run every point; events/s is their sum.
        path = os.path.join(self.tmp.name, "bench2.json")
        rc, out, err, _ = run(["bench", "serve", "--streams", "2", "--seconds", "0.1", "--warmup-s", "0.02",
                               "--cases", "facile", "--json", path], ranks=3, timeout=120)
        self.assertEqual(rc, 0, out + err)
        with open(path) as f:
            result = json.load(f)
        self.assertEqual(result["client_ranks"], 2)
        for p in result["sweep"]:
            self.assertGreater(p["events_per_s"], p["events_per_s_rank0"])
            self.assertGreaterEqual(p["latency_us_worst_client"]["p50"], p["latency_us"]["p50"])
        # Every request of both clients reached the server.
        self.assertGreater(result["server_report"]["requests"], 0)


if __name__ == "__main__":
    unittest.main()
