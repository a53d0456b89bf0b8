#!/usr/bin/env bash
# The test command, from a fresh Debian 12 machine: install the dependencies,
# build, and run every CTest suite. Extra arguments go to ctest, e.g.
#   scripts/test.sh -L unit        # one label
#   scripts/test.sh -R collectives # by name
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh

# Serially: the machines have 2 cores and the MPI tests already use 2-3 ranks.
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --no-tests=error --timeout 900 "$@"
