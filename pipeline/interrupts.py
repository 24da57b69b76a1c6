"""Stopping a command on SIGINT, SIGTERM or SIGHUP: promptly, completely, and only once.

Python's default answer to Ctrl-C is a ``KeyboardInterrupt`` raised wherever the main thread
happens to be. Where that is a weakref callback, a ``__del__`` or a garbage-collector
callback, the interpreter prints "Exception ignored in ..." and carries on: the signal is
lost and the command runs to the end. SIGTERM (Snakemake stopping a job, a cluster's time
limit) kills a process outright by default, with no clean-up at all. Every command of the
pipeline therefore runs under :func:`stop_on_signals`, which

* records the first signal and raises :class:`Interrupted` (a ``KeyboardInterrupt``, so
  ``except Exception`` blocks let it through) in the main thread;
* keeps the record when that exception is swallowed (the hook for unraisable exceptions
  drops it without a word), so the next safe point, :func:`raise_if_stopped`, raises it
  again: the simulation's chunk loop, every MLEM subset, every training step, and every
  output commit (:mod:`pipeline.fileio`) are safe points;
* ignores later signals while the command stops, so a second Ctrl-C cannot cut a clean-up
  in half (a half-removed staging folder);
* bounds the stop: a watchdog thread ends the process ``grace_s`` seconds after the first
  signal if it is still running (a swallowed exception in code with no safe point); what it
  leaves are hidden temporary files named for the process, which the next write of the
  same output removes (:func:`pipeline.fileio.remove_stale_temporaries`).

:class:`deferred_stop` marks the few statements that must not be cut in the middle (check
for a stop, then rename a finished file into place): a signal there is raised when the block
ends. A disposition of ``SIG_IGN`` is left alone (``nohup``, a background job of a
non-interactive shell), as Python itself does for SIGINT.

Signal dispositions are process-wide, so the record of the signal is too: one
:class:`StopState` per process while a command runs, none otherwise (library calls from a
test or a notebook keep Python's defaults).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

#: Signals that stop a command, with the exit code each gives (128 + number).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Seconds a command has, after the first signal, to stop on its own before the watchdog
#: ends it.
GRACE_S = 15.0


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by signal ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process stopped by it."""
        return 128 + self.signum


def stop_message(signum: int) -> str:
    """The one line a stopped command prints."""
    name = signal.Signals(signum).name
    how = " (Ctrl-C)" if signum == signal.SIGINT else ""
    return f"error: interrupted by {name}{how}; stopped, no partial output was left"


@dataclass
class StopState:
    """What the handlers of one command share: the first signal, whether a block is
    deferring it, and the event that tells the watchdog the command has returned."""

    grace_s: float
    on_timeout: Callable[[int], None]
    signum: int | None = None
    deferring: int = 0
    finished: threading.Event = field(default_factory=threading.Event)


_STATE: list[StopState] = []  # the running command's state, when one runs in this process


def _handler(signum: int, frame: FrameType | None) -> None:
    if not _STATE:  # the command returned while this signal was on its way
        raise Interrupted(signum)
    state = _STATE[0]
    if state.signum is not None:
        return  # already stopping: let the clean-up finish
    state.signum = signum
    threading.Thread(target=_watchdog, args=(state,), name="stop-watchdog",
                     daemon=True).start()
    if state.deferring == 0:
        raise Interrupted(signum)


def _watchdog(state: StopState) -> None:
    if not state.finished.wait(state.grace_s):
        state.on_timeout(int(state.signum))


def _exit_now(signum: int) -> None:
    """The watchdog's last resort: the one line, then the process ends at once."""
    try:
        sys.stderr.write(stop_message(signum) + "\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


@contextmanager
def stop_on_signals(grace_s: float = GRACE_S, on_timeout: Callable[[int], None] = _exit_now,
                    exiting: bool = False) -> Iterator[StopState]:
    """Handle :data:`STOP_SIGNALS` as the module docstring says while the block runs.

    Parameters
    ----------
    grace_s : float
        Seconds after the first signal before ``on_timeout(signum)`` is called (in the
        watchdog thread) if the block is still running.
    on_timeout : callable
        What the watchdog does; by default print the stop line and end the process.
    exiting : bool
        The process ends with the block (an entry point): afterwards the stop signals are
        ignored instead of given back their old handlers, so a second Ctrl-C pressed while
        the command stops cannot raise a traceback on the way out.

    Outside the main thread (where Python cannot install handlers) the block runs with the
    dispositions it has. Nested in another such block, it shares the outer one's handlers
    and record, with its own ``grace_s`` and ``on_timeout`` while it runs.
    """
    if _STATE:  # nested (a command run by an entry point that guarded its imports)
        outer = _STATE[0]
        saved = outer.grace_s, outer.on_timeout
        outer.grace_s, outer.on_timeout = grace_s, on_timeout
        try:
            yield outer
        finally:
            outer.grace_s, outer.on_timeout = saved
        return
    state = StopState(grace_s, on_timeout)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    hook = sys.unraisablehook
    _STATE.append(state)
    try:
        for s, old in previous.items():
            if old is not signal.SIG_IGN:
                signal.signal(s, _handler)
        sys.unraisablehook = _drop_interrupted(hook)
        yield state
    finally:
        state.finished.set()
        for s, old in previous.items():
            signal.signal(s, signal.SIG_IGN if exiting
                          else old if old is not None else signal.SIG_DFL)
        sys.unraisablehook = hook
        _STATE.clear()


def run_cli(module: str, argv: list[str] | None, exiting: bool = False) -> int:
    """An entry point's ``main``: the handlers go in first, then ``module`` (the stage's
    command line, whose imports take seconds with torch) is imported and its
    ``main(argv)`` run, so a signal at any moment gives the one stop line. ``exiting``: the
    process ends when this returns (:func:`stop_on_signals`)."""
    import importlib

    with stop_on_signals(exiting=exiting):
        try:
            main = importlib.import_module(module).main
        except KeyboardInterrupt as exc:
            signum = stop_requested() or getattr(exc, "signum", signal.SIGINT)
            print(stop_message(signum), file=sys.stderr)
            return 128 + signum
        return main(argv)


def _drop_interrupted(hook):
    """An unraisable-exception hook that drops :class:`Interrupted` (the stop stays
    recorded and the next safe point raises it) and passes anything else to ``hook``."""

    def unraisable(info) -> None:
        if isinstance(info.exc_value, Interrupted):
            return
        hook(info)

    return unraisable


def stop_requested() -> int | None:
    """The signal that asked the running command to stop, or None."""
    return _STATE[0].signum if _STATE else None


def raise_if_stopped() -> None:
    """A safe point: raise :class:`Interrupted` if a stop signal has arrived."""
    signum = stop_requested()
    if signum is not None:
        raise Interrupted(signum)


class deferred_stop:  # noqa: N801 - used like a function: ``with deferred_stop():``
    """A block a signal must not cut: a stop signal arriving inside it is raised when the
    block ends (unless an exception is already leaving it, which then goes on)."""

    def __enter__(self) -> None:
        if _STATE:
            _STATE[0].deferring += 1

    def __exit__(self, kind, value, traceback) -> None:
        if not _STATE:
            return
        _STATE[0].deferring -= 1
        if kind is None and _STATE[0].deferring == 0 and sys.exc_info()[0] is None:
            raise_if_stopped()


@contextmanager
def child_process(args: list[str], stop: Callable[[subprocess.Popen], None],
                  **popen_kwargs) -> Iterator[subprocess.Popen]:
    """Start ``args`` (``subprocess.Popen(args, **popen_kwargs)``) and yield it; if the block
    leaves with an exception (a stop signal included), ``stop(proc)`` runs first.

    A stop signal that arrives while the child is being started (between the fork and the
    moment ``Popen`` returns, a window ``preexec_fn`` widens) is held until ``Popen`` has
    returned: raised there, it would leave a running child that nothing refers to, which
    the command would then outlive (:class:`deferred_stop`).
    """
    proc: subprocess.Popen | None = None
    try:
        with deferred_stop():
            proc = subprocess.Popen(args, **popen_kwargs)
        yield proc
    except BaseException:
        if proc is not None:
            stop(proc)
        raise
