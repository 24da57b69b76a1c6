# shellcheck shell=bash disable=SC2034  # (sourced; the variables are used by its callers)
# Sourced by start.sh and stop.sh: where the private cluster lives and how its daemons are
# recognised. Everything the private cluster writes is under $STATE; nothing under /etc.
#
# Ports: the private slurmctld and slurmd listen on 16817 and 16818, Slurm's defaults (6817,
# 6818) plus 10000, so that they never meet a system Slurm's daemons or clients on the
# default ports. Both are below Linux's ephemeral range (32768-60999), so no outgoing
# connection is given them, and are no registered service (/etc/services).
CTLD_PORT=16817
SLURMD_PORT=16818

# An absolute path: it goes into slurm.conf and into the daemons' command lines, which are
# how a daemon is recognised as ours (below).
STATE=$(realpath -m -- "${SLURM_LOCAL_STATE:-/var/tmp/positron-nde-slurm}")
CONF=$STATE/slurm.conf
MUNGE=$STATE/munge
MUNGE_KEY=$MUNGE/munge.key
MUNGE_SOCKET=$MUNGE/munged.socket
MUNGE_PID=$MUNGE/munged.pid
CTLD_PID=$STATE/slurmctld.pid
SLURMD_PID=$STATE/slurmd.pid

# alive PID NAME: PID is a running process (not a zombie) whose kernel name (comm, what
# `pgrep -x` matches) is NAME.
alive() {
    local name key value
    { read -r name < "/proc/$1/comm"; } 2>/dev/null || return 1
    [ "$name" = "$2" ] || return 1
    while read -r key value _; do
        if [ "$key" = State: ]; then
            [ "$value" != Z ] && [ "$value" != X ]
            return
        fi
    done < "/proc/$1/status" 2>/dev/null
    return 1
}

# our_pid NAME PIDFILE MARK: prints the pid of PIDFILE when that process is the NAME this
# cluster started: alive with that name and MARK one of its arguments (slurmctld and slurmd
# are started with `-f $CONF`, munged with `--key-file=$MUNGE_KEY`). A pid file left by a
# daemon that died, whose pid the system gave to another process since, names no daemon of
# ours: that process is never signalled.
our_pid() {
    local pid arg args=()
    [ -r "$2" ] || return 1
    { read -r pid < "$2"; } 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" "$1" || return 1
    { mapfile -d '' args < "/proc/$pid/cmdline"; } 2>/dev/null || return 1
    for arg in "${args[@]}"; do
        if [ "$arg" = "$3" ]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

our_slurmctld() { our_pid slurmctld "$CTLD_PID" "$CONF"; }
our_slurmd() { our_pid slurmd "$SLURMD_PID" "$CONF"; }
our_munged() { our_pid munged "$MUNGE_PID" "--key-file=$MUNGE_KEY"; }

# stop_daemon NAME: SIGTERM to our NAME, if it runs; 10 s to exit (a slurmd retrying an
# unreachable controller can outlive SIGTERM), then SIGKILL, each time only after checking
# that the pid is still our daemon.
stop_daemon() {
    local pid
    pid=$("our_$1") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        "our_$1" >/dev/null || { echo "stopped $1 (pid $pid)"; return 0; }
        sleep 0.2
    done
    if pid=$("our_$1"); then
        kill -KILL "$pid" 2>/dev/null || true
        echo "stopped $1 (pid $pid, SIGKILL after 10 s)"
    fi
}

# listening PORT: a TCP socket of this machine listens on PORT (IPv4 or IPv6).
listening() {
    local table tables=()
    for table in /proc/net/tcp /proc/net/tcp6; do
        if [ -r "$table" ]; then
            tables+=("$table")
        fi
    done
    # Columns: sl, local_address (hex IP:hex port), rem_address, st (0A: LISTEN), ...
    awk -v port=":$(printf '%04X' "$1")" \
        '$4 == "0A" && substr($2, length($2) - 4) == port {found = 1} END {exit !found}' \
        "${tables[@]}"
}
