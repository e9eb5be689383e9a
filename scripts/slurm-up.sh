#!/bin/bash
# A single-node Slurm cluster on this host (Debian 12, root, no systemd):
# munge, slurmctld, slurmd. Idempotent.
#   scripts/slurm-up.sh               one node named after this host, 8 CPUs
#   scripts/slurm-up.sh --two-nodes   two emulated nodes n1, n2 on 127.0.0.1
# Switching between the two shapes restarts the daemons. PMIx is the default
# MPI plugin: that is what works with Debian's OpenMPI (srun --mpi=pmix).
# Stop with scripts/slurm-down.sh (only what this started, by pid).
set -euo pipefail
say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: $*" >&2; exit 1; }
LMPI_STATE=${LMPI_STATE:-/var/lib/lmpi-test}
LMPI_RUN=${LMPI_RUN:-/run/lmpi-test}
mkdir -p "$LMPI_STATE" "$LMPI_RUN"
mode=single
[ "${1:-}" = --two-nodes ] && mode=two
host=$(hostname)
conf=/etc/slurm/slurm.conf
alive() { [ -s "$1" ] && kill -0 "$(tr -dc 0-9 < "$1")" 2>/dev/null; }

# munge: the key, its directories, the daemon.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 400 /etc/munge/munge.key
chmod 700 /etc/munge
if ! munge -n 2>/dev/null | unmunge > /dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge > /dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge > /dev/null 2>&1 || die "munged does not answer"
    cp /run/munge/munged.pid "$LMPI_RUN/munged.pid" 2>/dev/null || pgrep -x munged > "$LMPI_RUN/munged.pid"
    say "munged started"
fi

# Already up in this shape? Nothing to do.
if [ "$(cat "$LMPI_STATE/slurm-mode" 2>/dev/null)" = "$mode" ] && alive "$LMPI_RUN/slurmctld.pid" \
    && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|allocated"; then
    say "already up ($mode)"
    exit 0
fi
bash "$(dirname "$0")/slurm-down.sh" --keep-munge > /dev/null

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ "$mode" = single ]; then
    nodes="NodeName=$host CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=16000 State=UNKNOWN"
    spool=/var/spool/slurmd; dpid=/run/slurmd.pid; dlog=/var/log/slurm/slurmd.log
else
    # Two slurmds on one host need their own ports, spool, pid and log files (%n).
    nodes="NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=17001-17002 CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1 RealMemory=8000 State=UNKNOWN"
    spool=/var/spool/slurmd.%n; dpid=/run/slurmd.%n.pid; dlog=/var/log/slurm/slurmd.%n.log
    mkdir -p /var/spool/slurmd.n1 /var/spool/slurmd.n2
fi
cat > "$conf" <<CONF
# Written by lmpi's scripts/slurm-up.sh ($mode): a test cluster on one host.
ClusterName=lmpitest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=$dpid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=$dlog
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
KillWait=30
$nodes
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
echo "$mode" > "$LMPI_STATE/slurm-mode"

# -c: start clean, without jobs or node states from an earlier shape.
slurmctld -c
for _ in $(seq 1 100); do [ -s /run/slurmctld.pid ] && scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
cp /run/slurmctld.pid "$LMPI_RUN/slurmctld.pid" || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
if [ "$mode" = single ]; then
    slurmd
    sleep 0.5; cp /run/slurmd.pid "$LMPI_RUN/slurmd.pid" || die "slurmd did not start (see $dlog)"
else
    for n in n1 n2; do
        slurmd -N "$n"
        sleep 0.5; cp "/run/slurmd.$n.pid" "$LMPI_RUN/slurmd.$n.pid" || die "slurmd -N $n did not start"
    done
fi
for i in $(seq 1 150); do
    states=$(sinfo -h -o %T 2>/dev/null | sort -u | tr '\n' ' ')
    case $states in
        "idle ") break ;;
        *down*|*drain*|*unk*|*inval*) [ $((i % 10)) = 0 ] && scontrol update nodename=ALL state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
sinfo -h -o %T | grep -q idle || die "nodes not idle: $(sinfo -h 2>&1 | head -3)"
say "up ($mode): $(sinfo -h -o '%D nodes, %c CPUs each, %T' | head -1)"
