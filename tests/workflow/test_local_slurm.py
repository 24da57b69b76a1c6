"""`profiles/slurm/local/start.sh` and `stop.sh` touch only what they create.

The scripts run for real, with fakes of Slurm's and munge's programs first on PATH, written
here: the daemons (`slurmctld`, `slurmd`, `munged`) record how they were called and run as
background processes with their pid files and their real process names, as the real ones
do; `sinfo`, `munge`, `scancel` answer from those; `apt-get` records that it was called (the
scripts must not install anything when the programs are there); `id -u` says root (the
scripts refuse to run otherwise; nothing here needs root). So no daemon, package or root is
needed and the run takes seconds. Checked:

* a start writes only into its state folder: the fakes were given paths in it, the config's
  paths are in it, the inherited SLURM_CONF (a user's "system" config) is byte-identical
  and unused, nothing else in the test's folder, /etc/slurm, /etc/munge or /run/munge
  changed; its ports are not Slurm's defaults; its srun wrapper (for the jobs' steps) runs
  srun with the private config; a second start leaves the cluster as it is;
* stop.sh stops those daemons by their pid files, and a second stop is harmless;
* a process named slurmd that the scripts did not start makes start.sh refuse with one
  `error:` line, before it writes anything, and survives start.sh and stop.sh, even when a
  pid file of the state folder names it (a recycled pid);
* a port of the private cluster in use makes start.sh refuse the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow.sandbox import REPO

LOCAL = REPO / "profiles/slurm/local"
PORTS = [int(p) for p in re.findall(r"^(?:CTLD|SLURMD)_PORT=(\d+)$",
                                    (LOCAL / "common.sh").read_text(), re.M)]
# Where a Slurm or munge of the machine keeps its configuration, keys and socket.
SYSTEM_PATHS = [Path("/etc/slurm"), Path("/etc/slurm-llnl"), Path("/etc/munge"),
                Path("/run/munge")]

# A daemon: records its call, then re-runs itself in the background as the daemon (its
# process name is the file's name, slurmctld, slurmd or munged), which writes its pid
# where the real one would (slurm.conf's pid file for the config given with -f; munged's
# --pid-file) and, for munged, creates its socket.
FAKE_DAEMON = r"""#!/bin/bash
set -euo pipefail
name=$(basename "$0")
if [ "${1:-}" = --fake-daemon ]; then
    child=
    trap '[ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM
    sleep 120 & child=$!
    wait "$child"
    exit 0
fi
echo "$name $* SLURM_CONF=${SLURM_CONF:-}" >> "$FAKE_DIR/calls"
case $name in
    munged)
        for arg; do
            case $arg in
                --pid-file=*) pidfile=${arg#--pid-file=} ;;
                --socket=*) touch "${arg#--socket=}" ;;
            esac
        done ;;
    slurmctld|slurmd)
        [ "$1" = -f ]
        key=$([ "$name" = slurmctld ] && echo SlurmctldPidFile || echo SlurmdPidFile)
        pidfile=$(sed -n "s/^$key=//p" "$2") ;;
esac
"$0" --fake-daemon "$@" </dev/null >/dev/null 2>&1 &
echo $! >> "$FAKE_DIR/pids"
echo $! > "$pidfile"
"""

# A client: records its call; `sinfo` says idle while the daemons of SLURM_CONF's pid files
# run (so it fails for any other config), `munge -n --socket=S` works while S exists; `id -u`
# says root (not recorded: not a Slurm program).
FAKE_CLIENT = r"""#!/bin/bash
set -euo pipefail
name=$(basename "$0")
if [ "$name" = id ]; then  # not recorded: not a Slurm program
    if [ "${1:-}" = -u ]; then echo 0; else exec /usr/bin/id "$@"; fi
    exit 0
fi
echo "$name $* SLURM_CONF=${SLURM_CONF:-}" >> "$FAKE_DIR/calls"
case $name in
    sinfo)
        for key in SlurmctldPidFile SlurmdPidFile; do
            pidfile=$(sed -n "s/^$key=//p" "$SLURM_CONF")
            kill -0 "$(cat "$pidfile")" 2>/dev/null || exit 1
        done
        echo idle ;;
    munge)
        for arg; do
            case $arg in --socket=*) [ -e "${arg#--socket=}" ] && exit 0 ;; esac
        done
        exit 1 ;;
    apt-get) exit 1 ;;
esac
"""


def _alive(pid: int) -> bool:
    """A running process (not a zombie, which no longer runs)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return re.search(r"^State:\s+[ZX]", status, re.M) is None


def _slurm_daemons_running() -> list[str]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in ("slurmctld", "slurmd") and _alive(int(comm.parent.name)):
            found.append(f"{name} (pid {comm.parent.name})")
    return found


def _snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file, folder and link under roots: its content's hash, or what it is."""
    seen = {}
    for root in roots:
        if not root.exists() and not root.is_symlink():
            seen[str(root)] = "absent"
            continue
        paths = [root] + (sorted(root.rglob("*")) if root.is_dir() and not root.is_symlink()
                          else [])
        for path in paths:
            if any(path == s or s in path.parents for s in skip):
                continue
            if path.is_symlink():
                seen[str(path)] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[str(path)] = f"dir {path.stat().st_mode:o}"
            elif path.is_socket():
                seen[str(path)] = f"socket {path.stat().st_ino}"
            else:
                try:
                    seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:  # a key of root's, read as another user
                    stat = path.stat()
                    seen[str(path)] = f"unreadable {stat.st_size} {stat.st_mtime_ns}"
    return seen


class Sandbox:
    """The fakes on PATH, a state folder, a user's own SLURM_CONF, in one test folder."""

    def __init__(self, root: Path):
        self.root = root
        self.fakes = root / "fakes"  # the fakes' record: calls and the pids they started
        self.bin = root / "bin"
        self.state = root / "state"
        self.home = root / "home"
        self.user_conf = root / "site/slurm.conf"
        for folder in (self.fakes, self.bin, self.home, self.user_conf.parent):
            folder.mkdir(parents=True)
        for name in ("slurmctld", "slurmd", "munged"):
            self._write(name, FAKE_DAEMON)
        for name in ("sinfo", "srun", "munge", "scancel", "sbatch", "scontrol", "apt-get",
                     "id"):
            self._write(name, FAKE_CLIENT)
        self.user_conf.write_text("# the site's Slurm config a user's shell points at\n"
                                  "ClusterName=site\nSlurmctldHost=elsewhere\n")
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.home),
                    "TMPDIR": str(self.home), "LANG": "C", "FAKE_DIR": str(self.fakes),
                    "SLURM_LOCAL_STATE": str(self.state), "SLURM_CONF": str(self.user_conf)}

    def _write(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def run(self, script: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LOCAL / script)], cwd=self.home, env=self.env,
                              capture_output=True, text=True, timeout=60)

    def calls(self) -> list[list[str]]:
        path = self.fakes / "calls"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def started(self) -> list[int]:
        path = self.fakes / "pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def snapshot(self) -> dict[str, str]:
        return _snapshot(self.root, *SYSTEM_PATHS, skip=(self.state, self.fakes))

    def kill_fakes(self) -> None:
        """The fake daemons still running (a failed test), each checked to be one of ours."""
        for pid in self.started():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.bin).encode() in cmdline and b"--fake-daemon" in cmdline:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(tmp_path)
    yield box
    box.kill_fakes()


@pytest.fixture
def foreign_slurmd(tmp_path):
    """A process named slurmd that the scripts did not start (`sleep` under that name)."""
    link = tmp_path / "elsewhere/slurmd"
    link.parent.mkdir()
    link.symlink_to(shutil.which("sleep"))
    process = subprocess.Popen([str(link), "60"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{process.pid}/comm").read_text().strip() != "slurmd":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield process.pid
    process.kill()
    process.wait()


def _no_other_slurm():
    running = _slurm_daemons_running()
    if running:
        pytest.skip("a Slurm daemon runs on this machine, so start.sh rightly refuses: "
                    + ", ".join(running))


def _refused(run: subprocess.CompletedProcess) -> str:
    """The one error line of a refusal."""
    assert run.returncode != 0, run.stdout + run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def test_start_and_stop_write_only_their_state_folder(sandbox):
    _no_other_slurm()
    before = sandbox.snapshot()
    user_conf = sandbox.user_conf.read_bytes()

    start = sandbox.run("start.sh")
    assert start.returncode == 0, start.stdout + start.stderr
    assert "Slurm up" in start.stdout
    conf = sandbox.state / "slurm.conf"
    calls = sandbox.calls()
    programs = [call[0] for call in calls]
    assert "apt-get" not in programs
    assert sorted(p for p in programs if p in ("munged", "slurmctld", "slurmd")) == \
        ["munged", "slurmctld", "slurmd"]
    for call in calls:
        # Every Slurm command saw the private config, never the one the user came with.
        if call[0] in ("sinfo", "scancel", "sbatch", "scontrol", "slurmctld", "slurmd"):
            assert call[-1] == f"SLURM_CONF={conf}", call
        if call[0] in ("slurmctld", "slurmd"):
            assert call[1:3] == ["-f", str(conf)], call
        if call[0] == "munged":
            given = dict(arg.split("=", 1) for arg in call[1:-1] if "=" in arg)
            for option in ("--key-file", "--socket", "--pid-file", "--log-file", "--seed-file"):
                assert Path(given[option]).parent.is_relative_to(sandbox.state), call
        if call[0] == "munge":
            assert f"--socket={sandbox.state}/munge/munged.socket" in call, call
    # Everything the daemons would write, and the munge socket, is in the state folder.
    settings = dict(re.findall(r"^(\w+)=(.*)$", conf.read_text(), re.M))
    for key, value in settings.items():
        for path in re.findall(r"(?:^|[=\s,])(/[^\s,]+)", value):
            assert Path(path).is_relative_to(sandbox.state), (key, value)
    assert settings["AuthInfo"] == f"socket={sandbox.state}/munge/munged.socket"
    ports = {int(settings["SlurmctldPort"]), int(settings["SlurmdPort"])}
    assert ports == set(PORTS) and not ports & {6817, 6818}
    assert sandbox.user_conf.read_bytes() == user_conf
    assert sandbox.snapshot() == before
    daemons = sandbox.started()
    assert len(daemons) == 3 and all(_alive(pid) for pid in daemons)

    # The cluster's srun, for the jobs' job steps, whose environment has no SLURM_CONF.
    srun = sandbox.state / "bin/srun"
    env = {k: v for k, v in sandbox.env.items() if k != "SLURM_CONF"}
    subprocess.run([str(srun), "hostname"], env=env, check=True, timeout=10)
    assert sandbox.calls()[-1] == ["srun", "hostname", f"SLURM_CONF={conf}"]

    # Again, from a shell that took start.sh's advice (its bin/ first on PATH): the running
    # cluster is left as it is, and its srun still runs the real srun, not itself.
    sandbox.env["PATH"] = f"{srun.parent}:{sandbox.env['PATH']}"
    again = sandbox.run("start.sh")
    assert again.returncode == 0 and "already running" in again.stdout, again.stderr
    assert sandbox.started() == daemons
    assert f"exec {sandbox.bin}/srun " in srun.read_text()

    stop = sandbox.run("stop.sh")
    assert stop.returncode == 0, stop.stderr
    assert [line.split(" (")[0] for line in stop.stdout.splitlines()] == \
        ["stopped slurmd", "stopped slurmctld", "stopped munged"]
    assert not any(_alive(pid) for pid in daemons)
    second = sandbox.run("stop.sh")
    assert second.returncode == 0 and "is running" in second.stdout, second.stderr
    assert sandbox.user_conf.read_bytes() == user_conf
    assert sandbox.snapshot() == before


def test_a_slurm_it_did_not_start_is_refused_and_left_running(sandbox, foreign_slurmd):
    before = sandbox.snapshot()
    line = _refused(sandbox.run("start.sh"))
    assert f"slurmd pid {foreign_slurmd} " in line
    assert not sandbox.state.exists() and sandbox.calls() == []
    assert sandbox.snapshot() == before
    assert _alive(foreign_slurmd)

    # A pid file of the state folder naming it (a pid reused since our slurmd died) does
    # not make it ours: start.sh still refuses, and stop.sh leaves it running.
    sandbox.state.mkdir()
    (sandbox.state / "slurmd.pid").write_text(f"{foreign_slurmd}\n")
    _refused(sandbox.run("start.sh"))
    stop = sandbox.run("stop.sh")
    assert stop.returncode == 0, stop.stderr
    assert not any(call[0] == "scancel" for call in sandbox.calls())
    assert _alive(foreign_slurmd)


def test_a_port_in_use_is_refused(sandbox):
    _no_other_slurm()
    with socket.socket() as taken:
        # Past the TIME_WAIT connections a cluster stopped a moment ago leaves on the port.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", PORTS[0]))
        except OSError:
            pytest.skip(f"port {PORTS[0]} is in use here")
        taken.listen()
        line = _refused(sandbox.run("start.sh"))
    assert f"port {PORTS[0]}" in line
    assert not sandbox.state.exists()
    assert not any(call[0] in ("munged", "slurmctld", "slurmd") for call in sandbox.calls())
