#!/usr/bin/env bash
# Regenerates docs/config-reference.md from `hpcml config --reference` (a test
# fails when the two drift). Usage: scripts/gen-config-reference.sh [path/to/hpcml]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bin/hpcml}
{
  sed -n '1,/^The tables below/p' docs/config-reference.md
  echo
  "$bin" config --reference
} > docs/config-reference.md.tmp
mv docs/config-reference.md.tmp docs/config-reference.md
