#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install the dependencies, build,
# then run hpcml on 2 local MPI ranks.
#
# Today the main job is `hpcml info` (versions, ranks, binding, threads) and the
# allreduce benchmark (hpcml vs raw MPI). The training demo replaces the
# benchmark when the Trainer and the model zoo land.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh

mpi_flags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

echo "== hpcml info on 2 ranks"
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml info

echo
echo "== allreduce: hpcml vs raw MPI on 2 ranks (4 KB .. 64 MB)"
mkdir -p runs
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml bench allreduce --json runs/bench-allreduce.json
echo "wrote runs/bench-allreduce.json"
