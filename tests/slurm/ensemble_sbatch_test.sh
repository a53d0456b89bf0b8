#!/usr/bin/env bash
# jobs/ensemble.sbatch on a real local Slurm cluster: an ensemble of 2 members x 2
# variations on 2 tasks (2 groups of 1 rank) reaches COMPLETED, every member
# complete in its own run directory, and both groups trained.
#
# Usage: tests/slurm/ensemble_sbatch_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 30 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init ensemble-sbatch 16897 200 "$@"
start_cluster

cat >"$T/ensemble.yaml" <<YAML
runtime: {threads: 1}
data: {name: synthetic, samples: 2048, validation_samples: 256, features: 16, classes: 2}
model: {name: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 64}
ensemble:
  members: 2
  dir: $T/ens
  variations: {nominal: {}, wide: {model.hidden: [64]}}
YAML

t0=$SECONDS
j=$(submit a ensemble.sbatch -n 2 -- -c "$T/ensemble.yaml") || { fail "sbatch"; finish; }
state=$(wait_job "$j" 150)
if [[ "$state" == COMPLETED ]]; then pass "ensemble.sbatch job $j COMPLETED ($(elapsed "$t0") s)"; else
  fail "ensemble.sbatch job $j ended in state '$state', ExitCode=$(job_field "$j" ExitCode)"; show_log "$T/a.out"
fi
grep -q "^ensemble.sbatch: hpcml ensemble exited with code 0" "$T/a.out" && pass "log: ensemble exited 0" ||
  fail "log: no 'hpcml ensemble exited with code 0'"

/usr/bin/python3 - "$T/ens" <<'PY' && pass "ensemble: 4 members complete, each in its run directory, on 2 groups" || fail "ensemble checks"
import glob, json, os, sys
ens = sys.argv[1]
s = json.load(open(f"{ens}/summary.json"))
assert s["counts"] == {"complete": 4}, s["counts"]
for v in ("nominal", "wide"):
    for k in (0, 1):
        assert os.path.exists(f"{ens}/{v}/member-{k}/summary.json"), (v, k)
journals = glob.glob(f"{ens}/*.jsonl")
events = [json.loads(l) for j in journals for l in open(j) if l.strip()]
workers = {e["worker"] for e in events if e.get("event") == "start"}
assert workers == {0, 1}, workers
PY
finish
