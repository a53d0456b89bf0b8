#!/usr/bin/env bash
# The test command, from a fresh Debian 12 machine: install the dependencies,
# build, and run every CTest suite. Extra arguments go to ctest, e.g.
#   scripts/test.sh -L unit        # one label
#   scripts/test.sh -R collectives # by name
# HPCML_LIBTORCH=upstream tests the build against PyPI's LibTorch 2.11 in
# build-upstream/ (scripts/build.sh says which LibTorch lines there are).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh

case "${HPCML_LIBTORCH:-debian}" in
  debian) build_dir=${BUILD_DIR:-build} ;;
  upstream) build_dir=${BUILD_DIR:-build-upstream} ;;
  *) build_dir=${BUILD_DIR:-build-torch} ;;
esac
# Serially: the machines have 2 cores and the MPI tests already use 2-3 ranks.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error --timeout 900 "$@"
