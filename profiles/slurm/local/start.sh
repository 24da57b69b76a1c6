#!/usr/bin/env bash
# A private one-node Slurm cluster on this machine, from Debian's packages (slurmctld,
# slurmd, munge): what `make cluster-test` submits the workflow to. Run as root; stop it
# with stop.sh.
#
# Private: everything it writes is in its state folder, $SLURM_LOCAL_STATE (default
# /var/tmp/positron-nde-slurm): its slurm.conf, its own munged (key, socket, pid file, log,
# seed file under munge/), the daemons' state, spool, pid files and logs, and the
# job-completion log. Nothing is written under /etc (no /etc/slurm/slurm.conf, no
# /etc/munge/munge.key): the Slurm commands find the private cluster through
# SLURM_CONF=$SLURM_LOCAL_STATE/slurm.conf (`make cluster-test` exports it for the test;
# a SLURM_CONF inherited by this script is ignored, never written), the daemons through
# `-f`, and Slurm its munged through AuthInfo=socket=. Its daemons listen on ports of
# their own (common.sh says which and why), checked free before starting.
#
# Refuses, with one `error:` line and before changing anything, where a Slurm it did not
# start runs: a slurmctld or slurmd process (by the kernel's process name) whose pid is not
# in this cluster's pid files with this cluster's `-f $CONF` on its command line. That
# includes the machine's own Slurm and a private cluster of another state folder: a second
# slurmd of the same node name, or a second controller, would clash with it. A munged of
# the machine's is no clash (ours has its own socket and key) and is left alone.
#
# Idempotent: a running private cluster is left as it is. Daemons of ours left from a
# failed start are stopped (by their pid files) and started again with this config.
#
# No accounting database: the executor plugin queries job states with `squeue` (the jobs
# stay listed for MinJobAge = 1 h), and Slurm's job-completion log (jobcomp/filetxt, one
# record per finished job with its CPUs, memory and time limit) is the record the cluster
# test checks the requests against.
set -euo pipefail
umask 022
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ "$(id -u)" != 0 ]; then
    echo "error: $0 starts munged, slurmctld and slurmd (which run jobs as their users): run it as root" >&2
    exit 2
fi

# A Slurm daemon this cluster did not start (see the header). /proc is read directly: it
# needs no installed Slurm, and zombies (which hold no port) are not counted.
ours=" $(our_slurmctld || true) $(our_slurmd || true) "
foreign=()
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    { read -r name < "$dir/comm"; } 2>/dev/null || continue
    if [ "$name" != slurmctld ] && [ "$name" != slurmd ]; then
        continue
    fi
    if alive "$pid" "$name" && [[ $ours != *" $pid "* ]]; then
        foreign+=("$name pid $pid ($(readlink "$dir/exe" 2>/dev/null || echo "executable unknown"))")
    fi
done
if [ ${#foreign[@]} -gt 0 ]; then
    echo "error: a Slurm this script did not start is running: ${foreign[*]}; a private" \
         "cluster beside it could clash with its node name and ports, so nothing was started" \
         "or written: stop that Slurm first (e.g. systemctl stop slurmd slurmctld; or stop.sh" \
         "with its SLURM_LOCAL_STATE if it is another private cluster) or run" \
         "\`make cluster-test\` on another machine" >&2
    exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v munge >/dev/null \
        || ! command -v sbatch >/dev/null || ! command -v sinfo >/dev/null \
        || ! command -v srun >/dev/null; then
    echo "installing slurmctld, slurmd, munge and slurm-client (apt-get)"
    if ! apt-get install -y --no-install-recommends slurmctld slurmd munge slurm-client \
            >/dev/null; then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            slurmctld slurmd munge slurm-client >/dev/null
    fi
fi

# From here on the Slurm commands are this cluster's (whatever SLURM_CONF came in).
export SLURM_CONF=$CONF
node_up() { sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
USE="export SLURM_CONF=$CONF PATH=$STATE/bin:\$PATH to use it"

# $STATE/bin/srun: srun bound to this cluster. Inside a Slurm job, Snakemake's jobstep
# executor runs each job with srun, and removes from that srun's environment every SLURM_*
# variable but the job's ids, SLURM_CONF included (snakemake-executor-plugin-slurm-jobstep
# 0.6.1): that srun would read the system's /etc/slurm/slurm.conf, i.e. fail, or reach a
# Slurm of the machine's. The jobs inherit the submitter's PATH (sbatch --export=ALL), so
# with $STATE/bin first on it (the cluster test puts it there) their srun is this one,
# which sets SLURM_CONF back and runs the real srun.
write_srun() {
    local dir real=
    local IFS=:
    for dir in $PATH; do  # the first srun on PATH that is not this wrapper
        if [ -n "$dir" ] && [ "$(realpath -m -- "$dir")" != "$STATE/bin" ] \
                && [ -x "$dir/srun" ]; then
            real=$dir/srun
            break
        fi
    done
    if [ -z "$real" ]; then
        echo "error: no srun on PATH (Debian's slurm-client has it)" >&2
        exit 1
    fi
    mkdir -p "$STATE/bin"
    printf '#!/bin/bash\n# Written by %s: srun of the private cluster (start.sh says why).\nexport SLURM_CONF=%q\nexec %q "$@"\n' \
        "$0" "$CONF" "$real" > "$STATE/bin/srun.tmp"
    chmod 755 "$STATE/bin/srun.tmp"
    mv "$STATE/bin/srun.tmp" "$STATE/bin/srun"
}

if our_slurmctld >/dev/null && our_slurmd >/dev/null && node_up; then
    write_srun
    echo "Slurm already running (state in $STATE; $USE)"
    exit 0
fi
# Not up: whatever of ours is left from a failed start is restarted with this config.
stop_daemon slurmd
stop_daemon slurmctld

for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if listening "$port"; then
        echo "error: TCP port $port, which the private Slurm cluster uses (see" \
             "profiles/slurm/local/common.sh), is in use by another program; nothing was" \
             "started or written: free it (ss -ltnp 'sport = :$port' names it) and try again" >&2
        exit 3
    fi
done

HOST=$(hostname -s)
CPUS=$(nproc)
# What jobs may ask for: the machine's memory less 10 % for the system and the daemons.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
# munged wants its socket's folder searchable by all (clients run as any user).
mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" "$MUNGE"
chmod 755 "$STATE" "$MUNGE"
write_srun
cat > "$CONF" <<CONF
# Written by $0: the private one-node cluster of positron-nde's cluster test. Used through
# SLURM_CONF=$CONF (never installed as /etc/slurm/slurm.conf).
ClusterName=positron-nde
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
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

# The private munged: its own key (made once, kept across restarts), socket, pid file, log
# and seed file. It runs as root like the Slurm daemons here (SlurmUser=root), so its files
# need no munge user. A working munged answers `munge -n`.
if [ ! -s "$MUNGE_KEY" ]; then
    (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none)
fi
chmod 400 "$MUNGE_KEY"
munge_up() { munge -n --socket="$MUNGE_SOCKET" </dev/null >/dev/null 2>&1; }
if ! our_munged >/dev/null || ! munge_up; then
    stop_daemon munged
    # --force: past a socket left by a munged of ours that was killed (none runs: above).
    munged --force --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_PID" \
        --log-file="$STATE/log/munged.log" --seed-file="$MUNGE/munged.seed"
    for _ in $(seq 50); do
        munge_up && break
        sleep 0.2
    done
fi
if ! munge_up; then
    echo "error: the private munged did not come up; see $STATE/log/munged.log" >&2
    exit 1
fi

slurmctld -f "$CONF"
slurmd -f "$CONF"
for _ in $(seq 60); do
    if node_up; then
        echo "Slurm up: node $HOST, $CPUS CPUs, $MEM_MB MB, partition local, ports" \
             "$CTLD_PORT/$SLURMD_PORT (state in $STATE; $USE)"
        exit 0
    fi
    sleep 1
done
echo "error: the Slurm node did not come up; see $STATE/log/slurmctld.log and slurmd.log" >&2
exit 1
