#!/usr/bin/env bash
# jobs/campaign-service.sbatch on a real local Slurm cluster: a het job of 2
# worker ranks on partition cpu and 1 server rank on gpu in ONE MPI world runs a
# FACILE campaign through the service: the het groups decide the roles (workers
# 0,1; server 2), the job reaches COMPLETED, and the outputs equal a local
# campaign run by mpirun (h5py, byte for byte: FACILE's rows are independent).
#
# Usage: tests/slurm/campaign_service_test.sh [HPCML_BINARY]
# Needs root and slurm-wlm + munge (scripts/install-deps.sh). About 40 s.
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# shellcheck source=tests/slurm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
slurm_test_init campaign-service 16877 200 "$@"
start_cluster
export HPCML_SRUN_GUARD_S=8

# Data, a trained FACILE and the reference outputs, by mpirun (not Slurm).
MPI=(mpirun --allow-run-as-root --oversubscribe -n 2)
"${MPI[@]}" "$HPCML_BIN" datagen calo -o "$T/calo" --files 2 --events-per-file 1000 >"$T/setup.log" 2>&1 ||
  { fail "datagen"; show_log "$T/setup.log"; finish; }
CFG=(-c "$ROOT/configs/facile.yaml" --set "data.files=[$T/calo/calo-channels-00000.h5]" --set 'data.validation_files=[]'
     --set train.max_steps=10 --set "run.dir=$T/run" --set "infer.inputs=[$T/calo/calo-channels-*.h5]"
     --set infer.unit_rows=250)
"${MPI[@]}" "$HPCML_BIN" train "${CFG[@]}" >>"$T/setup.log" 2>&1 || { fail "train"; show_log "$T/setup.log"; finish; }
"${MPI[@]}" "$HPCML_BIN" infer "${CFG[@]}" --set "infer.output_dir=$T/reference" >>"$T/setup.log" 2>&1 ||
  { fail "reference campaign"; show_log "$T/setup.log"; finish; }

t0=$SECONDS
j=$(submit het campaign-service.sbatch -- "${CFG[@]}" --set "infer.output_dir=$T/served") ||
  { fail "sbatch campaign-service.sbatch"; finish; }
check_het_job "$j" campaign-service.sbatch "$T/served/summary.json" "$t0"
log="$T/het.out"
grep -q '^infer: via service, roles (het job): workers 0,1; servers 2$' "$log" &&
  pass "infer: the het groups decide the roles (workers 0,1; server 2)" ||
  { fail "no 'infer: via service, roles (het job): workers 0,1; servers 2' line"; show_log "$log"; }
check_het_exit "$log" "campaign-service.sbatch: hpcml infer"

/usr/bin/python3 - "$T" <<'PY' && pass "served outputs equal the local campaign's bytes; the server's report is in summary.json" || fail "served campaign checks"
import glob, json, os, sys
import h5py
t = sys.argv[1]
names = sorted(os.path.basename(p) for p in glob.glob(f"{t}/reference/*.predictions.h5"))
assert len(names) == 2, names
for n in names:
    with h5py.File(f"{t}/reference/{n}") as x, h5py.File(f"{t}/served/{n}") as y:
        for k in ("row", "prediction", "energy"):
            assert x[k][...].tobytes() == y[k][...].tobytes(), (n, k)
s = json.load(open(f"{t}/served/summary.json"))
assert s["via"] == "service" and s["rows"] == 2000, s
assert [r["rank"] for r in s["service"]["servers"]] == [2], s["service"]
print("server utilisation", s["service"]["servers"][0]["utilisation"])
PY
finish
