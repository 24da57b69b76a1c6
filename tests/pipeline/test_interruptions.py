"""Interruptions with real signals in subprocesses: Ctrl-C ends a multi-worker simulation
with one line and no worker left; workers die with a parent killed outright; the temporary
files of a killed write are removed when the output is written again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline.fileio import atomic_output, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[2]
OVERLAY = ("run_datasets: [qa_point]\n"
           "datasets: {qa_point: {acquisitions: [reference]}}\n")


@pytest.fixture(scope="module")
def point_phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupt")
    overlay = folder / "overlay.yaml"
    overlay.write_text(OVERLAY)
    phantom = folder / "point_0000.h5"
    run = subprocess.run(_sim("phantom", overlay, "--phantom", "point_0000", "--out",
                              str(phantom)), cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return overlay, phantom


def _sim(command: str, overlay: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sim", command, "--configfile", "config/config.yaml",
            "--configfile", "config/qa.yaml", "--configfile", str(overlay), "--dataset",
            "qa_point", *args]


def _start_simulation(overlay: Path, phantom: Path, out: Path) -> tuple[subprocess.Popen,
                                                                        list[psutil.Process]]:
    """A two-worker simulation of 6 million decays, returned once both workers run."""
    proc = subprocess.Popen(_sim("simulate", overlay, "--phantom", "point_0000",
                                 "--acquisition", "reference", "--phantom-file", str(phantom),
                                 "--out", str(out), "--threads", "2"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_sigint)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = parent.children(recursive=True)
        if len(workers) >= 2 and list(out.parent.glob(f".{out.name}.*.tmp")):
            time.sleep(1.0)  # into the chunks
            return proc, parent.children(recursive=True)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the simulation never started its two workers")


def _default_sigint() -> None:
    # A shell starts background jobs (CI, `make test &`) with SIGINT ignored, and Python then
    # keeps ignoring it: give the simulation the disposition of a terminal's foreground job.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_and_no_worker_left(point_phantom, tmp_path):
    overlay, phantom = point_phantom
    out = tmp_path / "out" / "reference.h5"
    proc, workers = _start_simulation(overlay, phantom, out)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: interrupted; no output was written"], stderr[-2000:]
    assert _gone(workers, 10), "workers outlived the interrupted simulation"
    assert list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_workers_die_with_a_parent_killed_outright(point_phantom, tmp_path):
    overlay, phantom = point_phantom
    out = tmp_path / "out" / "reference.h5"
    proc, workers = _start_simulation(overlay, phantom, out)
    proc.kill()  # SIGKILL: no handler runs in the parent
    proc.communicate(timeout=30)
    assert _gone(workers, 10), "workers outlived their killed parent"
    # Its temporary file stays (nothing could remove it), until the output is written again.
    stale = list(out.parent.glob(f".{out.name}.*.tmp"))
    assert len(stale) == 1
    with atomic_output(out) as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "x.h5"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".x.h5.{dead.pid}.tmp"
    live = tmp_path / f".x.h5.{os.getpid()}.tmp"
    other = tmp_path / f".y.h5.{dead.pid}.tmp"
    stale_scratch = tmp_path / f".x.h5.{dead.pid}.scratch"
    live_scratch = tmp_path / f".x.h5.{os.getpid()}.scratch"
    for p in (stale, live, other):
        p.write_text("partial")
    for folder in (stale_scratch, live_scratch):
        folder.mkdir()
        (folder / "raw.h5").write_text("partial")
    assert remove_stale_temporaries(out) == [stale, stale_scratch]
    assert not stale.exists() and live.exists() and other.exists()
    assert not stale_scratch.exists() and live_scratch.exists()
