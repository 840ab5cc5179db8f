#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests and for trying
# `clisc slurm submit` without a real cluster. Run as root (munged and
# slurmd need it); Debian's `slurm-wlm` and `munge` must be installed
# (scripts/ci-deps.sh installs them).
#
#   bash scripts/slurm-local.sh start   write the config, start munged,
#                                       slurmctld and slurmd, wait until
#                                       the node is idle (default)
#   bash scripts/slurm-local.sh stop    stop the daemons this script started
#
# Everything lives in $CLISC_SLURM_DIR (default /tmp/clisc-slurm): the
# slurm.conf, state, spool, logs and pid files. The system's /etc/slurm is
# not touched, so clients need `SLURM_CONF=$CLISC_SLURM_DIR/slurm.conf`
# (printed at the end). Starting an already running cluster only waits for
# it, so the script is safe to call from every test.
set -euo pipefail

dir="${CLISC_SLURM_DIR:-/tmp/clisc-slurm}"
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
action="${1:-start}"

fail() {
    echo "slurm-local: $*" >&2
    for log in "$dir/slurmctld.log" "$dir/slurmd.log" "$dir/munged.log"; do
        if [ -s "$log" ]; then
            echo "--- last lines of $log" >&2
            tail -n 15 "$log" >&2
        fi
    done
    exit 1
}

running() { # pid file -> true when that process is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop() {
    for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
        if running "$pid_file"; then
            kill "$(cat "$pid_file")"
        fi
    done
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi
[ "$action" = start ] || fail "unknown action \`$action\` (start or stop)"
[ "$(id -u)" = 0 ] || fail "must run as root (munged and slurmd need it)"
for tool in munged slurmctld slurmd sinfo sbatch; do
    command -v "$tool" >/dev/null || fail "\`$tool\` is not installed: apt-get install slurm-wlm munge (scripts/ci-deps.sh does)"
done

mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
node="$(hostname -s)"
cpus="$(nproc)"
# Leave some memory to the system; Slurm refuses a node reporting less
# than its configured RealMemory.
memory_mb="$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)"
cat >"$conf.new" <<EOF
# Written by scripts/slurm-local.sh: one node on the loopback interface.
ClusterName=clisc-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CryptoType=crypto/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs that ask for no memory get 1 GiB per CPU, not the whole node.
DefMemPerCPU=1024
MpiDefault=none
ReturnToService=2
MaxArraySize=10001
# Scheduling quickly matters more than anything else for short test jobs.
SchedulerParameters=defer_batch=0,sched_min_interval=0
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mv "$conf.new" "$conf"

munge_socket="$dir/munge/munge.socket"
if ! running "$dir/munged.pid"; then
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 ||
            fail "/etc/munge/munge.key is missing and mungekey could not create it"
    fi
    # The daemons detach; their output goes to their log files, so the
    # caller's pipes are not held open.
    munged --force --socket="$munge_socket" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munge/munged.seed" \
        </dev/null >/dev/null 2>&1 || fail "munged did not start"
fi
if ! running "$dir/slurmctld.pid"; then
    slurmctld -f "$conf" </dev/null >/dev/null 2>&1 || fail "slurmctld did not start"
fi
if ! running "$dir/slurmd.pid"; then
    slurmd -f "$conf" </dev/null >/dev/null 2>&1 || fail "slurmd did not start"
fi

for _ in $(seq 1 60); do
    state="$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null || true)"
    case "$state" in
        idle | mixed | allocated)
            echo "slurm-local: node $node is $state; use SLURM_CONF=$conf" >&2
            exit 0
            ;;
        down* | drain*)
            scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
            ;;
    esac
    sleep 1
done
fail "node $node did not become idle within 60 s (last state: ${state:-no answer from slurmctld})"
