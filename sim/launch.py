"""``python -m sim run [snakemake arguments]``: Snakemake, after the config it will read has
been checked.

Snakemake parses ``--configfile`` files and ``--config`` items itself, before the Snakefile
(and its validator) runs, and reports problems there in its own words or with a traceback:
an empty overlay, a YAML syntax error, a top-level list, a missing file, a dotted key
(``--config scanner.rings=32``). This launcher reads the same arguments the way Snakemake's
parser does, checks the raw files (file, line and column) and items (the item and what is
wrong), validates the merged config exactly as the Snakefile will (the repository's
``config/config.yaml``, then each overlay, then the items), and only then runs the
``snakemake`` of the same environment, arguments unchanged, passing a stop signal on to it
and its jobs (:func:`run_snakemake`). A bad config therefore costs one ``error:`` line and
exit code 2, and nothing starts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_CONFIG_PATH, ConfigError, deep_merge, load_config
from pipeline.interrupts import child_process
from pipeline.specs import check_requested_targets

#: Snakemake's options that take config files or items (nargs: one or more / any number).
CONFIGFILE_OPTIONS = ("--configfile", "--configfiles")
CONFIG_OPTIONS = ("--config", "-C")
#: A key Snakemake accepts on the command line (its own rule: an identifier, dashes inside).
_KEY = re.compile(r"[a-zA-Z_][\w-]*\w$")


def config_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """The config files and ``KEY=VALUE`` items of a Snakemake command line, in order.

    Like Snakemake's ``argparse`` (``nargs='+'``/``'*'``), an option's values run until
    the next token that starts with ``-``; ``--configfile=F`` and ``--config=K=V`` give one;
    an option given twice keeps its last values only (``--configfile a.yaml --configfile
    b.yaml`` reads b.yaml alone: give overlays after one ``--configfile``).
    """
    found: dict[str, list[str]] = {"files": [], "items": []}
    target: str | None = None
    for token in argv:
        name, eq, value = token.partition("=")
        if token.startswith("-"):
            target = ("files" if name in CONFIGFILE_OPTIONS
                      else "items" if name in CONFIG_OPTIONS else None)
            if target is not None:
                found[target] = [value] if eq else []  # a repeated option replaces the last
                if eq:  # `--option=value` takes that one value only
                    target = None
        elif target is not None:
            found[target].append(token)
    files, items = found["files"], found["items"]
    return files, items


def parse_config_items(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as Snakemake turns them into config entries (int, float,
    ``True``/``False``, flow-style YAML as strings, else the string), each key checked."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--config {item}: expected KEY=VALUE")
        if "." in key:
            top, _, rest = key.partition(".")
            nested = "{" + ": {".join(rest.split(".")) + f": {value or 'null'}" \
                     + "}" * rest.count(".") + "}"
            raise ConfigError(
                f"--config {item}: nested keys cannot be set on the command line (Snakemake "
                f"refuses dotted keys); put `{top}: {nested}` in an overlay file and pass "
                "it with --configfile")
        if not _KEY.match(key):
            raise ConfigError(f"--config {item}: {key!r} is not a config key (letters, digits, "
                              "'_' and '-', starting with a letter or '_')")
        parsed[key] = _snakemake_value(value)
    return parsed


def _snakemake_value(text: str) -> Any:
    """The value Snakemake's parser makes of ``text`` (empty is None)."""
    import yaml

    if text == "":
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    try:  # Snakemake's BaseLoader: nested values arrive as strings, which the validator names
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def _refuse_repeated_options(argv: list[str]) -> None:
    """Snakemake keeps only the last of a repeated ``--configfile`` or ``--config``, silently
    dropping the others: refused, with the form that keeps them all."""
    for options, form in ((CONFIGFILE_OPTIONS, "--configfile a.yaml b.yaml"),
                          (CONFIG_OPTIONS, "--config key1=v1 key2=v2")):
        given = [t.partition("=")[0] for t in argv if t.partition("=")[0] in options]
        if len(given) > 1:
            raise ConfigError(f"{given[0]} is given {len(given)} times; Snakemake would read "
                              f"only the last one: give every value after one option "
                              f"({form})")


def requested_executor(argv: list[str]) -> tuple[str, str] | None:
    """The executor a command line asks for, and where (``--executor``/``-e``, else the
    ``executor:`` of the ``--profile`` folder's config.yaml); None for the default."""
    import yaml

    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name in ("--executor", "-e"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            return value, f"{name} {value}"
    for i, token in enumerate(argv):
        name, eq, value = token.partition("=")
        if name == "--profile":
            folder = Path(value if eq else (argv[i + 1] if i + 1 < len(argv) else ""))
            config = folder / "config.yaml"
            if config.is_file():
                executor = (yaml.safe_load(config.read_text()) or {}).get("executor")
                if executor:
                    return str(executor), f"{config}: executor {executor}"
    return None


def _check_executor(argv: list[str]) -> None:
    """An executor plugin that is not installed: named with its install command (Snakemake
    says "invalid choice: 'slurm'" after printing its whole usage)."""
    import importlib.util

    found = requested_executor(argv)
    if found is None or found[0] in ("local", "dryrun", "touch"):
        return
    executor, where = found
    module = "snakemake_executor_plugin_" + executor.replace("-", "_")
    if importlib.util.find_spec(module) is None:
        extra = ' (pip install -e ".[slurm]")' if executor == "slurm" else ""
        raise ConfigError(f"{where}: the executor plugin {module.replace('_', '-')} is not "
                          f"installed in this environment{extra}")


def check_snakemake_config(argv: list[str]) -> dict[str, Any]:
    """The config a Snakemake run with ``argv`` would use, validated; ConfigError (one line
    naming the file and line, or the item) otherwise."""
    _refuse_repeated_options(argv)
    _check_executor(argv)
    files, items = config_arguments(argv)
    overrides = parse_config_items(items)
    for path in files:
        if Path(path).is_dir():
            raise ConfigError(f"config file {path} is a folder, not a YAML file")
    config = load_config(DEFAULT_CONFIG_PATH, *files, overrides=deep_merge({}, overrides))
    # A token naming an on-request target is that target (no option takes such a value).
    check_requested_targets(config, argv)
    return config


def snakemake_executable() -> str:
    """The ``snakemake`` next to this interpreter (the project's environment), else PATH's."""
    own = Path(sys.executable).parent / "snakemake"
    found = str(own) if own.is_file() else shutil.which("snakemake")
    if not found:
        raise FileNotFoundError("snakemake is not installed in this environment "
                                "(run `make install`)")
    return found


#: Seconds Snakemake has to stop its jobs after the launcher forwards a stop signal, then
#: SIGTERM to its process group, then (after :data:`KILL_AFTER_S`) SIGKILL.
SNAKEMAKE_STOP_S = 30.0
KILL_AFTER_S = 5.0


def run_snakemake(argv: list[str]) -> int:
    """Check the config of ``argv``, then run ``snakemake argv`` and return its exit code.

    Snakemake runs in a process group of its own, with its local jobs, and the launcher
    stays in front of it: a SIGINT, SIGTERM or SIGHUP the launcher receives
    (:mod:`pipeline.interrupts`; a terminal's Ctrl-C reaches only the launcher's group) is
    passed on as SIGINT to that whole group. SIGINT is Snakemake's "stop now": it cancels
    its jobs (``scancel`` on Slurm) and removes their incomplete outputs, while its answer to
    SIGTERM is to wait for every running job to finish, which on a cluster can take hours.
    Each local job gets the SIGINT too and stops with its own clean-up. A Snakemake still
    running :data:`SNAKEMAKE_STOP_S` later gets SIGTERM, then SIGKILL; a launcher killed
    outright takes Snakemake with it (Linux's parent-death signal, SIGINT). A signal that
    comes while Snakemake is being started is passed on once it has started
    (:func:`pipeline.interrupts.child_process`).
    """
    check_snakemake_config(argv)
    executable = snakemake_executable()
    sys.stdout.flush()
    sys.stderr.flush()
    with child_process([executable, *argv], _stop_snakemake,
                       preexec_fn=_own_group_dying_with_parent) as proc:
        return proc.wait()


def _stop_snakemake(proc: subprocess.Popen) -> None:
    stop_process_group(proc, signal.SIGINT, SNAKEMAKE_STOP_S)


def _own_group_dying_with_parent() -> None:
    # Out of the terminal's group, Snakemake hears SIGINT only from the launcher: restore the
    # default a non-interactive shell's background job (`make run &`) starts without.
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG


def stop_process_group(proc: subprocess.Popen, first: int, timeout_s: float) -> None:
    """Send ``first`` to the process group led by ``proc`` and wait ``timeout_s`` for the
    whole group to end (``proc`` and every job it started: a job still cleaning up can
    outlive Snakemake); then SIGTERM and, :data:`KILL_AFTER_S` later, SIGKILL to the group.
    Returns only when the group is empty or SIGKILL has been sent and waited for."""
    for signum, wait_s in ((first, timeout_s), (signal.SIGTERM, KILL_AFTER_S),
                           (signal.SIGKILL, KILL_AFTER_S)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            break  # the whole group is gone
        if _group_ends(proc, wait_s):
            break


def _group_ends(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether ``proc`` and every other live member of its process group end within
    ``timeout_s`` (``proc`` is reaped here; the others, children of ``proc``, are reaped by
    whoever adopts them, which may be never in a container: zombies do not count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None and not _live_members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _live_members(pgid: int) -> bool:
    """Whether a process other than a zombie is in process group ``pgid``."""
    proc_fs = Path("/proc")
    if not (proc_fs / "self" / "stat").is_file():  # no procfs: ask the kernel
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc_fs.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
