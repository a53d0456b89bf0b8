"""The work farm (launch/farm/farm.hpp) on its toy workload (examples/farm_toy): uneven tasks are
balanced, tasks added on the fly run, a failing task is journaled with its reason while the others
finish, and a job killed mid-farm and re-run does every task exactly once. At 2, 3 and 4 ranks, with
workers as single ranks and as groups of 2. Expectations come from the journal and the result files
read here with Python's json, not from the program's own summary."""
import json
import os
import subprocess
import tempfile
import time
import unittest

from support import MPIEXEC, MPIEXEC_PREFLAGS, kill_session, run

TOY = os.environ.get("FARM_TOY", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin", "farm_toy"))
# Hand-out latency allowed between a worker's tasks: a few ms here; generous for a loaded 2-core machine
# running up to 4 oversubscribed ranks.
LATENCY_S = 0.35

# (ranks, ranks per worker, coordinator works): single ranks at 2, 3, 4; groups of 2 at 2, 3, 4.
LAYOUTS = [(2, 1, True), (3, 1, True), (4, 1, True), (2, 2, True), (3, 2, False), (4, 2, True)]


def workers_of(ranks, k, coordinator_works):
    first = 0 if coordinator_works else 1
    return [list(range(first + w * k, first + (w + 1) * k)) for w in range((ranks - first) // k)]


def read_journal(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def toy_args(out, layout, ms, extra=()):
    ranks, k, works = layout
    args = [TOY, "--ms", ",".join(str(m) for m in ms), "--out", out, "--journal", os.path.join(out, "farm.jsonl"),
            "--ranks-per-worker", str(k)] + list(extra)
    if not works:
        args.append("--dedicated-coordinator")
    return args


class FarmTest(unittest.TestCase):
    def run_toy(self, out, layout, ms, extra=(), expect_rc=0):
        rc, stdout, stderr, _ = run(toy_args(out, layout, ms, extra), ranks=layout[0], timeout=120)
        self.assertEqual(rc, expect_rc, f"farm_toy {layout}: stdout {stdout}\nstderr {stderr}")
        return stdout, stderr

    def test_uneven_tasks_are_balanced_and_tasks_added_on_the_fly_run(self):
        # One long task and many short ones; task t1 adds 3 tasks of 50 ms when it finishes.
        ms = [700] + [120] * 10
        for layout in LAYOUTS:
            with self.subTest(layout=layout), tempfile.TemporaryDirectory() as out:
                self.run_toy(out, layout, ms, ["--spawn", "1:3"])
                ids = [f"t{i}" for i in range(len(ms))] + [f"t1.c{j}" for j in range(3)]
                results = {}
                for i in ids:
                    with open(os.path.join(out, f"{i}.json")) as f:
                        results[i] = json.load(f)
                journal = read_journal(os.path.join(out, "farm.jsonl"))
                done = [r["id"] for r in journal if r["event"] == "done"]
                self.assertEqual(sorted(done), sorted(ids), "every task, the added ones too, done exactly once")
                groups = workers_of(*layout)
                by_leader = {g[0]: g for g in groups}
                for r in results.values():
                    # The group's allreduce saw exactly this worker's ranks.
                    self.assertIn(r["leader"], by_leader)
                    self.assertEqual(r["world_ranks_sum"], sum(by_leader[r["leader"]]), r)
                    self.assertEqual(r["group_size"], layout[1])
                # Balance: no worker idle while tasks remained queued, beyond the hand-out latency.
                last_start = max(r["start"] for r in results.values())
                for leader in by_leader:
                    mine = sorted((r for r in results.values() if r["leader"] == leader), key=lambda r: r["start"])
                    self.assertTrue(mine, f"worker at rank {leader} got no task")
                    for a, b in zip(mine, mine[1:]):
                        self.assertLess(b["start"] - a["end"], LATENCY_S, f"worker {leader} idle between {a['id']} "
                                        f"and {b['id']}")
                    self.assertGreater(mine[-1]["end"], last_start - LATENCY_S,
                                       f"worker {leader} stopped at {mine[-1]['end']:.3f} while a task started at "
                                       f"{last_start:.3f}")
                # And the makespan is close to the best possible on this many workers.
                work = sum(ms) + 3 * 50
                span = max(r["end"] for r in results.values()) - min(r["start"] for r in results.values())
                ideal = max(700, work / len(groups)) / 1000
                self.assertLess(span, ideal + 0.6, f"makespan {span:.2f} s against ideal {ideal:.2f} s")

    def test_a_failing_task_is_journaled_and_the_others_finish(self):
        for layout in [(3, 1, True), (4, 2, True)]:
            with self.subTest(layout=layout), tempfile.TemporaryDirectory() as out:
                _, stderr = self.run_toy(out, layout, [60] * 6, ["--fail", "2"])
                journal = read_journal(os.path.join(out, "farm.jsonl"))
                failed = [r for r in journal if r["event"] == "failed"]
                self.assertEqual([r["id"] for r in failed], ["t2"])
                self.assertEqual(failed[0]["error"], "task t2: told to fail (a bad input file)")
                self.assertEqual(sorted(r["id"] for r in journal if r["event"] == "done"),
                                 [f"t{i}" for i in (0, 1, 3, 4, 5)])
                self.assertFalse(os.path.exists(os.path.join(out, "t2.json")))
                self.assertIn("task 't2' failed on worker", stderr)
                self.assertEqual(journal[-1]["event"], "end")
                self.assertEqual((journal[-1]["done"], journal[-1]["failed"]), (5, 1))
                # A re-run does not run a failed task again (the journal says why it failed).
                self.run_toy(out, layout, [60] * 6, ["--fail", "2"])
                again = read_journal(os.path.join(out, "farm.jsonl"))[len(journal):]
                self.assertEqual([r for r in again if r["event"] in ("start", "done", "failed")], [])

    def test_killed_and_rerun_does_every_task_exactly_once(self):
        ms = [250] * 12
        for layout in [(2, 1, True), (4, 2, True), (3, 1, False)]:
            with self.subTest(layout=layout), tempfile.TemporaryDirectory() as out:
                journal_path = os.path.join(out, "farm.jsonl")
                cmd = [MPIEXEC, "-n", str(layout[0])] + MPIEXEC_PREFLAGS + toy_args(out, layout, ms)
                job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
                deadline = time.time() + 60
                while time.time() < deadline:
                    if os.path.exists(journal_path):
                        with open(journal_path) as f:
                            if sum('"event":"done"' in line for line in f) >= 3:
                                break
                    time.sleep(0.02)
                kill_session(job.pid)
                job.communicate(timeout=30)
                first = read_journal(journal_path)
                done_first = {r["id"] for r in first if r["event"] == "done"}
                self.assertGreaterEqual(len(done_first), 3)
                self.assertLess(len(done_first), 12, "the kill came too late to test a resume")
                # A kill during a write leaves a torn last line: the re-run skips it.
                with open(journal_path, "a") as f:
                    f.write('{"event":"done","id":"t11","wor')
                _, stderr = self.run_toy(out, layout, ms)
                self.assertIn("last line was torn", stderr)
                journal = read_journal(journal_path)
                done = [r["id"] for r in journal if r["event"] == "done"]
                self.assertEqual(sorted(done), sorted(f"t{i}" for i in range(12)), "each task done exactly once")
                second_run = journal[len(first):]
                self.assertTrue(second_run[0]["resumed"])
                restarted = {r["id"] for r in second_run if r["event"] == "start"}
                self.assertEqual(restarted & done_first, set(), "a task done before the kill ran again")
                for i in range(12):
                    self.assertTrue(os.path.exists(os.path.join(out, f"t{i}.json")))

    def test_a_journal_of_other_tasks_is_refused(self):
        with tempfile.TemporaryDirectory() as out:
            self.run_toy(out, (2, 1, True), [20, 20])
            _, stderr = self.run_toy(out, (2, 1, True), [20, 30], expect_rc=1)
            lines = [l for l in stderr.splitlines() if "has spec" in l]
            self.assertEqual(len(lines), 1, stderr)
            self.assertIn("task 't1' has spec {\"ms\":30} but the journal", lines[0])

    def test_layout_errors_are_one_line(self):
        with tempfile.TemporaryDirectory() as out:
            _, stderr = self.run_toy(out, (2, 2, False), [20], expect_rc=1)
            self.assertIn("2 rank(s) cannot form one worker of 2 rank(s) besides the coordinator", stderr)

    def test_local_backend_runs_tasks_in_one_process(self):
        with tempfile.TemporaryDirectory() as out:
            rc, stdout, stderr, _ = run([TOY, "--backend", "local", "--ms", "10,10,10", "--out", out, "--journal",
                                         os.path.join(out, "j.jsonl")], timeout=60)
            self.assertEqual(rc, 0, stderr)
            self.assertEqual(sorted(r["id"] for r in read_journal(os.path.join(out, "j.jsonl"))
                                    if r["event"] == "done"), ["t0", "t1", "t2"])


if __name__ == "__main__":
    unittest.main()
