#!/usr/bin/env bash
# Installs hpcml into a temporary prefix, builds examples/standalone against it
# with find_package(hpcml), and runs the result: the exported package works.
#   install_test.sh <build-dir> <source-dir>
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src/examples/standalone" -B "$tmp/build" "${generator[@]}" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/configure.log" 2>&1 || { tail -30 "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/build" >"$tmp/build.log" 2>&1 || { grep -m5 -B2 -A5 -i error "$tmp/build.log"; exit 1; }
"$tmp/build/hello_ranks" --backend local
test -f "$tmp/prefix/bin/hpcml"
test -f "$tmp/prefix/include/hpcml/collectives/backend.hpp"
test -f "$tmp/prefix/include/hpcml/hpcml/build_config.hpp"
echo "install_test: find_package(hpcml) from $tmp/prefix works"
