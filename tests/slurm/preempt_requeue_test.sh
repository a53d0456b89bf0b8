#!/usr/bin/env bash
# jobs/train.sbatch preempted and requeued on a real local Slurm cluster.
# Two jobs of the same config and task count go through the same template:
#   - "preempt": once metrics.jsonl shows step >= 30, `scancel --signal=USR1 --full`
#     (what --signal=USR1@N does near the time limit, plus the batch shell, which
#     the template must survive). The ranks checkpoint and exit 75, the template
#     runs `scontrol requeue`, the requeued run passes --resume and completes.
#   - "reference": uninterrupted.
# Both must be COMPLETED with the same summary.json parameters_sha256.
#
# Slurm holds a requeued job for cred_expire + 1 s (121 s by default) before it
# may start again; the test starts it a few seconds after the requeue instead,
# with `scontrol update StartTime=now` (the template does not depend on that).
#
# Usage: tests/slurm/preempt_requeue_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 55 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# Env:  HPCML_TEST_SLURM_PORT [16847], HPCML_TEST_KEEP=1 (see lib.sh)
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init preempt-requeue 16847 300 "$@"
start_cluster

# Long enough (400 steps) that the signal lands mid-run on a fast machine;
# one thread per rank in both jobs, so the digests can be compared bit for bit.
CFG=(--set data.features=256 --set "model.hidden=[512,512]" --set train.batch_size=128
     --set data.samples=4096 --set train.max_steps=400 --set checkpoint.every_steps=20
     --set train.log_every=5 --set runtime.threads=1)
STOP_AT=30

t0=$SECONDS
jp=$(submit preempt train.sbatch -n 2 -- "${CFG[@]}" --set run.dir=run-preempt) ||
  { fail "sbatch (preempt)"; finish; }
jr=$(submit reference train.sbatch -n 2 -- "${CFG[@]}" --set run.dir=run-reference) ||
  { fail "sbatch (reference)"; finish; }
plog="$T/preempt.out" rlog="$T/reference.out"

# ---- preempt once training has made progress ----------------------------------------
s=$(wait_for_step "$T/run-preempt" "$STOP_AT" 120 "$jp")
if ((s < STOP_AT)); then
  fail "job $jp: metrics.jsonl never reached step $STOP_AT (last step $s, state $(job_field "$jp" JobState))"
  show_log "$plog"; finish
fi
if ((s >= 400)) || [[ "$(job_field "$jp" JobState)" != RUNNING ]]; then
  fail "job $jp finished before it could be preempted (step $s): the config is too fast for this machine"
  finish
fi
timeout 10 scancel --signal=USR1 --full "$jp" && pass "scancel --signal=USR1 --full $jp at step $s ($(elapsed "$t0") s)" ||
  fail "scancel --signal=USR1 --full $jp"

# ---- the template requeues; start the requeued run early ------------------------------
end=$((SECONDS + 240)) requeued_at="" released=0 state=""
while ((SECONDS < end)); do
  state=$(job_field "$jp" JobState)
  restarts=$(job_field "$jp" Restarts)
  if [[ "$restarts" == 1 && -z "$requeued_at" ]]; then
    requeued_at=$SECONDS
    pass "job $jp requeued (Restarts=1, $state, Reason=$(job_field "$jp" Reason))"
  fi
  case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) break ;; esac
  if [[ -n "$requeued_at" && "$released" == 0 && "$state" == PENDING &&
        "$(job_field "$jp" Reason)" == BeginTime ]] && ((SECONDS - requeued_at >= 5)); then
    timeout 10 scontrol update JobId="$jp" StartTime=now && released=1
  fi
  sleep 0.5
done
[[ -n "$requeued_at" ]] || fail "job $jp was never requeued (Restarts=$(job_field "$jp" Restarts))"
if [[ "$state" == COMPLETED ]]; then
  pass "job $jp COMPLETED after the requeue ($(elapsed "$t0") s since submit)"
else
  fail "job $jp: state '$state' (want COMPLETED), ExitCode=$(job_field "$jp" ExitCode)"
  show_log "$plog" 60
fi
rstate=$(wait_job "$jr" 180)
[[ "$rstate" == COMPLETED ]] && pass "reference job $jr COMPLETED" ||
  { fail "reference job $jr: state '$rstate'"; show_log "$rlog"; }

# ---- the log tells the story: 75, requeue, resume ----------------------------------
check_log() {  # what pattern
  if grep -qE "$2" "$plog"; then pass "log: $1: $(grep -m1 -E "$2" "$plog" | cut -c1-150)"; else fail "log: no $1 ('$2')"; fi
}
check_log "ranks stopped with exit code 75" 'signal 10 received: stopped at step [0-9]+ after writing a checkpoint; exit code 75'
check_log "the batch shell survived SIGUSR1" '^train.sbatch: batch shell got SIGUSR1'
check_log "template saw exit code 75" '^train.sbatch: hpcml train exited with code 75'
check_log "template requeued" "^train.sbatch: preempted after a checkpoint; requeueing job $jp"
check_log "second run" "^train.sbatch: job $jp run 2, 2 task\(s\)"
check_log "resumed from the checkpoint" 'info: resumed from .*run-preempt/checkpoints/step-[0-9]+\.pt at step [0-9]+'
check_log "second run completed" '^train.sbatch: hpcml train exited with code 0'
n=$(grep -c '^  launcher *srun' "$plog")
[[ "$n" == 2 ]] && pass "log: hpcml info at the start of both runs" || fail "log: $n hpcml info reports (want 2)"
stop_step=$(grep -oE 'stopped at step [0-9]+' "$plog" | head -1 | tr -dc '0-9')
resume_step=$(grep -oE 'resumed from .* at step [0-9]+' "$plog" | head -1 | grep -oE '[0-9]+$')
[[ -n "$stop_step" && "$stop_step" == "$resume_step" ]] &&
  pass "resumed at the step it stopped at ($stop_step)" ||
  fail "stopped at step '${stop_step}', resumed at step '${resume_step}'"
# metrics.jsonl was cut back to the checkpoint: the same rows (by step; an epoch
# end adds a validation row) as the uninterrupted run, none twice.
if diff <(grep -o '"step": *[0-9]*' "$T/run-preempt/metrics.jsonl") \
        <(grep -o '"step": *[0-9]*' "$T/run-reference/metrics.jsonl") >/dev/null 2>&1; then
  pass "metrics.jsonl: the same $(wc -l <"$T/run-preempt/metrics.jsonl") rows by step as the reference run"
else
  fail "metrics.jsonl rows differ from the reference run's (by step)"
fi

# ---- bit-identical to the uninterrupted run ------------------------------------------
sp=$(json_field "$T/run-preempt/summary.json" parameters_sha256)
sr=$(json_field "$T/run-reference/summary.json" parameters_sha256)
if [[ -n "$sp" && "$sp" == "$sr" ]]; then
  pass "parameters_sha256 of the preempted+resumed run equals the uninterrupted run's ($sp)"
else
  fail "parameters_sha256: preempted '${sp:-none}' vs reference '${sr:-none}'"
fi
[[ "$(json_field "$T/run-preempt/summary.json" steps)" == 400 ]] && pass "summary.json: 400 steps" ||
  fail "summary.json steps: $(json_field "$T/run-preempt/summary.json" steps)"

finish
