"""A collective that one rank never joins ends the job with the deadline line,
exit code 86, within the deadline plus a margin. Each case is its own mpiexec."""
import os
import unittest

from support import run

PROBE = os.environ.get("DEADLINE_PROBE", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin",
                                                      "deadline_probe"))
DEADLINE_S = 2.0
# mpiexec start-up (~1 s here) and teardown after MPI_Abort (~1 s), with room for a loaded machine.
MARGIN_S = 8.0


class DeadlineTest(unittest.TestCase):
    def check(self, mode, ranks, op, on="'world'"):
        rc, out, err, seconds = run([PROBE, str(DEADLINE_S), mode], ranks=ranks, timeout=60)
        self.assertEqual(rc, 86, f"exit code; stderr: {err}")
        lines = [l for l in err.splitlines() if l.startswith("hpcml: deadline exceeded")]
        self.assertGreaterEqual(len(lines), 1, err)
        self.assertRegex(lines[0], rf"on \[rank \d/{ranks}\] \(.+\): {op} on {on} still waiting after "
                                   rf"2\.\d\d s \(deadline 2\.00 s\).*exit code 86")
        self.assertNotIn("completed, which it must not", err)
        self.assertGreaterEqual(seconds, DEADLINE_S)
        self.assertLess(seconds, DEADLINE_S + MARGIN_S, f"job took {seconds:.1f} s")

    def test_blocking_allreduce_two_ranks(self):
        self.check("sync", 2, "allreduce")

    def test_async_allreduce_wait_two_ranks(self):
        self.check("async", 2, "allreduce")

    def test_barrier_three_ranks(self):
        self.check("barrier", 3, "barrier")

    def test_shared_memory_gradient_reduction_two_ranks(self):
        # The reducer's shared-memory wait (no MPI call) is bounded by the same deadline.
        self.check("reducer", 2, r"gradient reduction \(shared memory\)")

    # Point-to-point: a started MPI send or receive cannot be cancelled either; the line
    # names the operation, the peer and the tag, and the job ends the same way.
    def test_blocking_receive_three_ranks(self):
        self.check("recv", 3, "recv", on=r"'world, from rank 2, tag 9'")

    def test_async_receive_wait_two_ranks(self):
        self.check("recv-async", 2, "recv", on=r"'world, from rank 1, tag 9'")

    def test_blocking_send_two_ranks(self):
        self.check("send", 2, "send", on=r"'world, to rank 1, tag 9'")

    def test_async_send_wait_two_ranks(self):
        self.check("send-async", 2, "send", on=r"'world, to rank 1, tag 9'")


if __name__ == "__main__":
    unittest.main()
