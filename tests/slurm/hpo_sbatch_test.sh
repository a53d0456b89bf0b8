#!/usr/bin/env bash
# jobs/hpo.sbatch on a real local Slurm cluster: a study of 4 trials on 2 tasks
# (2 groups of 1 rank) reaches COMPLETED with every trial complete, and the
# study's journal shows both groups trained; then SIGUSR1 to a second study's
# ranks: exit 75, requeued, and the requeued run resumes the study to the end
# (the trials finished before the signal are kept, not run again).
#
# Usage: tests/slurm/hpo_sbatch_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 60 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init hpo-sbatch 16887 200 "$@"
start_cluster

cat >"$T/study.yaml" <<YAML
runtime: {threads: 1}
data: {name: synthetic, samples: 4096, validation_samples: 512, features: 32, classes: 4}
model: {name: mlp, hidden: [128, 128]}
train: {epochs: 3, batch_size: 32}
hpo:
  space:
    optimizer.lr: {type: loguniform, low: 0.001, high: 0.3}
    optimizer.name: {type: categorical, choices: [sgd, adam]}
  sampler: random
  trials: 4
  plots: false
YAML

t0=$SECONDS
# The config as a bare argument, as DESIGN.md writes it (`sbatch jobs/hpo.sbatch STUDY.yaml`); job b uses -c.
j=$(submit a hpo.sbatch -n 2 -- "$T/study.yaml" --set "hpo.study_dir=$T/study") || { fail "sbatch"; finish; }
state=$(wait_job "$j" 150)
if [[ "$state" == COMPLETED ]]; then pass "hpo.sbatch job $j COMPLETED ($(elapsed "$t0") s)"; else
  fail "hpo.sbatch job $j ended in state '$state', ExitCode=$(job_field "$j" ExitCode)"; show_log "$T/a.out"
fi
grep -q "^hpo.sbatch: hpcml hpo exited with code 0" "$T/a.out" && pass "log: hpo exited 0" ||
  fail "log: no 'hpcml hpo exited with code 0'"

/usr/bin/python3 - "$T/study" <<'PY' && pass "study: 4 trials complete on 2 groups" || fail "study checks"
import csv, json, sys
study = sys.argv[1]
rows = list(csv.DictReader(open(f"{study}/trials.csv")))
assert [r["state"] for r in rows] == ["complete"] * 4, rows
events = [json.loads(l) for l in open(f"{study}/journal.jsonl")]
workers = {e["worker"] for e in events if e["event"] == "start"}
assert workers == {0, 1}, workers
PY

# Preempted: SIGUSR1 once two trials are done, requeued, resumed.
sed -i 's/trials: 4/trials: 6/; s/epochs: 3/epochs: 6/' "$T/study.yaml"
j=$(submit b hpo.sbatch -n 2 -- -c "$T/study.yaml" --set "hpo.study_dir=$T/pre") || { fail "sbatch b"; finish; }
for _ in $(seq 1 600); do
  n=$(grep -c '"event":"done"' "$T/pre/journal.jsonl" 2>/dev/null || true)
  [[ "${n:-0}" -ge 2 ]] && break
  sleep 0.1
done
timeout 10 scancel --signal=USR1 --full "$j" || fail "scancel --signal=USR1 --full $j"
# The template requeues; the requeued job is released at once instead of after Slurm's hold.
end=$((SECONDS + 200)) requeued_at="" released=0 state=""
while ((SECONDS < end)); do
  state=$(job_field "$j" JobState)
  [[ "$(job_field "$j" Restarts)" == 1 && -z "$requeued_at" ]] && requeued_at=$SECONDS
  case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) break ;; esac
  if [[ -n "$requeued_at" && "$released" == 0 && "$state" == PENDING &&
        "$(job_field "$j" Reason)" == BeginTime ]] && ((SECONDS - requeued_at >= 3)); then
    timeout 10 scontrol update JobId="$j" StartTime=now && released=1
  fi
  sleep 0.5
done
[[ -n "$requeued_at" ]] && pass "job $j requeued" || fail "job $j was never requeued"
[[ "$state" == COMPLETED ]] && pass "preempted hpo job $j COMPLETED after its requeue" ||
  { fail "preempted hpo job $j ended in state '$state'"; show_log "$T/b.out"; }
grep -q "hpcml hpo exited with code 75" "$T/b.out" && pass "log: exit 75, then requeued" ||
  fail "log: no exit 75 (the signal came too late?)"
/usr/bin/python3 - "$T/pre" <<'PY' && pass "resumed study: 6 trials complete, none run twice" || fail "resumed study checks"
import csv, json, sys
study = sys.argv[1]
rows = list(csv.DictReader(open(f"{study}/trials.csv")))
assert [r["state"] for r in rows] == ["complete"] * 6, rows
events = [json.loads(l) for l in open(f"{study}/journal.jsonl")]
done = [e["id"] for e in events if e["event"] == "done"]
assert len(done) == len(set(done)) == 6, done
assert any(e["event"] == "interrupted" for e in events), "no trial was interrupted"
assert sum(1 for e in events if e["event"] == "farm") == 2
PY
finish
