#!/usr/bin/env bash
# jobs/train.sbatch with one rank SIGKILLed mid-training, on a real local Slurm
# cluster: srun's --kill-on-bad-exit=1 must end the other rank and the step, and
# the job must end promptly (within 30 s) in a failed state, not hang in a
# collective and not requeue (exit code 75 is only for a clean preemption).
#
# Usage: tests/slurm/killed_rank_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 25 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# Env:  HPCML_TEST_SLURM_PORT [16857], HPCML_TEST_KEEP=1 (see lib.sh)
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init killed-rank 16857 100 "$@"
start_cluster

CFG=(--set data.features=256 --set "model.hidden=[512,512]" --set train.batch_size=128
     --set data.samples=4096 --set train.max_steps=800 --set checkpoint.every_steps=20
     --set train.log_every=5)
DEADLINE=30

j=$(submit killed train.sbatch -n 2 -- "${CFG[@]}" --set run.dir=run) || { fail "sbatch"; finish; }
log="$T/killed.out"
s=$(wait_for_step "$T/run" 10 120 "$j")
if ((s < 10)) || [[ "$(job_field "$j" JobState)" != RUNNING ]]; then
  fail "job $j: no training progress to interrupt (step $s, state $(job_field "$j" JobState))"
  show_log "$log"; finish
fi

# Rank 1's hpcml process of this job's training step, found by its environment.
victim=$(pids_of_job "$j" 1 | head -1)
if [[ -z "$victim" ]]; then
  fail "no hpcml process with SLURM_JOB_ID=$j and SLURM_PROCID=1"; finish
fi
kill -KILL "$victim"
k=$SECONDS
pass "SIGKILL to rank 1 (pid $victim) at step $s"

end=$((SECONDS + DEADLINE)) state=""
while ((SECONDS < end)); do
  state=$(job_field "$j" JobState)
  [[ "$state" == RUNNING || "$state" == COMPLETING || "$state" == CONFIGURING ]] || break
  sleep 0.5
done
took=$(elapsed "$k")
case "$state" in
  FAILED|CANCELLED|NODE_FAIL)
    pass "job $j ended ${took} s after the kill: JobState=$state ExitCode=$(job_field "$j" ExitCode)" ;;
  *)
    fail "job $j: JobState=$state ${took} s after the kill (want FAILED within ${DEADLINE} s)"
    show_log "$log" ;;
esac
code=$(job_field "$j" ExitCode)
[[ "$code" != 0:0 && "$code" != 75:0 ]] && pass "job exit code $code (neither success nor the requeue code)" ||
  fail "job exit code $code"
[[ "$(job_field "$j" Restarts)" == 0 ]] && pass "not requeued (Restarts=0)" ||
  fail "job was requeued (Restarts=$(job_field "$j" Restarts))"
grep -q 'srun: error: .*task 1: Killed' "$log" && pass "log: srun reports task 1 killed" ||
  fail "log: no 'task 1: Killed' from srun"
grep -qE '^train.sbatch: hpcml train exited with code [0-9]+' "$log" &&
  pass "log: $(grep -m1 -E '^train.sbatch: hpcml train exited with code' "$log" | cut -c1-80)" ||
  fail "log: the template did not report the training exit code"
grep -q 'requeueing' "$log" && fail "log: the template tried to requeue" || pass "log: no requeue attempt"
[[ -s "$T/run/summary.json" ]] && fail "summary.json exists: training should not have finished" ||
  pass "no summary.json (training did not finish)"
sleep 1
left=$(pids_of_job "$j" | tr '\n' ' ')
[[ -z "$left" ]] && pass "no hpcml process of job $j left" || fail "hpcml processes of job $j left: $left"

finish
