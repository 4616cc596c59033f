#!/usr/bin/env bash
# A private one-node Slurm cluster for the tests: munged, slurmctld and slurmd with
# every file (key, sockets, state, logs, slurm.conf) under DIR, on ports given by the
# caller, so it neither needs nor disturbs a system Slurm.
#
#     cluster.sh start DIR CTLD_PORT SLURMD_PORT   # prints SLURM_CONF=DIR/slurm.conf
#     cluster.sh stop DIR
#
# Debian's slurm-wlm and munge must be installed (scripts/test does). Any
# failure exits non-zero with the daemons' logs: the tests fail, never skip.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR [CTLD_PORT SLURMD_PORT]}
dir=$(realpath -m "${2:?state folder}")

stop() {
    for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    # slurmctld saves state on SIGTERM; give the daemons a moment before the caller
    # removes their folder.
    for _ in $(seq 50); do
        alive=0
        for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
            [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
}

logs() {
    for f in "$dir"/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        tail -n 30 "$f" >&2
    done
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "cluster.sh: unknown command $cmd" >&2; exit 2 ;;
esac
ctld_port=${3:?slurmctld port}
slurmd_port=${4:?slurmd port}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "cluster.sh: Slurm (slurm-wlm, munge) is not installed: scripts/test installs it" >&2
    exit 1
fi

mkdir -p "$dir"/{munge,ctld,spool}
chmod 700 "$dir"/munge
head -c 1024 /dev/urandom >"$dir"/munge/munge.key
chmod 400 "$dir"/munge/munge.key
# --force: munged refuses a key or socket folder it does not consider private enough
# (a temporary folder's parents are world-writable).
munged --force --key-file="$dir"/munge/munge.key --socket="$dir"/munge/munge.socket \
    --pid-file="$dir"/munged.pid --log-file="$dir"/munged.log --seed-file="$dir"/munge/seed \
    || { logs; exit 1; }

host=$(hostname -s)
# Eight CPUs whatever the machine has (config_overrides lets slurmd accept it): the
# tests run a sweep job and elastic workers beside it on two cores.
cpus=8
mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
user=$(id -un)
cat >"$dir"/slurm.conf <<CONF
ClusterName=ridgeline-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups in a container: track processes by their parents, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF" -i || { logs; exit 1; }
slurmd -f "$SLURM_CONF" || { logs; exit 1; }

# Ready when the node accepts jobs.
for _ in $(seq 300); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
    case $state in
    idle | mixed | allocated) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;;
    esac
    sleep 0.2
done
echo "cluster.sh: the node never became idle (state: ${state:-none})" >&2
sinfo -N -l >&2 || true
logs
exit 1
