#!/usr/bin/env bash
# Stop the one-node Slurm cluster of start.sh (its daemons; the state folder is kept, with
# the job-completion log, until the next start overwrites the config).
set -uo pipefail
STATE=${SLURM_LOCAL_STATE:-/var/tmp/positron-nde-slurm}
scancel --user="$(id -un)" 2>/dev/null
for daemon in slurmd slurmctld; do
    pkill -x "$daemon" && echo "stopped $daemon"
done
rm -f "$STATE/started"
