#!/usr/bin/env bash
# A scaling sweep on this machine: for each repetition and each rank count, one
# `mpirun -n N hpcml bench scaling ARGS...` (rank counts alternate, so a slow
# spell does not land on one point). jobs/scaling.sbatch is the same under Slurm.
#
#   RANKS="1 2 4" REPS=3 scripts/scaling-sweep.sh -c CONFIG --mode weak --out DIR [--set ...]
#
# Rank counts above this machine's cores run oversubscribed: they measure
# time-slicing, not scaling (docs/scaling.md). HPCML_BIN: the binary (default
# build/bin/hpcml). Exit: the last failing point's code, else 0.
set -uo pipefail
HPCML_BIN=${HPCML_BIN:-$(dirname "${BASH_SOURCE[0]}")/../build/bin/hpcml}
RANKS=${RANKS:-"1 2 4"}
REPS=${REPS:-1}
cores=$(nproc)
flags=()
[[ $(id -u) == 0 ]] && flags+=(--allow-run-as-root)
status=0
for ((rep = 0; rep < REPS; ++rep)); do
  for n in $RANKS; do
    extra=()
    ((n > cores)) && extra+=(--oversubscribe)
    mpirun "${flags[@]}" "${extra[@]}" -n "$n" "$HPCML_BIN" bench scaling "$@"
    rc=$?
    ((rc != 0)) && { echo "scaling-sweep: rep $rep, $n rank(s): exit $rc" >&2; status=$rc; }
  done
done
exit "$status"
