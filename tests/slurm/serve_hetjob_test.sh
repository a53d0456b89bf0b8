#!/usr/bin/env bash
# jobs/serve-hetjob.sbatch on a real local Slurm cluster: a het job of 3 ranks
# on partition cpu and 1 on gpu in ONE MPI world, running `hpcml serve`: the
# log's `hpcml info` must show 4 ranks with het groups 0,0,0,1 (cpu1, cpu1,
# cpu1, gpu1), the het groups must decide the roles (clients 0,1,2 on cpu,
# server 3 on gpu), and the clients' events must all be served. Then the template's guard against the Slurm < 24.11 srun
# hang is exercised with a copy whose srun "hangs" after its step ended.
#
# Usage: tests/slurm/serve_hetjob_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 55 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# Env:  HPCML_TEST_SLURM_PORT [16837], HPCML_TEST_KEEP=1 (see lib.sh)
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init serve-hetjob 16837 200 "$@"
start_cluster

# The template's srun guard acts once a step has been gone for this long.
export HPCML_SRUN_GUARD_S=8
# The repository of the source tree; synthetic events (no data files), 60 in all.
SMALL=(-c "$ROOT/configs/serve-facile.yaml" --set "serve.repository=$ROOT/configs/serve-models"
       --set 'serve.client.files=[]' --set serve.client.events=60)

# ---- the template as shipped: 3 (cpu) + 1 (gpu) ranks -------------------------------
t0=$SECONDS
j=$(submit het serve-hetjob.sbatch -- "${SMALL[@]}" --set serve.client.metrics=serve-metrics.json) ||
  { fail "sbatch serve-hetjob.sbatch"; finish; }
check_het_job "$j" serve-hetjob.sbatch "$T/serve-metrics.json" "$t0"
log="$T/het.out"

grep -q "^  launcher *srun, Slurm job $j, het job of 2 components" "$log" &&
  pass "hpcml info: launcher srun, het job of 2 components" ||
  { fail "hpcml info: no 'launcher srun, Slurm job $j, het job of 2 components' line"; show_log "$log"; }
grep -q '^  ranks *4 on 2 node(s)' "$log" && pass "hpcml info: 4 ranks on 2 nodes (one MPI world)" ||
  fail "hpcml info: ranks line: '$(grep -m1 '^  ranks' "$log")'"
table=$(info_ranks "$log" | tr '\n' ';')
want="0 cpu1 0;1 cpu1 0;2 cpu1 0;3 gpu1 1;"
[[ "$table" == "$want" ]] && pass "hpcml info: rank/node/het group = $table" ||
  fail "hpcml info rank table: '$table' (want '$want')"
grep -q '^serve: roles (het job): clients 0,1,2; servers 3$' "$log" &&
  pass "serve: the het groups decide the roles (clients 0,1,2; server 3)" ||
  { fail "no 'serve: roles (het job): clients 0,1,2; servers 3' line"; show_log "$log"; }
grep -q '^serve: facile: 3 client(s), 60 events' "$log" && pass "serve: 3 clients, all 60 events served" ||
  fail "serve summary: '$(grep -m1 '^serve: facile' "$log")' (want 3 client(s), 60 events)"
check_het_exit "$log" "serve-hetjob.sbatch: hpcml serve"
if grep -q 'srun .* still runs .* after its step ended' "$log"; then
  note "the srun guard fired in this run (known Slurm < 24.11 pmix het-step hang)"
fi

# ---- the srun-hang guard ------------------------------------------------------------
# A copy of the template whose srun, after the real one returns, blocks like
# the hung srun of Slurm < 24.11 (its step is gone, the process stays). The
# guard must kill it (for the info step and the serve step), say so in the
# log, and end the job as FAILED with exit code 124 instead of hanging.
hang_copy="$T/serve-hetjob-hang.sbatch"
sed 's/^set -uo pipefail.*/&\nsrun() { command srun "$@"; echo "test: srun returned $?; simulating the hang"; exec sleep 600; }/' \
  "$ROOT/jobs/serve-hetjob.sbatch" >"$hang_copy"
grep -q 'simulating the hang' "$hang_copy" || fail "could not make the hang copy of the template"
t0=$SECONDS
if j2=$(HPCML_SRUN_GUARD_S=4 submit hang "$hang_copy" -- "${SMALL[@]}" --set serve.client.metrics=serve-metrics-hang.json); then
  state=$(wait_job "$j2" 120)
  hlog="$T/hang.out"
  n=$(grep -c 'still runs .* after its step ended: the Slurm < 24.11 pmix het-step hang; killing it' "$hlog")
  if [[ "$n" == 2 && "$state" == FAILED && "$(job_field "$j2" ExitCode)" == 124:0 ]]; then
    pass "srun guard: killed both hung sruns; job FAILED with exit 124 after $(elapsed "$t0") s"
  else
    fail "srun guard: state '$state', ExitCode $(job_field "$j2" ExitCode), $n guard message(s) (want FAILED, 124:0, 2)"
    show_log "$hlog"
  fi
  grep -q 'exit code is lost (srun was killed)' "$hlog" && pass "srun guard: the log says the exit code is lost" ||
    fail "srun guard: no 'exit code is lost' line"
  [[ -s "$T/serve-metrics-hang.json" ]] && pass "srun guard: serving itself completed before the simulated hang" ||
    fail "srun guard: no serve-metrics-hang.json"
  sleep 1
  [[ -z "$(pids_of_job "$j2")" ]] && pass "srun guard: no hpcml process of job $j2 left" ||
    fail "srun guard: hpcml processes left: $(pids_of_job "$j2")"
else
  fail "sbatch of the hang copy"
fi

finish
