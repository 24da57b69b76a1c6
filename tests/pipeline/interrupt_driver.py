"""Run one stage command many times, each in a fresh process, for the interruption stress
tests.

``python interrupt_driver.py PACKAGE COMMANDS.json``: the package's modules are imported once;
then for each command line of the JSON list the driver waits for ``go`` or ``cold`` on stdin
and forks a process in a process group of its own, as a shell starts a job. After ``go`` it
runs ``PACKAGE.__main__`` with the command line as ``python -m PACKAGE`` does (the stop
handlers in first; stop signals ignored once it returns); after ``cold`` it becomes a new
``python -m PACKAGE`` (exec), which imports everything itself. The driver prints
``BEGIN k PID`` once that process's handlers are in (Linux lists SIGTERM among the signals
it catches: any signal sent from then on is the command's to handle), then one JSON line
when it has ended: its exit code and the processes started for it still alive. Its stderr
gets ``=== k`` first, so the test can cut the log per command.

Forking from a process that has imported everything makes a repetition cost what the
command's own start and stop cost (torch alone takes seconds to import), while every
repetition still runs, and dies, in a process of its own; the ``cold`` ones cover a signal
during the imports.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import signal
import sys
import time

import psutil

from pipeline.interrupts import STOP_SIGNALS, run_cli, stop_on_signals


def _import_all(package: str) -> None:
    """Import ``package`` and every module under it (the ones a command imports lazily)."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - an optional engine (opengate) may not import
            pass


def _session_alive() -> list[int]:
    """Processes of this driver's session (every process a repetition started, in whatever
    process group), the driver excepted."""
    sid, alive = os.getsid(0), []
    for proc in psutil.process_iter():
        try:
            if (proc.pid != os.getpid() and os.getsid(proc.pid) == sid
                    and proc.status() != psutil.STATUS_ZOMBIE):
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        caught = next(line for line in fh if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _child(package: str, argv: list[str], cold: bool) -> None:
    os.setpgid(0, 0)
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    if cold:
        os.execv(sys.executable, [sys.executable, "-m", package, *argv])
    with stop_on_signals(exiting=True):
        code = run_cli(f"{package}.__main__", argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    package, commands = sys.argv[1], json.loads(open(sys.argv[2]).read())
    _import_all(package)
    for k, argv in enumerate(commands):
        mode = sys.stdin.readline().strip()
        if mode not in ("go", "cold"):
            return
        sys.stderr.write(f"=== {k}\n")
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _child(package, argv, cold=mode == "cold")
            finally:
                os._exit(70)
        while not _catches_sigterm(pid):
            time.sleep(0.002)
        print(f"BEGIN {k} {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        time.sleep(0.2)  # what the group's processes take to be reaped once killed
        print(json.dumps({"k": k, "code": os.waitstatus_to_exitcode(status),
                          "alive": _session_alive()}), flush=True)


if __name__ == "__main__":
    main()
