#!/usr/bin/env bash
# Installs the Debian dependencies (idempotent), configures and builds hpcml.
#
#   scripts/build.sh [extra cmake args...]
#
# BUILD_DIR (default: build) and BUILD_TYPE (default: Release) may be set in the
# environment. Builds with 2 jobs by default (JOBS=N to change): each LibTorch
# translation unit needs about 1 GiB of memory and 10-20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

build_dir=${BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@"
elif (($# > 0)); then
  cmake -S . -B "$build_dir" "$@"
fi
cmake --build "$build_dir" -j "${JOBS:-2}"
