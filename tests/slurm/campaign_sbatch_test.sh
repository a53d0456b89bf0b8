#!/usr/bin/env bash
# jobs/campaign.sbatch on a real local Slurm cluster: two campaign jobs submitted
# on one campaign directory at once both reach COMPLETED, share its units (each
# computed once, one journal per job, journal.slurm<id>.jsonl), and the outputs
# equal a campaign run by mpirun alone (h5py, byte for byte).
#
# Usage: tests/slurm/campaign_sbatch_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 40 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init campaign-sbatch 16867 200 "$@"
start_cluster

# Data, a trained MLP and the reference outputs, by mpirun (not Slurm).
MPI=(mpirun --allow-run-as-root --oversubscribe -n 2)
"${MPI[@]}" "$HPCML_BIN" datagen jets -o "$T/jets" --files 6 --events-per-file 500 >"$T/setup.log" 2>&1 ||
  { fail "datagen"; show_log "$T/setup.log"; finish; }
CFG=(--set model.name=mlp --set model.hidden=[16] --set data.name=hdf5
     --set "data.files=[$T/jets/jets-00000.h5]" --set data.input=jet --set data.target=label
     --set data.classes=2 --set train.epochs=1 --set "run.dir=$T/run"
     --set "infer.inputs=[$T/jets/jets-*.h5]" --set infer.unit_rows=500 --set infer.batch_size=50)
"${MPI[@]}" "$HPCML_BIN" train "${CFG[@]}" >>"$T/setup.log" 2>&1 || { fail "train"; show_log "$T/setup.log"; finish; }
"${MPI[@]}" "$HPCML_BIN" infer "${CFG[@]}" --set "infer.output_dir=$T/reference" >>"$T/setup.log" 2>&1 ||
  { fail "reference campaign"; show_log "$T/setup.log"; finish; }

# Two jobs on one campaign, each unit slowed so that they overlap.
export HPCML_TEST_CAMPAIGN_SLOW='*:400'  # datagen writes one chunk per file: one unit per file
t0=$SECONDS
a=$(submit a campaign.sbatch -n 1 -- "${CFG[@]}" --set "infer.output_dir=$T/shared") || { fail "sbatch a"; finish; }
b=$(submit b campaign.sbatch -n 1 -- "${CFG[@]}" --set "infer.output_dir=$T/shared") || { fail "sbatch b"; finish; }
for j in "$a" "$b"; do
  state=$(wait_job "$j" 150)
  if [[ "$state" == COMPLETED ]]; then pass "campaign.sbatch job $j COMPLETED ($(elapsed "$t0") s)"; else
    fail "campaign.sbatch job $j ended in state '$state', ExitCode=$(job_field "$j" ExitCode)"
    show_log "$T/a.out"; show_log "$T/b.out"
  fi
done
grep -q "^campaign.sbatch: hpcml infer exited with code 0" "$T/a.out" && pass "log a: infer exited 0" ||
  fail "log a: no 'hpcml infer exited with code 0'"

/usr/bin/python3 - "$T" "$a" "$b" <<'PY' && pass "shared campaign: outputs equal the reference, each unit computed once by one of two jobs" || fail "shared campaign checks"
import glob, json, os, sys
import h5py
t, a, b = sys.argv[1:]
names = sorted(os.path.basename(p) for p in glob.glob(f"{t}/reference/*.predictions.h5"))
assert len(names) == 6, names
for n in names:
    with h5py.File(f"{t}/reference/{n}") as x, h5py.File(f"{t}/shared/{n}") as y:
        for k in ("row", "scores", "label"):
            assert x[k][...].tobytes() == y[k][...].tobytes(), (n, k)
computed, by_job = [], {}
for job in (a, b):
    path = f"{t}/shared/journal.slurm{job}.jsonl"
    events = [json.loads(l) for l in open(path)]
    mine = [e["id"] for e in events if e["event"] == "done" and not e.get("recovered")
            and not e.get("result", {}).get("superseded")]
    computed += mine
    by_job[job] = len(mine)
assert len(computed) == len(set(computed)), "a unit computed twice"
assert len([c for c in computed if not c.startswith("assemble:")]) == 6, computed
assert all(n > 0 for n in by_job.values()), by_job
print("units computed per job:", by_job)
PY
finish
