#!/usr/bin/env bash
# Stands up (and tears down) a two-node Slurm cluster on this one machine, as root,
# so the sbatch templates in jobs/ and heterogeneous (cpu + gpu) jobs can be tried
# on a laptop or CI box. See docs/slurm-local-cluster.md.
#
# Everything (config, munge key and socket, spool dirs, pid files, logs) lives in
# one state directory; nothing in /etc, /run or /var/log is touched.
set -euo pipefail

PROG=local-cluster.sh

usage() {
  cat <<EOF
Usage: jobs/$PROG start  [DIR]   start munged, slurmctld and slurmd nodes cpu1 and gpu1
       jobs/$PROG stop   [DIR]   stop the daemons that 'start' started (safe to repeat)
       jobs/$PROG status [DIR]   show which daemons run, plus sinfo; exit 0 when all are up
       jobs/$PROG --help

A throw-away two-node Slurm cluster on localhost, for trying hpcml's job scripts.
Must run as root. Installs nothing: run scripts/install-deps.sh first.

DIR is the state directory (default: \${HPCML_CLUSTER_DIR:-/tmp/hpcml-cluster}).
It holds slurm.conf, mpi.conf, the munge key/socket/log, per-node spool dirs,
pid files and logs (slurmctld.log, slurmd.cpu1.log, slurmd.gpu1.log, munged.log),
and an 'env' file. After 'start':

    source DIR/env            # exports SLURM_CONF (and HPCML_CLUSTER_DIR)
    sinfo; srun -p cpu -n 2 hostname
    sbatch jobs/some-job.sbatch

Cluster layout:
    partition cpu (default): node cpu1, 4 CPUs, 8000 MB
    partition gpu:           node gpu1, 4 CPUs, 8000 MB (no actual GPU, no GRES)
    MpiDefault=pmix, so 'srun --mpi=pmix --het-group=0,1' puts all ranks of a
    het job in one MPI_COMM_WORLD. Het jobs start within ~1-2 s (bf_interval=1).
    gpu1's slurmd runs in its own mount namespace with DIR/pmixcli-gpu1 bound
    over DIR/pmixcli, so the two nodes' PMIx client dirs do not collide.
    Slurm < 24.11: about 1 in 50 het-step sruns with pmix hangs after all tasks
    exited (upstream race); bound such sruns with 'timeout -k'.

start   Fails with a one-line error if any daemon of DIR is already running
        (it is not idempotent: run 'stop' first). Regenerates the configs,
        keeps an existing munge key, clears old Slurm job/node state, and waits
        until sinfo shows both nodes idle. On timeout it names what did not come
        up, prints the tail of its log, stops what it started and exits 1.
stop    Cancels this cluster's jobs, then sends SIGTERM to each daemon by the
        pid recorded in DIR (SIGKILL after a deadline), then ends job processes
        that escaped scancel (their environment holds this SLURM_CONF and a
        SLURM_JOB_ID). Never kills by name. Running it when nothing runs is
        fine (exit 0).
status  Exit 0 when munged, slurmctld and both slurmds run; 1 otherwise.

Environment:
    HPCML_CLUSTER_DIR      default state directory        [/tmp/hpcml-cluster]
    HPCML_SLURMCTLD_PORT   slurmctld port                 [6817]
    HPCML_SLURMD_PORT      slurmd port of cpu1; gpu1 uses this +1  [6818]
    HPCML_CLUSTER_TIMEOUT  seconds to wait for the nodes to be idle [60]

Limits: everything runs on one machine; the "gpu" node has no GPU; daemons and
jobs run as root. Not for production use.
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }
log() { echo "$PROG: $*"; }

# ---- arguments ----------------------------------------------------------------
cmd=${1:-}
case "$cmd" in
  -h|--help|help) usage; exit 0 ;;
  start|stop|status) ;;
  "") usage >&2; exit 2 ;;
  *) echo "$PROG: unknown command '$cmd' (try --help)" >&2; exit 2 ;;
esac
shift
[[ $# -le 1 ]] || die "too many arguments (try --help)"
DIR=${1:-${HPCML_CLUSTER_DIR:-/tmp/hpcml-cluster}}
# Absolute path: daemons chdir, and the env file must work from anywhere.
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR=${DIR%/}

CTLD_PORT=${HPCML_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${HPCML_SLURMD_PORT:-6818}
TIMEOUT=${HPCML_CLUSTER_TIMEOUT:-60}
NODES=(cpu1 gpu1)

CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
MUNGE_PID="$DIR/munge/munged.pid"
CTLD_PID="$DIR/slurmctld.pid"
slurmd_pid_file() { echo "$DIR/slurmd.$1.pid"; }

# ---- process helpers ----------------------------------------------------------
# Prints the pid from a pid file if that process is alive and is the expected
# program (guards against pid reuse after a crash). Empty output otherwise.
live_pid() {  # pidfile expected-comm
  local f=$1 comm=$2 pid
  [[ -s "$f" ]] || return 0
  pid=$(tr -dc '0-9' <"$f")
  [[ -n "$pid" && -d /proc/$pid ]] || return 0
  [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$comm" ]] || return 0
  echo "$pid"
}

# name | pidfile | comm | log, for every daemon, in start order.
daemons() {
  echo "munged|$MUNGE_PID|munged|$DIR/munge/munged.log"
  echo "slurmctld|$CTLD_PID|slurmctld|$DIR/slurmctld.log"
  local n
  for n in "${NODES[@]}"; do
    echo "slurmd($n)|$(slurmd_pid_file "$n")|slurmd|$DIR/slurmd.$n.log"
  done
}

# Waits (up to $2 s) for a pid file to name a live process of the given comm.
wait_pidfile() {  # pidfile comm seconds
  local end=$((SECONDS + $3))
  while ((SECONDS < end)); do
    [[ -n "$(live_pid "$1" "$2")" ]] && return 0
    sleep 0.2
  done
  return 1
}

port_in_use() {  # port
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

show_log_tail() {  # file
  if [[ -s "$1" ]]; then
    echo "---- last lines of $1 ----" >&2
    tail -n 20 "$1" >&2
    echo "----" >&2
  else
    echo "($1 is empty or missing)" >&2
  fi
}

# ---- stop ---------------------------------------------------------------------
# Pids of live job processes left over from this cluster: their environment
# has our SLURM_CONF and a SLURM_JOB_ID. With proctrack/linuxproc a process
# whose parent died escapes scancel; e.g. an srun hung at exit (Slurm < 24.11
# pmix het-step bug) outlives its job. Never lists this script or its ancestors.
stray_pids() {
  local anc=" " p=$$ pid f
  while [[ -n "$p" && "$p" != 0 ]]; do
    anc+="$p "
    p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || true)
    [[ "$p" == 1 ]] && break
  done
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [[ "$anc" == *" $pid "* ]] && continue
    if grep -qzxF "SLURM_CONF=$CONF" "$f" 2>/dev/null &&
       grep -qz '^SLURM_JOB_ID=' "$f" 2>/dev/null; then
      grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && continue  # exited
      echo "$pid"
    fi
  done
}

kill_strays() {
  local pids p end
  pids=$(stray_pids | tr '\n' ' ')
  [[ -n "${pids// /}" ]] || return 0
  log "ending leftover job processes of this cluster: $pids"
  kill -TERM $pids 2>/dev/null || true
  end=$((SECONDS + 5))
  while ((SECONDS < end)) && [[ -n "$(stray_pids)" ]]; do sleep 0.2; done
  pids=$(stray_pids | tr '\n' ' ')
  if [[ -n "${pids// /}" ]]; then
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
}

do_stop() {
  [[ -d "$DIR" ]] || { log "nothing to stop in $DIR"; return 0; }
  local ctld
  ctld=$(live_pid "$CTLD_PID" slurmctld)
  if [[ -n "$ctld" && -f "$CONF" ]]; then
    # Cancel jobs first so slurmstepd processes end with their jobs instead
    # of outliving the slurmds.
    local jobs
    jobs=$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [[ -n "$jobs" ]]; then
      log "cancelling jobs: $(echo $jobs)"
      SLURM_CONF="$CONF" timeout 10 scancel $jobs 2>/dev/null || true
      local end=$((SECONDS + 15))
      while ((SECONDS < end)) &&
            [[ -n "$(SLURM_CONF="$CONF" timeout 5 squeue -h -o %A 2>/dev/null || true)" ]]; do
        sleep 0.5
      done
    fi
  fi
  # Reverse start order: slurmds, slurmctld, then munged (the others need it).
  local lines=() line name pidfile comm logf pid stopped=0
  mapfile -t lines < <(daemons)
  local i
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    IFS='|' read -r name pidfile comm logf <<<"${lines[$i]}"
    pid=$(live_pid "$pidfile" "$comm")
    if [[ -z "$pid" ]]; then
      rm -f "$pidfile"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 15))
    while ((SECONDS < end)) && [[ -d /proc/$pid ]]; do sleep 0.2; done
    if [[ -d /proc/$pid ]]; then
      echo "$PROG: $name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      end=$((SECONDS + 5))
      while ((SECONDS < end)) && [[ -d /proc/$pid ]]; do sleep 0.2; done
    fi
    [[ -d /proc/$pid ]] && die "$name (pid $pid) did not exit"
    rm -f "$pidfile"
    log "stopped $name (pid $pid)"
    stopped=$((stopped + 1))
  done
  kill_strays
  ((stopped > 0)) || log "nothing running in $DIR"
  return 0
}

# ---- status -------------------------------------------------------------------
do_status() {
  local line name pidfile comm logf pid up=0 total=0
  while IFS='|' read -r name pidfile comm logf; do
    total=$((total + 1))
    pid=$(live_pid "$pidfile" "$comm")
    if [[ -n "$pid" ]]; then
      printf '%-14s running (pid %s)\n' "$name" "$pid"
      up=$((up + 1))
    else
      printf '%-14s not running\n' "$name"
    fi
  done < <(daemons)
  if [[ -n "$(live_pid "$CTLD_PID" slurmctld)" ]]; then
    echo
    SLURM_CONF="$CONF" timeout 10 sinfo || true
  fi
  if ((up == total)); then
    echo; echo "all $total daemons up; use: source $DIR/env"
    return 0
  fi
  echo; echo "$up of $total daemons up in $DIR"
  return 1
}

# ---- start --------------------------------------------------------------------
write_configs() {
  local host
  host=$(hostname -s)
  cat >"$CONF" <<EOF
# Generated by jobs/$PROG; regenerated on every start. Local test cluster only.
ClusterName=hpcml-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
SlurmdParameters=config_overrides
# Without a default, each job asks for a whole node's memory and the two
# components of a het job wait forever on "Resources".
DefMemPerCPU=500
ReturnToService=2
# Het jobs are started by the backfill scheduler: run it every second.
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,bf_hetjob_immediate,sched_interval=2
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmctldPidFile=$CTLD_PID
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmdLogFile=$DIR/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=cpu1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=4 RealMemory=8000 State=UNKNOWN
NodeName=gpu1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + 1)) CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=cpu Nodes=cpu1 Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=gpu1 MaxTime=INFINITE State=UP
EOF
  # Both slurmds share one file system; their PMIx client dirs would collide
  # ("Cannot create client cli tmpdir ... File exists"), so gpu1 gets its own
  # directory bind-mounted over this path (see start_slurmd).
  cat >"$DIR/mpi.conf" <<EOF
PMIxCliTmpDirBase=$DIR/pmixcli
EOF
  cat >"$DIR/env" <<EOF
# Generated by jobs/$PROG start. Use: source $DIR/env
export SLURM_CONF=$CONF
export HPCML_CLUSTER_DIR=$DIR
EOF
}

start_munged() {
  local key="$DIR/munge/munge.key"
  if [[ ! -s "$key" ]]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$key" >/dev/null
    else
      dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    fi
  fi
  chmod 0400 "$key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # --force: the state dir usually sits under the world-writable /tmp, which
  # munged's security checks otherwise reject.
  munged --force --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
    --log-file="$DIR/munge/munged.log" --key-file="$key" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/munge/munged.log" 2>&1 ||
    fail_start munged "$DIR/munge/munged.log"
  wait_pidfile "$MUNGE_PID" munged 10 || fail_start munged "$DIR/munge/munged.log"
  local end=$((SECONDS + 10))
  until timeout 5 munge --socket="$MUNGE_SOCKET" -n 2>/dev/null |
        timeout 5 unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; do
    ((SECONDS < end)) || fail_start "munged (munge -n | unmunge)" "$DIR/munge/munged.log"
    sleep 0.3
  done
}

start_slurmd() {  # node
  local n=$1
  mkdir -p "$DIR/spool/$n"
  rm -f "$(slurmd_pid_file "$n")"
  if [[ "$n" == "${NODES[0]}" ]]; then
    slurmd -c -f "$CONF" -N "$n" </dev/null >>"$DIR/slurmd.$n.log" 2>&1 ||
      fail_start "slurmd($n)" "$DIR/slurmd.$n.log"
  else
    # Own mount namespace, so this node's PMIx client dir is a private bind.
    mkdir -p "$DIR/pmixcli-$n"
    unshare -m --propagation private sh -c \
      'mount --bind "$1" "$2" && exec slurmd -c -f "$3" -N "$4"' \
      sh "$DIR/pmixcli-$n" "$DIR/pmixcli" "$CONF" "$n" \
      </dev/null >>"$DIR/slurmd.$n.log" 2>&1 ||
      fail_start "slurmd($n) (unshare/mount --bind)" "$DIR/slurmd.$n.log"
  fi
  wait_pidfile "$(slurmd_pid_file "$n")" slurmd 15 ||
    fail_start "slurmd($n)" "$DIR/slurmd.$n.log"
}

fail_start() {  # what logfile
  echo "$PROG: start failed: $1 did not come up (state dir $DIR)" >&2
  show_log_tail "$2"
  do_stop >&2 || true
  exit 1
}

do_start() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (SlurmUser=root, mount namespaces)"
  local b
  export PATH="$PATH:/usr/sbin:/sbin"  # daemons live in sbin
  # mungekey is optional (dd is the fallback).
  for b in munged munge unmunge slurmctld slurmd sinfo squeue scancel unshare mount; do
    command -v "$b" >/dev/null 2>&1 ||
      die "'$b' not found; run scripts/install-deps.sh (needs slurm-wlm and munge)"
  done
  # Refuse to start over a running cluster (not idempotent by design: a second
  # start would regenerate the config under live daemons).
  local line name pidfile comm logf pid running=()
  while IFS='|' read -r name pidfile comm logf; do
    pid=$(live_pid "$pidfile" "$comm")
    if [[ -n "$pid" ]]; then running+=("$name=$pid"); fi
  done < <(daemons)
  ((${#running[@]} == 0)) ||
    die "already running in $DIR (${running[*]}); run: jobs/$PROG stop $DIR"
  local p
  for p in "$CTLD_PORT" "$SLURMD_PORT" $((SLURMD_PORT + 1)); do
    if port_in_use "$p"; then
      die "port $p on 127.0.0.1 is in use; set HPCML_SLURMCTLD_PORT / HPCML_SLURMD_PORT"
    fi
  done

  mkdir -p "$DIR/munge" "$DIR/state" "$DIR/pmixcli"
  chmod 0755 "$DIR/munge"
  write_configs
  rm -rf "${DIR:?}/state/"*
  # Fresh logs per start, so a failure's log tail is about this start.
  local f
  for f in "$DIR/munge/munged.log" "$DIR/slurmctld.log" "$DIR"/slurmd.*.log; do
    if [[ -f "$f" ]]; then mv -f "$f" "$f.old"; fi
  done

  log "starting munged (socket $MUNGE_SOCKET)"
  start_munged
  log "starting slurmctld (port $CTLD_PORT)"
  rm -f "$CTLD_PID"
  slurmctld -c -f "$CONF" </dev/null >>"$DIR/slurmctld.log" 2>&1 ||
    fail_start slurmctld "$DIR/slurmctld.log"
  wait_pidfile "$CTLD_PID" slurmctld 15 || fail_start slurmctld "$DIR/slurmctld.log"
  local n
  for n in "${NODES[@]}"; do
    log "starting slurmd $n"
    start_slurmd "$n"
  done

  log "waiting up to ${TIMEOUT}s for nodes ${NODES[*]} to be idle"
  local end=$((SECONDS + TIMEOUT)) states not_idle
  while :; do
    states=$(SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u || true)
    not_idle=()
    for n in "${NODES[@]}"; do
      grep -qx "$n idle" <<<"$states" || not_idle+=("$n")
    done
    ((${#not_idle[@]} == 0)) && break
    if ((SECONDS >= end)); then
      echo "$PROG: start failed: node(s) ${not_idle[*]} not idle after ${TIMEOUT}s (sinfo: $(echo $states))" >&2
      show_log_tail "$DIR/slurmd.${not_idle[0]}.log"
      show_log_tail "$DIR/slurmctld.log"
      do_stop >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  SLURM_CONF="$CONF" timeout 10 sinfo
  log "cluster up; use: source $DIR/env"
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
esac
