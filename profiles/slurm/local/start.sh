#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (slurmctld, slurmd, munge):
# what `make cluster-test` submits the workflow to. Run as root; idempotent (a running
# cluster started by this script is left as it is). Stop it with stop.sh.
#
# No accounting database: the executor plugin queries job states with `squeue` (the jobs
# stay listed for MinJobAge = 1 h), and Slurm's job-completion log (jobcomp/filetxt, one
# record per finished job with its CPUs, memory and time limit) is the record the cluster
# test checks the requests against.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/tmp/positron-nde-slurm}
CONF=/etc/slurm/slurm.conf

if [ "$(id -u)" != 0 ]; then
    echo "error: $0 starts munged, slurmctld and slurmd: run it as root" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    echo "installing slurmctld, slurmd, munge and slurm-client (apt-get)"
    if ! apt-get install -y --no-install-recommends slurmctld slurmd munge slurm-client \
            >/dev/null; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            slurmctld slurmd munge slurm-client >/dev/null
    fi
fi

if [ -f "$STATE/started" ] && sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
    echo "Slurm already running (state in $STATE)"
    exit 0
fi

HOST=$(hostname -s)
CPUS=$(nproc)
# What jobs may ask for: the machine's memory less 10 % for the system and the daemons.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" /etc/slurm /run/munge
cat > "$CONF" <<CONF
# Written by $0: a one-node cluster for positron-nde's cluster test.
ClusterName=positron-nde
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
ReturnToService=2
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
# A working munged answers `munge -n` (a process that is still exiting does not).
if ! munge -n </dev/null >/dev/null 2>&1; then
    runuser -u munge -- munged --force && touch "$STATE/munged_started"
fi
# Not up (checked above): daemons left from a failed start are restarted with this config.
for daemon in slurmd slurmctld; do
    pkill -x "$daemon" && sleep 1
done
slurmctld
slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
        touch "$STATE/started"
        echo "Slurm up: node $HOST, $CPUS CPUs, $MEM_MB MB, partition local (state in $STATE)"
        exit 0
    fi
    sleep 1
done
echo "error: the Slurm node did not come up; see $STATE/log/slurmctld.log and slurmd.log" >&2
exit 1
