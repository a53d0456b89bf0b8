#!/usr/bin/env bash
# jobs/scaling.sbatch on a real local Slurm cluster: a weak sweep at 1 and 2 ranks,
# 2 repetitions, as one job of 4 srun steps, reaches COMPLETED; the sweep directory
# holds a point per step, scaling.json with both rank counts (2 repetitions each,
# efficiency 1 at 1 rank) and the 1-rank profile; a rank count above the job's
# tasks is refused with one line before any step.
#
# Usage: tests/slurm/scaling_sbatch_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 30 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init scaling-sbatch 16907 200 "$@"
start_cluster

args=(--out "$T/sweep" --steps 20 --interval 10 --no-plots --set runtime.threads=1 --set model.name=mlp
      --set "model.hidden=[32]" --set data.features=16 --set data.samples=4096 --set train.batch_size=32)
t0=$SECONDS
j=$(HPCML_RANKS="1 2" HPCML_REPS=2 submit a scaling.sbatch -n 2 -- "${args[@]}") || { fail "sbatch"; finish; }
state=$(wait_job "$j" 150)
if [[ "$state" == COMPLETED ]]; then pass "scaling.sbatch job $j COMPLETED ($(elapsed "$t0") s)"; else
  fail "scaling.sbatch job $j ended in state '$state', ExitCode=$(job_field "$j" ExitCode)"; show_log "$T/a.out"
fi
[[ $(grep -c "^scaling.sbatch: rep [01], [12] rank(s): exit 0" "$T/a.out") == 4 ]] && pass "log: 4 steps exited 0" ||
  { fail "log: expected 4 steps with exit 0"; show_log "$T/a.out"; }

/usr/bin/python3 - "$T/sweep" <<'PY' && pass "sweep: 4 points, scaling.json at 1 and 2 ranks, the profile" || fail "sweep checks"
import json, os, sys
sweep = sys.argv[1]
assert sorted(os.listdir(f"{sweep}/points")) == [f"weak-n{n}-r{r}.json" for n in (1, 2) for r in (0, 1)]
rows = json.load(open(f"{sweep}/scaling.json"))["modes"]["weak"]
assert [(r["ranks"], r["repetitions"]) for r in rows] == [(1, 2), (2, 2)], rows
assert rows[0]["efficiency"] == 1.0 and rows[1]["efficiency"] > 0, rows
assert rows[1]["global_batch"] == 64
profile = json.load(open(f"{sweep}/profile-weak.json"))
assert profile["batch_per_rank"] == 32 and profile["compute_per_sample_s"] > 0, profile
PY

j=$(HPCML_RANKS="1 3" submit b scaling.sbatch -n 2 -- "${args[@]}") || { fail "sbatch b"; finish; }
state=$(wait_job "$j" 60)
[[ "$state" == FAILED ]] && grep -q "^scaling.sbatch: HPCML_RANKS: expected rank counts between 1 and the job's 2 task(s), found '3'" "$T/b.out" &&
  ! grep -q "bench scaling" "$T/b.out" && pass "3 ranks on 2 tasks: refused in one line, no step" ||
  { fail "3 ranks on 2 tasks: state '$state'"; show_log "$T/b.out"; }
finish
