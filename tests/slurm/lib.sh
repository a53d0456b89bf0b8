# Shared helpers for the job-template tests in tests/slurm/ (sourced, not run).
# shellcheck shell=bash
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   slurm_test_init NAME DEFAULT_PORT BUDGET_S "$@"  # skip (77; CI=true: fail) unless root + Slurm; hpcml; temp dir $T
#   start_cluster                            # own cluster in $T/cluster, stopped on exit
#   j=$(submit NAME TEMPLATE [OPT...] -- ARG...)  # sbatch OPTs jobs/TEMPLATE ARGs; log $T/NAME.out
#   wait_job "$j" SECONDS                    # poll until it ends; prints its JobState
#   finish                                   # ALL PASSED / N FAILED, exit 0/1
#
# The hpcml binary is the first argument of the test (CTest passes
# $<TARGET_FILE:hpcml>), else $HPCML_BIN, else build/bin/hpcml in the source tree.
# Env: HPCML_TEST_SLURM_PORT  slurmctld port; slurmds use +1, +2 [per test]
#      HPCML_TEST_KEEP=1      keep the temp dir (logs, run dirs) even when all passed
#      HPCML_TEST_BUDGET_S    override the test's overall time budget (seconds)
# Every wait here has a deadline; the cluster is stopped on every exit path.

set -uo pipefail

LIB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$LIB_HERE/../.." && pwd)
# shellcheck source=tests/support/ci.sh
source "$ROOT/tests/support/ci.sh"
CLUSTER_SH="$ROOT/jobs/local-cluster.sh"

failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
skip() { echo "SKIP: $*"; }
note() { echo "NOTE: $*"; }
elapsed() { echo "$((SECONDS - ${1:-0}))"; }

# slurm_test_init NAME DEFAULT_PORT BUDGET_S [HPCML_BINARY]
# BUDGET_S: after this many seconds the test fails and stops its cluster. Keep it
# well below the CTest TIMEOUT: CTest kills the script's process tree with
# SIGKILL, which would leave the (daemonized) Slurm daemons running.
slurm_test_init() {
  TEST_NAME=$1 PORT=${HPCML_TEST_SLURM_PORT:-$2} BUDGET=${HPCML_TEST_BUDGET_S:-$3}
  shift 3
  if [[ $(id -u) -ne 0 ]]; then cannot_run "$TEST_NAME" "needs root (the local cluster runs as root)"; fi
  export PATH="$PATH:/usr/sbin:/sbin"
  local b
  for b in slurmctld slurmd munged srun sbatch scontrol squeue; do
    command -v "$b" >/dev/null || cannot_run "$TEST_NAME" "'$b' not installed; run scripts/install-deps.sh"
  done
  HPCML_BIN=${1:-${HPCML_BIN:-$ROOT/build/bin/hpcml}}
  case "$HPCML_BIN" in /*) ;; *) HPCML_BIN="$PWD/$HPCML_BIN" ;; esac
  if [[ ! -x "$HPCML_BIN" ]]; then
    echo "FAIL: hpcml binary '$HPCML_BIN' not found; build it or pass its path as the first argument"
    exit 1
  fi
  export HPCML_BIN  # the templates read it; sbatch exports the environment
  T=$(mktemp -d "/tmp/hpcml-$TEST_NAME.XXXXXX")
  D="$T/cluster"
  trap _slurm_test_cleanup EXIT
  trap 'failures=$((failures + 1)); exit 130' INT TERM
  # Watchdog: SIGTERM to this shell after BUDGET s; the EXIT trap then cleans up.
  (
    sleeper=""
    trap 'kill $sleeper 2>/dev/null; exit 0' TERM
    sleep "$BUDGET" & sleeper=$!
    wait "$sleeper" || exit 0
    echo "FAIL: $TEST_NAME exceeded its ${BUDGET} s budget; stopping the cluster"
    kill -TERM $$
  ) &
  WATCHDOG=$!
  echo "$TEST_NAME: hpcml $HPCML_BIN, temp dir $T"
}

_slurm_test_cleanup() {
  kill "$WATCHDOG" 2>/dev/null
  if [[ -d "$D" ]]; then
    timeout 60 "$CLUSTER_SH" stop "$D" >"$T/stop-on-exit.log" 2>&1 ||
      { echo "FAIL: stopping the cluster (see below)"; cat "$T/stop-on-exit.log"; failures=$((failures + 1)); }
  fi
  if ((failures == 0)) && [[ "${HPCML_TEST_KEEP:-0}" != 1 ]]; then
    rm -rf "$T"
  else
    echo "kept $T (job logs *.out, run dirs, cluster logs in cluster/)"
  fi
}

# Starts a cluster in $D on ports PORT..PORT+2; when a port is taken (another
# cluster, a parallel test), tries PORT+100 and PORT+200. Exits 1 on failure.
start_cluster() {
  local try p
  for try in 0 1 2; do
    p=$((PORT + 100 * try))
    if HPCML_SLURMCTLD_PORT=$p HPCML_SLURMD_PORT=$((p + 1)) \
       timeout 120 "$CLUSTER_SH" start "$D" >"$T/start.log" 2>&1; then
      # shellcheck disable=SC1091
      source "$D/env"
      pass "cluster up in $D (ports $p-$((p + 2)))"
      return 0
    fi
    grep -q "is in use" "$T/start.log" || break
  done
  fail "starting the local cluster (output below)"
  cat "$T/start.log"
  exit 1
}

# submit NAME TEMPLATE [SBATCH_OPTION...] -- [ARG...]: submits jobs/TEMPLATE
# (or TEMPLATE itself when it holds a '/') from $T (the job's working dir, so relative run dirs land in $T), log in
# $T/NAME.out; ARGs go to the template (and so to hpcml). Prints the job id;
# on failure prints nothing and returns 1.
submit() {
  local name=$1 template=$2 out opts=()
  shift 2
  while (($#)) && [[ "$1" != -- ]]; do opts+=("$1"); shift; done
  (($#)) && shift
  [[ "$template" == */* ]] || template="$ROOT/jobs/$template"
  if out=$(cd "$T" && timeout 30 sbatch --parsable -o "$T/$name.out" "${opts[@]}" \
             "$template" "$@" 2>&1); then
    echo "${out%%;*}"
  else
    echo "sbatch $template: $out" >&2
    return 1
  fi
}

# job_field JOB FIELD: one field of `scontrol show job` (the first component's
# for a het job), e.g. JobState, Reason, ExitCode, Restarts.
job_field() {
  timeout 10 scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | grep -m1 "^$2=" | cut -d= -f2-
}

# wait_job JOB SECONDS: polls every 0.5 s until the job has ended (or the
# deadline passed) and prints its last JobState.
wait_job() {
  local job=$1 end=$((SECONDS + $2)) st=""
  while :; do
    st=$(job_field "$job" JobState)
    case "$st" in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|BOOT_FAIL|DEADLINE) break ;;
    esac
    ((SECONDS < end)) || break
    sleep 0.5
  done
  echo "${st:-UNKNOWN}"
}

# wait_for_step RUN_DIR STEP SECONDS [JOB]: waits until RUN_DIR/metrics.jsonl
# has a row with "step" >= STEP (or JOB has ended); prints the last step seen
# (0 if none).
wait_for_step() {
  local end=$((SECONDS + $3)) s=0 st
  while ((SECONDS < end)); do
    s=$(last_step "$1")
    ((s >= $2)) && break
    if [[ -n "${4:-}" ]]; then
      st=$(job_field "$4" JobState)
      [[ "$st" == PENDING || "$st" == RUNNING || "$st" == CONFIGURING ]] || break
    fi
    sleep 0.2
  done
  echo "$s"
}

last_step() {  # RUN_DIR
  local s
  s=$(grep -o '"step": *[0-9]*' "$1/metrics.jsonl" 2>/dev/null | tail -1 | tr -dc '0-9')
  echo "${s:-0}"
}

# json_field FILE KEY: a top-level string or number value of a JSON file.
json_field() {
  sed -n "s/^ *\"$2\": *\"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" 2>/dev/null | head -1
}

# info_ranks LOG: the rank table of the first `hpcml info` in a job log, one
# "rank node het" line per rank.
info_ranks() {
  awk '/^ *rank +local +node +het/ {t = 1; next}
       t && $1 ~ /^[0-9]+$/ {print $1, $3, $4; next}
       t {exit}' "$1"
}

# pids_of_job JOB [PROCID]: pids of this cluster's hpcml processes of JOB
# (optionally only task PROCID), from /proc/*/environ.
pids_of_job() {
  local f p
  for f in /proc/[0-9]*/environ; do
    p=${f#/proc/}; p=${p%/environ}
    [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == hpcml ]] || continue
    grep -qzxF "SLURM_CONF=$SLURM_CONF" "$f" 2>/dev/null || continue
    grep -qzxF "SLURM_JOB_ID=$1" "$f" 2>/dev/null || continue
    if [[ -n "${2:-}" ]]; then grep -qzxF "SLURM_PROCID=$2" "$f" 2>/dev/null || continue; fi
    grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && continue
    echo "$p"
  done
}

show_log() {  # FILE [LINES]
  echo "---- $1 (last ${2:-40} lines) ----"
  tail -n "${2:-40}" "$1" 2>/dev/null || echo "(missing)"
  echo "----"
}

finish() {
  if ((failures == 0)); then echo "ALL PASSED ($TEST_NAME, $SECONDS s)"; exit 0; fi
  echo "$failures check(s) FAILED ($TEST_NAME, $SECONDS s)"; exit 1
}

# check_het_job JOB TEMPLATE PROOF T0: a het job of TEMPLATE reached COMPLETED, or did
# its work (the file PROOF is there) before the Slurm < 24.11 pmix het-step hang, which
# the template's guard ends (the exit code is then lost by design); and its two
# components ran on partitions cpu and gpu. The log is $T/het.out.
check_het_job() {
  local j=$1 template=$2 proof=$3 t0=$4 state parts
  state=$(wait_job "$j" 150)
  if [[ "$state" == COMPLETED ]]; then
    pass "$template: het job $j COMPLETED in $(elapsed "$t0") s"
  elif grep -q 'srun .* still runs .* after its step ended' "$T/het.out" && [[ -s "$proof" ]]; then
    pass "$template: het job $j did its work ($(basename "$proof")), then srun hung and the guard ended it"
  else
    fail "$template: het job $j ended in state '$state' (want COMPLETED), ExitCode=$(job_field "$j" ExitCode)"
    show_log "$T/het.out"
  fi
  parts=$(timeout 10 scontrol show job "$j" | grep -o ' Partition=[a-z0-9]*' | tr -d ' ' | tr '\n' ' ')
  [[ "$parts" == "Partition=cpu Partition=gpu " ]] && pass "two components: $parts" ||
    fail "components' partitions: '$parts' (want cpu, gpu)"
}

# check_het_exit LOG WHAT: a het template's log says "WHAT exited with code 0", e.g.
# WHAT="campaign-service.sbatch: hpcml infer". Code 124 passes too when the line just
# before it says the guard killed that step's hung srun (the Slurm < 24.11 pmix
# het-step hang): the code is then lost by design, and the caller's other checks
# (outputs, summary.json) prove the step's work.
check_het_exit() {
  local log=$1 what=$2
  if grep -q "^$what exited with code 0" "$log"; then
    pass "log: ${what##*: } exited 0"
  elif grep -B1 "^$what exited with code 124" "$log" | grep -q 'exit code is lost (srun was killed)'; then
    pass "log: ${what##*: } ended, its exit code lost to the srun guard (124)"
  else
    fail "log: no '$what exited with code 0' line: '$(grep -m1 "^$what exited with code" "$log")'"
  fi
}
