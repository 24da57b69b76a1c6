#!/usr/bin/env bash
# Stop the one-node Slurm cluster of start.sh (its daemons; the state folder is kept, with
# the job-completion log, until the next start overwrites the config).
set -uo pipefail
STATE=${SLURM_LOCAL_STATE:-/var/tmp/positron-nde-slurm}
scancel --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld; do
    pkill -x "$daemon" && echo "stopped $daemon"
done
# A daemon stuck retrying (slurmd without munge) can outlive SIGTERM: 10 s, then SIGKILL.
for _ in $(seq 10); do
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
    sleep 1
done
pkill -9 -x slurmd 2>/dev/null
pkill -9 -x slurmctld 2>/dev/null
rm -f "$STATE/started"
# munged only when start.sh started it (another service may rely on a munged of its own).
if [ -f "$STATE/munged_started" ]; then
    pkill -x munged && echo "stopped munged"
    rm -f "$STATE/munged_started"
fi
