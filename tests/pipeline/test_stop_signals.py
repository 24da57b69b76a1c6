"""The stop-signal handling of every command (pipeline/interrupts.py), in this process with
real signals: the first signal raises, a swallowed one is raised again at the next safe point
and never printed as "Exception ignored", later signals are ignored while stopping, the
watchdog acts on a command that does not stop, the old handlers come back afterwards, and an
ignored disposition (nohup) is left alone."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
import weakref

import pytest

from pipeline.interrupts import (
    Interrupted,
    raise_if_stopped,
    stop_message,
    stop_on_signals,
    stop_requested,
)

# Signals sent here must not meet an ignored disposition (a suite started in the
# background): see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("foreground_signals")


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.2)  # the handler runs at the next bytecode of the main thread


def test_the_first_signal_raises_and_the_handlers_are_put_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with stop_on_signals(grace_s=60), pytest.raises(Interrupted) as info:
        _signal_self(signal.SIGHUP)
    assert info.value.signum == signal.SIGHUP and info.value.exit_code == 129
    assert isinstance(info.value, KeyboardInterrupt)  # `except Exception` lets it through
    assert {s: signal.getsignal(s) for s in before} == before
    assert stop_requested() is None


def test_a_swallowed_stop_is_raised_again_at_the_next_safe_point(capsys):
    class Holder:
        pass

    holder = Holder()
    ran = []

    def callback(_ref):  # what the flaky Ctrl-C hit: a signal during a weakref callback
        ran.append(True)
        _signal_self(signal.SIGINT)

    ref = weakref.ref(holder, callback)  # noqa: F841 - kept alive until the holder dies
    with stop_on_signals(grace_s=60):
        del holder
        gc.collect()
        assert ran and stop_requested() == signal.SIGINT  # raised, swallowed, recorded
        with pytest.raises(Interrupted):
            raise_if_stopped()
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "KeyboardInterrupt" not in err, err


def test_later_signals_are_ignored_while_the_command_stops():
    with stop_on_signals(grace_s=60):
        try:
            _signal_self(signal.SIGINT)
        except Interrupted:
            # Cleaning up: a second Ctrl-C and a SIGTERM must not cut this in half.
            _signal_self(signal.SIGINT)
            _signal_self(signal.SIGTERM)
            finished = True
        assert finished and stop_requested() == signal.SIGINT


def test_the_watchdog_ends_a_command_that_does_not_stop():
    fired = []
    with stop_on_signals(grace_s=0.3, on_timeout=fired.append):
        try:
            _signal_self(signal.SIGTERM)
        except Interrupted:
            pass  # a command that goes on regardless
        time.sleep(0.6)
    assert fired == [signal.SIGTERM]
    # A command that stops in time: the watchdog does nothing.
    fired.clear()
    with stop_on_signals(grace_s=0.5, on_timeout=fired.append), pytest.raises(Interrupted):
        _signal_self(signal.SIGTERM)
    time.sleep(0.7)
    assert fired == []


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals(grace_s=60):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            _signal_self(signal.SIGHUP)  # nohup: nothing happens
            assert stop_requested() is None
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def run():
        with stop_on_signals(grace_s=60):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


@pytest.mark.parametrize("signum, text", [
    (signal.SIGINT, "error: interrupted by SIGINT (Ctrl-C); stopped, no partial output was left"),
    (signal.SIGTERM, "error: interrupted by SIGTERM; stopped, no partial output was left")])
def test_the_stop_line(signum, text):
    assert stop_message(signum) == text
