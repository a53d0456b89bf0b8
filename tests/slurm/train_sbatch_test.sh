#!/usr/bin/env bash
# jobs/train.sbatch on a real local Slurm cluster: a 2-task training job runs to
# COMPLETED, writes summary.json into runs/<job id> (run.dir's default in a job), and its log starts with `hpcml info` showing
# the srun launcher and 2 ranks.
#
# Usage: tests/slurm/train_sbatch_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 15 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# Env:  HPCML_TEST_SLURM_PORT [16827], HPCML_TEST_KEEP=1 (see lib.sh)
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init train-sbatch 16827 100 "$@"
start_cluster

SMALL=(--set train.max_steps=60 --set checkpoint.every_steps=10 --set train.log_every=5
       --set data.samples=2048)
t0=$SECONDS
# No run.dir: inside a job it defaults to runs/<job id> (relative to the job's cwd, $T).
j=$(submit train train.sbatch -n 2 -- "${SMALL[@]}") || { fail "sbatch train.sbatch"; finish; }
state=$(wait_job "$j" 120)
log="$T/train.out"
if [[ "$state" == COMPLETED ]]; then
  pass "train.sbatch -n 2: job $j COMPLETED in $(elapsed "$t0") s"
else
  fail "train.sbatch -n 2: job $j ended in state '$state' (want COMPLETED), ExitCode=$(job_field "$j" ExitCode)"
  show_log "$log"
fi

# The log starts with the template's line, then hpcml info.
head -1 "$log" | grep -q "^train.sbatch: job $j run 1, 2 task(s)" &&
  pass "log starts with the template's header: $(head -1 "$log")" ||
  { fail "log's first line: '$(head -1 "$log")'"; }
grep -q "^  launcher *srun, Slurm job $j\$" "$log" &&
  pass "hpcml info: launcher srun, Slurm job $j" ||
  { fail "hpcml info: no 'launcher srun, Slurm job $j' line"; show_log "$log"; }
grep -q '^  ranks *2 on 1 node(s)' "$log" && pass "hpcml info: 2 ranks on 1 node" ||
  fail "hpcml info: ranks line: '$(grep -m1 '^  ranks' "$log")'"
ranks=$(info_ranks "$log" | awk '{print $1}' | tr '\n' ' ')
[[ "$ranks" == "0 1 " ]] && pass "hpcml info: rank table has ranks 0 and 1" ||
  fail "hpcml info: rank table ranks '$ranks' (want '0 1 ')"
# hpcml info runs before training.
info_line=$(grep -n -m1 '^  launcher' "$log" | cut -d: -f1)
train_line=$(grep -n -m1 'info: training' "$log" | cut -d: -f1)
[[ -n "$info_line" && -n "$train_line" && "$info_line" -lt "$train_line" ]] &&
  pass "hpcml info comes before training in the log" ||
  fail "hpcml info (line ${info_line:-none}) should come before training (line ${train_line:-none})"

summary="$T/runs/$j/summary.json"
if [[ -s "$summary" ]]; then
  steps=$(json_field "$summary" steps) nranks=$(json_field "$summary" ranks)
  [[ "$steps" == 60 && "$nranks" == 2 ]] &&
    pass "summary.json: 60 steps on 2 ranks, sha256 $(json_field "$summary" parameters_sha256 | cut -c1-16)..." ||
    fail "summary.json: steps=$steps ranks=$nranks (want 60, 2)"
else
  fail "no $summary"
fi
grep -q 'train.sbatch: hpcml train exited with code 0' "$log" && pass "template reports exit code 0" ||
  fail "template did not report 'exited with code 0'"
[[ "$(job_field "$j" Restarts)" == 0 ]] && pass "no requeue (Restarts=0)" ||
  fail "Restarts=$(job_field "$j" Restarts) (want 0)"

finish
