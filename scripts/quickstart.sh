#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install the dependencies, build,
# then run hpcml on 2 local MPI ranks.
#
# The main job: `hpcml info` (versions, ranks, binding, threads), a generated jets
# dataset (top vs QCD, 70k jets), ParticleNet-Lite trained data-parallel on 2 ranks
# for a few minutes (configs/particlenet-lite.yaml), then evaluated: accuracy, ROC
# AUC and background rejection 1/eps_B at 30% signal efficiency.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh

mpi_flags=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

echo "== hpcml info on 2 ranks"
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml info

echo
echo "== generate jets (top vs QCD) on 2 ranks -> data/jets"
if [[ ! -f data/jets/jets-00006.h5 ]]; then
  mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml datagen jets -o data/jets --files 7 --events-per-file 10000
else
  echo "data/jets exists; keeping it"
fi

echo
echo "== train ParticleNet-Lite data-parallel on 2 ranks -> runs/particlenet-lite"
progress=lines
[[ -t 1 ]] && progress=bar
# --overwrite: a rerun moves the previous run aside (runs/particlenet-lite.replaced-<UTC time>)
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml train -c configs/particlenet-lite.yaml --set run.progress=$progress --overwrite

echo
echo "== evaluate on the held-out file"
mpirun -n 2 "${mpi_flags[@]}" build/bin/hpcml eval -c configs/particlenet-lite.yaml
echo "run directory: runs/particlenet-lite (config.yaml, metrics.jsonl, summary.json, checkpoints/)"
