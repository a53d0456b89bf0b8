"""Shared helpers for the Python-driven tests of the hpcml executable.

CTest sets HPCML_BIN, HPCML_SOURCE_DIR, MPIEXEC and MPIEXEC_PREFLAGS (see
cmake/HpcmlTesting.cmake); run by hand, they default to an in-tree build/.
"""
import os
import shlex
import signal
import subprocess
import time

SOURCE_DIR = os.environ.get("HPCML_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("HPCML_BIN", os.path.join(SOURCE_DIR, "build", "bin", "hpcml"))
MPIEXEC = os.environ.get("MPIEXEC", "mpiexec")
MPIEXEC_PREFLAGS = shlex.split(os.environ.get("MPIEXEC_PREFLAGS", "--oversubscribe --allow-run-as-root"))


def run(args, ranks=None, timeout=120, env=None, extra_mpi=()):
    """Runs hpcml (or another program, if args[0] is a path) and returns
    (returncode, stdout, stderr, seconds)."""
    cmd = list(args) if os.path.sep in args[0] else [BIN] + list(args)
    if ranks is not None:
        cmd = [MPIEXEC, "-n", str(ranks)] + MPIEXEC_PREFLAGS + list(extra_mpi) + cmd
    full_env = dict(os.environ)
    full_env.update(env or {})
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def session_pids(sid):
    """The processes of session `sid`: mpiexec and every rank. Open MPI gives the ranks process groups
    of their own, so mpiexec's group would miss them; they all keep mpiexec's session."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:  # gone meanwhile
                pass
    return pids


def kill_session(sid, sig=signal.SIGKILL):
    """`sig` (SIGKILL) to mpiexec and every rank (session_pids: a killpg would leave the ranks)."""
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def sigkill_one_rank(proc, which=-1):
    """SIGKILLs rank process `which` (in pgrep's order) of the `mpiexec` running as `proc`, as a
    node failure would, waits for the launcher to end the job and returns its exit code."""
    import signal
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert ranks, "no rank processes found"
    os.kill(int(ranks[which]), signal.SIGKILL)
    proc.communicate(timeout=60)
    return proc.returncode


def hpcml_info(ranks=None, *args):
    """`hpcml info --json` as a dict (rank 0's file), with extra arguments."""
    import json
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "info.json")
        rc, out, err, _ = run(["info", *args, "--json", path], ranks=ranks, timeout=60)
        assert rc == 0, err
        with open(path) as f:
            return json.load(f)


def without_mpirun_notes(text):
    """The non-empty lines of `text` outside the notes mpirun adds between dashed rules when
    a rank exits non-zero (MPI_ABORT, "Primary job terminated ..."), and without Open MPI's
    own process-tagged log lines ("[host:pid] [[job,0],0] ORTE_ERROR_LOG: ...", seen once when
    two ranks aborted together)."""
    import re
    kept, inside = [], False
    for line in text.splitlines():
        if re.fullmatch(r"-{20,}", line.strip()):
            inside = not inside
        elif not inside and line.strip() and not re.match(r"\[[^\]\s]+:\d+\] ", line):
            kept.append(line)
    return kept


def padded_jets(path):
    """A `hpcml datagen jets` file as the jet taggers see it, read with h5py only:
    particles (N, P, 4) float32 zero-padded to the longest jet, mask (N, P) bool,
    jet (N, 4) float32 jet-level four-momenta, and label (N,)."""
    import h5py
    import numpy as np
    with h5py.File(path) as f:
        offsets, values = f["constituents/offsets"][()], f["constituents/values"][()]
        jet, label = f["jet"][()].astype(np.float32), f["label"][()]
    n = len(label)
    width = int(np.diff(offsets).max())
    particles = np.zeros((n, width, 4), np.float32)
    mask = np.zeros((n, width), bool)
    for i in range(n):
        k = offsets[i + 1] - offsets[i]
        particles[i, :k] = values[offsets[i]:offsets[i + 1]]
        mask[i, :k] = True
    return particles, mask, jet, label
