#!/usr/bin/env bash
# End-to-end test of jobs/local-cluster.sh: starts a two-node Slurm cluster in a
# fresh temp dir, runs plain and heterogeneous jobs (and an MPI hello across both
# het components when mpicc is available), then stops the cluster.
#
# Usage: tests/slurm/local_cluster_test.sh
# Needs root and the slurm-wlm + munge packages (scripts/install-deps.sh).
# Exit: 0 all passed, 1 a check failed, 77 skipped (not root / no Slurm; with CI=true: 1).
# Env:  HPCML_TEST_SLURM_PORT  slurmctld port; slurmds use +1, +2  [16817]
#       HPCML_TEST_KEEP=1      keep the temp dir even when everything passed
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cluster="$root/jobs/local-cluster.sh"

# shellcheck source=tests/support/ci.sh
source "$root/tests/support/ci.sh"

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
skip() { echo "SKIP: $*"; }

if [[ $(id -u) -ne 0 ]]; then cannot_run slurm_local_cluster "needs root (the local cluster runs as root)"; fi
export PATH="$PATH:/usr/sbin:/sbin"
for b in slurmctld slurmd munged srun sbatch sinfo; do
  command -v "$b" >/dev/null || cannot_run slurm_local_cluster "'$b' not installed; run scripts/install-deps.sh"
done

# Ports away from the script's defaults, so a cluster a user already runs on
# 6817-6819 is left alone.
port=${HPCML_TEST_SLURM_PORT:-16817}
export HPCML_SLURMCTLD_PORT=$port HPCML_SLURMD_PORT=$((port + 1))

T=$(mktemp -d /tmp/hpcml-slurm-test.XXXXXX)
D="$T/cluster"
cleanup() {
  timeout 60 "$cluster" stop "$D" >"$T/stop-on-exit.log" 2>&1 ||
    { echo "FAIL: stop on exit (see $T/stop-on-exit.log)"; cat "$T/stop-on-exit.log"; }
  if ((failures == 0)) && [[ "${HPCML_TEST_KEEP:-0}" != 1 ]]; then
    rm -rf "$T"
  else
    echo "kept $T (logs in $D)"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- start -------------------------------------------------------------------
if timeout 120 "$cluster" start "$D" >"$T/start.log" 2>&1; then
  pass "start"
else
  fail "start (output below)"; cat "$T/start.log"; exit 1
fi
# shellcheck disable=SC1091
source "$D/env"
[[ "$SLURM_CONF" == "$D/slurm.conf" ]] && pass "env file exports SLURM_CONF" ||
  fail "env file: SLURM_CONF=$SLURM_CONF"

if timeout 30 "$cluster" start "$D" >"$T/start2.log" 2>&1; then
  fail "second start should refuse while running"
else
  grep -q "already running" "$T/start2.log" && pass "second start refused: $(head -1 "$T/start2.log")" ||
    fail "second start: unexpected message: $(cat "$T/start2.log")"
fi

timeout 30 "$cluster" status "$D" >"$T/status.log" 2>&1 && pass "status exit 0 while up" ||
  { fail "status while up"; cat "$T/status.log"; }

# ---- partitions and plain steps ----------------------------------------------
parts=$(timeout 15 sinfo -h -o '%R %t' | sort | tr '\n' ' ')
[[ "$parts" == "cpu idle gpu idle " ]] && pass "sinfo partitions: $parts" ||
  fail "sinfo partitions: '$parts' (want cpu idle, gpu idle)"

n=$(timeout 60 srun -p cpu -n 2 hostname 2>"$T/srun-cpu.err" | wc -l)
[[ $n -eq 2 ]] && pass "srun -p cpu -n 2 hostname (2 lines)" ||
  { fail "srun -p cpu -n 2 hostname gave $n lines"; cat "$T/srun-cpu.err"; }
n=$(timeout 60 srun -p gpu -n 1 hostname 2>"$T/srun-gpu.err" | wc -l)
[[ $n -eq 1 ]] && pass "srun -p gpu -n 1 hostname (1 line)" ||
  { fail "srun -p gpu -n 1 hostname gave $n lines"; cat "$T/srun-gpu.err"; }

# ---- heterogeneous job: one step across both components ------------------------
# Slurm < 24.11 has a race in srun's mpi/pmix abort agent for het steps (two
# component threads share one thread id; fixed upstream by commit a2e9643694,
# "mpi/pmix - Prevent mutiple abort agents"): about 1 srun in 50 hangs in
# pmixp_abort_agent_stop() after every task has exited. The job scripts below
# bound srun with timeout and report its exit code, and the test accepts a
# timeout only when every task's output is complete (checked separately).
check_srun_rc() {  # what outfile
  local rc
  rc=$(awk '/^SRUN_RC /{print $2}' "$2" 2>/dev/null)
  case "$rc" in
    0) pass "$1: srun exit 0" ;;
    124|137) echo "NOTE: $1: srun hung after its tasks exited and was killed (rc $rc);" \
                  "known Slurm < 24.11 pmix het-step race, not a cluster fault" ;;
    *) fail "$1: srun exit code '${rc:-none}'"; cat "$2" ;;
  esac
}
cat >"$T/het.sbatch" <<'EOF'
#!/bin/bash
#SBATCH -p cpu -n 2
#SBATCH hetjob
#SBATCH -p gpu -n 1
env | grep -E '^(SLURM|SLURMD|PMIX)_' | sort >"$HET_OUT/env.batch"
timeout -k 3 20 srun --het-group=0,1 --kill-on-bad-exit=1 bash -c \
  'env | grep -E "^(SLURM|SLURMD|PMIX|OMPI)_" | sort >"$HET_OUT/env.task$SLURM_PROCID";
   echo "TASK $SLURM_PROCID ${SLURM_HET_SIZE:-unset} $SLURMD_NODENAME $SLURM_NTASKS ${PMIX_RANK:-unset}"'
echo "SRUN_RC $?"
EOF
mkdir -p "$T/het"
start=$SECONDS
if HET_OUT="$T/het" timeout 120 sbatch --wait --export=ALL -D "$T" -o "$T/het.out" \
     "$T/het.sbatch" >"$T/het.submit" 2>&1; then
  pass "het job sbatch --wait exit 0 ($((SECONDS - start)) s)"
else
  fail "het job sbatch --wait: $(cat "$T/het.submit")"
fi
tasks=$(grep '^TASK ' "$T/het.out" 2>/dev/null | sort -k2n | tr '\n' ';')
want="TASK 0 2 cpu1 3 0;TASK 1 2 cpu1 3 1;TASK 2 2 gpu1 3 2;"
[[ "$tasks" == "$want" ]] && pass "het step: 3 tasks (2 on cpu1, 1 on gpu1), HET_SIZE=2, NTASKS=3" ||
  { fail "het step tasks: '$tasks' (want '$want')"; cat "$T/het.out"; }
check_srun_rc "het step" "$T/het.out"

# Report what Slurm sets in a het-job step, for hpcml's RuntimeEnv.
vars=(SLURM_JOB_ID SLURM_HET_SIZE SLURM_HET_JOB_ID SLURM_HET_JOB_COMPONENT SLURM_HET_JOB_OFFSET
      SLURM_PROCID SLURM_LOCALID SLURM_NODEID SLURMD_NODENAME SLURM_NTASKS SLURM_NPROCS
      SLURM_STEP_NUM_TASKS SLURM_STEP_NUM_NODES SLURM_STEP_TASKS_PER_NODE SLURM_JOB_PARTITION
      SLURM_NTASKS_HET_GROUP_0 SLURM_NTASKS_HET_GROUP_1 SLURM_JOB_ID_HET_GROUP_0
      SLURM_JOB_ID_HET_GROUP_1 SLURM_JOB_NODELIST_HET_GROUP_1 SLURM_CPUS_ON_NODE
      SLURM_GTIDS SLURM_MPI_TYPE PMIX_RANK PMIX_NAMESPACE)
echo "---- het-job step environment (per task; '-' = unset) ----"
for f in "$T"/het/env.task*; do
  [[ -f "$f" ]] || continue
  line="${f##*/env.}:"
  for v in "${vars[@]}"; do
    val=$(grep -m1 "^$v=" "$f" | cut -d= -f2-)
    line+=" $v=${val:--}"
  done
  echo "$line"
done
echo "----"

# ---- MPI across both components -------------------------------------------------
if command -v mpicc >/dev/null && srun --mpi=list 2>&1 | grep -q pmix; then
  cat >"$T/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  int rank, size, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("MPI %d %d %d %s\n", rank, size, sum, getenv("SLURMD_NODENAME"));
  MPI_Finalize();
  return 0;
}
EOF
  if timeout 120 mpicc -o "$T/hello" "$T/hello.c" >"$T/mpicc.log" 2>&1; then
    cat >"$T/mpi.sbatch" <<EOF
#!/bin/bash
#SBATCH -p cpu -n 2
#SBATCH hetjob
#SBATCH -p gpu -n 1
timeout -k 3 20 srun --mpi=pmix --het-group=0,1 --kill-on-bad-exit=1 "$T/hello"
echo "SRUN_RC \$?"
EOF
    timeout 120 sbatch --wait -D "$T" -o "$T/mpi.out" "$T/mpi.sbatch" >"$T/mpi.submit" 2>&1 ||
      fail "MPI het job sbatch --wait: $(cat "$T/mpi.submit")"
    got=$(grep '^MPI ' "$T/mpi.out" 2>/dev/null | sort -k2n | tr '\n' ';')
    want="MPI 0 3 3 cpu1;MPI 1 3 3 cpu1;MPI 2 3 3 gpu1;"
    [[ "$got" == "$want" ]] && pass "MPI over het job: one MPI_COMM_WORLD of size 3, allreduce ok" ||
      { fail "MPI over het job: '$got' (want '$want')"; cat "$T/mpi.out"; }
    check_srun_rc "MPI het step" "$T/mpi.out"
  else
    fail "mpicc hello.c"; cat "$T/mpicc.log"
  fi
elif ci_enforced; then
  fail "MPI het job cannot run (no mpicc or no pmix MPI plugin) and CI=true forbids skipping it"
else
  skip "MPI het job (no mpicc or no pmix MPI plugin)"
fi

# ---- stop, twice -----------------------------------------------------------------
pids=$(cat "$D"/munge/munged.pid "$D"/slurmctld.pid "$D"/slurmd.*.pid 2>/dev/null | tr '\n' ' ')
timeout 60 "$cluster" stop "$D" >"$T/stop1.log" 2>&1 && pass "stop" ||
  { fail "stop"; cat "$T/stop1.log"; }
timeout 60 "$cluster" stop "$D" >"$T/stop2.log" 2>&1 && pass "second stop is a no-op" ||
  { fail "second stop"; cat "$T/stop2.log"; }
if timeout 30 "$cluster" status "$D" >"$T/status2.log" 2>&1; then
  fail "status should exit non-zero after stop"
else
  pass "status non-zero after stop"
fi
alive=""
for p in $pids; do
  # A zombie (state Z) has exited; only its parent's reaping is pending.
  if [[ -d /proc/$p ]] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then
    alive+=" $p"
  fi
done
[[ -z "$alive" ]] && pass "no daemon left running (pids were: $pids)" ||
  fail "daemons still running:$alive"
strays=""
for f in /proc/[0-9]*/environ; do
  p=${f#/proc/}; p=${p%/environ}
  [[ $p == "$$" ]] && continue
  grep -qzxF "SLURM_CONF=$D/slurm.conf" "$f" 2>/dev/null &&
    grep -qz '^SLURM_JOB_ID=' "$f" 2>/dev/null &&
    ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && strays+=" $p"
done
[[ -z "$strays" ]] && pass "no job process of this cluster left" ||
  fail "job processes left:$strays"

if ((failures == 0)); then echo "ALL PASSED"; exit 0; fi
echo "$failures check(s) FAILED"; exit 1
