#!/usr/bin/env bash
# A throwaway one-node SLURM cluster on this machine, for vitcli's `slurm` tests and for trying
# `hydra/launcher=slurm` or `sbatch docs/slurm/train.sbatch` by hand.
#
#   eval "$(tests/slurm/cluster.sh up)"   # installs slurm-wlm + munge when missing (root, apt), starts
#                                          # munged, slurmctld and slurmd, waits for the node to be idle,
#                                          # prints `export SLURM_CONF=...` for the clients
#   sbatch --wrap 'srun hostname'; squeue
#   tests/slurm/cluster.sh status          # exit 0 when up, 3 when down
#   tests/slurm/cluster.sh down            # cancels its jobs, stops exactly the pids it started
#
# Everything lives in $VITCLI_SLURM_DIR (default /tmp/vitcli-slurm-cluster): slurm.conf (read
# through SLURM_CONF by daemons and clients), state, spool, logs, and munged's own key, socket,
# pid and seed files. /etc/slurm and /etc/munge are never read or written, so this can run on a
# real cluster's login node without touching its setup. `up` and `down` are idempotent.
#
# Environment: VITCLI_SLURM_DIR (where), VITCLI_SLURM_CPUS (node CPUs, default max(nproc, 2)),
# VITCLI_SLURM_PORT (first port tried for slurmctld; slurmd takes the next free one).
set -euo pipefail

DIR="${VITCLI_SLURM_DIR:-${TMPDIR:-/tmp}/vitcli-slurm-cluster}"
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
SOCKET="$MUNGE_DIR/munge.socket"
# daemon name -> pid file (written by the daemon itself; `down` checks the pid still runs that binary)
declare -A PID_FILES=([munged]="$MUNGE_DIR/munged.pid" [slurmctld]="$DIR/slurmctld.pid" [slurmd]="$DIR/slurmd.pid")
ORDER_UP=(munged slurmctld slurmd)
ORDER_DOWN=(slurmd slurmctld munged)

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit "${2:-1}"; }

# pid of a daemon we started, if it is still alive and still that program
pid_of() {
    local name=$1 file=${PID_FILES[$1]} pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    echo "$pid"
}

all_running() {
    local name
    for name in "${ORDER_UP[@]}"; do pid_of "$name" >/dev/null || return 1; done
}

node_state() { SLURM_CONF=$CONF timeout 10 sinfo -h -N -o %t 2>/dev/null | head -1; }

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v srun >/dev/null \
        || missing+=(slurm-wlm)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "needs ${missing[*]} and there is no apt-get to install them" 4
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}" >"$DIR.apt.log" 2>&1; then
        apt-get update -q >>"$DIR.apt.log" 2>&1 || true
        apt-get install -y -q "${missing[@]}" >>"$DIR.apt.log" 2>&1 \
            || die "apt-get install ${missing[*]} failed (log: $DIR.apt.log)" 4
    fi
}

free_port() {  # first port >= $1 that nothing listens on
    local port=$1
    while ss -Htln "sport = :$port" 2>/dev/null | grep -q .; do port=$((port + 1)); done
    echo "$port"
}

write_config() {
    local host cpus mem_mb ctld_port slurmd_port resv_low
    host=$(hostname -s)
    cpus=${VITCLI_SLURM_CPUS:-$(($(nproc) > 2 ? $(nproc) : 2))}
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    ctld_port=$(free_port "${VITCLI_SLURM_PORT:-16817}")
    slurmd_port=$(free_port $((ctld_port + 1)))
    resv_low=$((ctld_port + 100))
    cat >"$CONF" <<EOF
# written by tests/slurm/cluster.sh: a one-node test cluster; everything under $DIR
ClusterName=vitcli-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs wait cred_expire + 1 s before they may start again (default 120 s)
AuthInfo=socket=$SOCKET,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=${PID_FILES[slurmctld]}
SlurmdPidFile=${PID_FILES[slurmd]}
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
# ports SLURM may reserve for a step (srun --resv-ports, SLURM_STEP_RESV_PORTS)
MpiParams=ports=$resv_low-$((resv_low + 999))
ReturnToService=2
# declared CPUs are trusted (a 1-core machine can still hold a 2-task job); no cgroups needed
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
# a test cluster: schedule pending jobs (requeued ones) within seconds, not every minute
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=600

InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munged() {
    mkdir -p "$MUNGE_DIR"
    # munged insists: key readable by its user only, its dirs not writable by others
    local user=root
    id munge >/dev/null 2>&1 && user=munge
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1 count=1024 status=none
    chown -R "$user:" "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR"
    chmod 0400 "$MUNGE_DIR/munge.key"
    local args=(--key-file="$MUNGE_DIR/munge.key" --socket="$SOCKET" --pid-file="${PID_FILES[munged]}"
                --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed")
    if [[ $user == root ]]; then
        munged --force "${args[@]}"
    else
        runuser -u munge -- munged "${args[@]}"
    fi
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" && return 0
        sleep 0.25
    done
    return 1
}

node_idle() { [[ $(node_state) == idle ]]; }

cmd_up() {
    if all_running && node_idle; then
        say "already up ($DIR)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "must run as root (slurmd launches jobs as their user; munged runs as user munge)" 4
    cmd_down >/dev/null 2>&1 || true  # half-started leftovers of an earlier `up`
    install_packages
    rm -rf "$DIR"
    mkdir -p "$DIR"/{state,spool,log}
    chmod 0755 "$DIR"
    write_config
    export SLURM_CONF=$CONF
    start_munged
    wait_for 10 munged test -S "$SOCKET" || die "munged did not start (see $MUNGE_DIR/munged.log)"
    slurmctld -i || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
    slurmd || die "slurmd did not start (see $DIR/log/slurmd.log)"
    if ! wait_for 60 node node_idle; then
        SLURM_CONF=$CONF sinfo -N >&2 || true
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        die "the node did not become idle within 60 s (logs under $DIR/log)"
    fi
    say "up: $(SLURM_CONF=$CONF sinfo -h -N -o '%N %c CPUs %m MB %t')  (SLURM_CONF=$CONF)"
    echo "export SLURM_CONF=$CONF"
}

stop_pid() {  # TERM, then KILL after 10 s
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
    local name pid
    if pid_of slurmctld >/dev/null && [[ -r $CONF ]]; then
        # jobs' processes belong to slurmstepd, not to slurmd: cancel them while slurmctld can
        SLURM_CONF=$CONF timeout 20 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        wait_for 20 jobs bash -c "[[ -z \$(SLURM_CONF='$CONF' squeue -h -o %i 2>/dev/null) ]]" || true
    fi
    for name in "${ORDER_DOWN[@]}"; do
        if pid=$(pid_of "$name"); then
            say "stopping $name (pid $pid)"
            stop_pid "$pid"
        fi
    done
    say "down ($DIR kept for its logs)"
}

cmd_status() {
    local name pid up=0
    for name in "${ORDER_UP[@]}"; do
        if pid=$(pid_of "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; up=3; fi
    done
    if ((up == 0)); then
        SLURM_CONF=$CONF sinfo -N || up=3
        echo "export SLURM_CONF=$CONF"
    fi
    return $up
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: $0 up|down|status" 2 ;;
esac
