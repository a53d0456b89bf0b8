#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install the dependencies, build,
# then run hpcml on 2 local MPI ranks.
#
# The main job: `hpcml info` (versions, ranks, binding, threads), a data-parallel
# training run of an MLP on generated data, and the allreduce benchmark (hpcml vs
# raw MPI). The model-zoo issues replace the MLP with ParticleNet-Lite.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh

mpi_flags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

echo "== hpcml info on 2 ranks"
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml info

echo
echo "== data-parallel training on 2 ranks (MLP, generated data) -> runs/quickstart"
progress=lines
[[ -t 1 ]] && progress=bar
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml train --set run.dir=runs/quickstart --set train.epochs=3 \
  --set run.progress=$progress

echo
echo "== allreduce: hpcml vs raw MPI on 2 ranks (4 KB .. 64 MB)"
mkdir -p runs
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml bench allreduce --json runs/bench-allreduce.json
echo "wrote runs/bench-allreduce.json"
