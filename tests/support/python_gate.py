"""Runs one Python unittest file of the hpcml tests once the modules they need import.

    python3 tests/support/python_gate.py TEST_FILE.py

The Python-driven tests compare hpcml with independent references read through
h5py, NumPy and PyTorch. When one of those modules is missing, the test skips with
one line naming it (exit 77, which CTest counts as skipped), or, when CI=true,
fails with that line: CI never passes with the Python tier gone.
"""
import importlib
import os
import sys

# module -> the Debian package that provides it (scripts/install-deps.sh)
REQUIRED = {"h5py": "python3-h5py", "numpy": "python3-numpy", "torch": "python3-torch",
            "yaml": "python3-yaml", "matplotlib": "python3-matplotlib"}


def ci_enforced():
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def main():
    if len(sys.argv) != 2:
        print("usage: python_gate.py TEST_FILE.py", file=sys.stderr)
        return 2
    test = sys.argv[1]
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError as e:
            reason = f"Python module '{module}' cannot be imported by {sys.executable} ({e}); install {package}"
            if ci_enforced():
                print(f"FAIL: {test} cannot run and CI=true forbids skipping it: {reason}")
                return 1
            print(f"SKIP: {test}: {reason}")
            return 77
    os.execv(sys.executable, [sys.executable, "-m", "unittest", "-v", test])


if __name__ == "__main__":
    sys.exit(main())
