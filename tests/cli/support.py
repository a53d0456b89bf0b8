"""Shared helpers for the Python-driven tests of the hpcml executable.

CTest sets HPCML_BIN, HPCML_SOURCE_DIR, MPIEXEC and MPIEXEC_PREFLAGS (see
cmake/HpcmlTesting.cmake); run by hand, they default to an in-tree build/.
"""
import os
import shlex
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
