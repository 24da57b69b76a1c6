#!/usr/bin/env bash
# Stop the private one-node Slurm cluster of start.sh (same SLURM_LOCAL_STATE): its
# slurmd, slurmctld and munged, found by the pid files in its state folder and signalled
# only while each pid is still that daemon with this cluster's config or key on its command
# line (common.sh: our_pid), so a pid reused by another process, and any Slurm or munged
# this cluster did not start, are never touched. Nothing running: nothing to do (a second
# stop is harmless). The state folder is kept, with the job-completion log, until the next
# start rewrites the config.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if our_slurmctld >/dev/null; then
    # The jobs left on this cluster (not on any other: SLURM_CONF is ours).
    SLURM_CONF=$CONF scancel --user="$(id -un)" 2>/dev/null || true
fi
stopped=0
for daemon in slurmd slurmctld munged; do  # munged last: the Slurm daemons use it to the end
    if "our_$daemon" >/dev/null; then
        stop_daemon "$daemon"
        stopped=1
    fi
done
if [ "$stopped" = 0 ]; then
    echo "no daemon of the private Slurm cluster in $STATE is running"
fi
