"""Interruptions with real signals in subprocesses: Ctrl-C, SIGTERM and SIGHUP, alone or
twice, at random moments, end every long-running command with one line, its exit code, no
worker left and no file that looks complete (each command many times in a row, so that a
race shows as a failure); workers die with a parent killed outright; the temporary files of
a killed write are removed when the output is written again."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.fileio import atomic_output, remove_stale_temporaries
from pipeline.interrupts import stop_message

REPO = Path(__file__).resolve().parents[2]
OVERLAY = ("run_datasets: [qa_point]\n"
           "datasets: {qa_point: {acquisitions: [short, reference]}}\n")


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
    return [sys.executable, "-m", "sim", *_sim_args(command, overlay, *args)]


def _sim_args(command: str, overlay: Path, *args: str) -> list[str]:
    return [command, "--configfile", "config/config.yaml", "--configfile", "config/qa.yaml",
            "--configfile", str(overlay), "--dataset", "qa_point", *args]


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


#: How a stop signal is sent: to the process group (a terminal's Ctrl-C, Slurm ending a job)
#: or to the process alone (``kill PID``, Snakemake stopping a job).
SENDS = ((signal.SIGINT, "group"), (signal.SIGINT, "pid"), (signal.SIGTERM, "pid"),
         (signal.SIGTERM, "group"), (signal.SIGHUP, "pid"))
DRIVER = Path(__file__).with_name("interrupt_driver.py")
#: Repetitions of each stress test: 20 in `make test`; `POSITRON_STRESS_REPEATS=100 pytest
#: tests/pipeline/test_interruptions.py` for a longer hunt.
REPEATS = int(os.environ.get("POSITRON_STRESS_REPEATS", "20"))


@dataclass(frozen=True)
class Shot:
    """The signals of one repetition: (seconds to wait, signal, where) in order; the first
    wait counts from the moment the command's handlers are in. ``cold``: the command starts
    as a new ``python -m`` process (the signal may come during its imports), else forked
    from a process that has imported it."""

    sends: tuple[tuple[float, int, str], ...]
    cold: bool = False


def plan_shots(n: int, window_s: tuple[float, float], seed: int,
               cold_window_s: tuple[float, float] = (0.0, 2.5)) -> list[Shot]:
    """``n`` repetitions: a first signal at a uniform moment of ``window_s`` after the start,
    every way of sending it in turn; every other repetition a second signal within 0.3 s
    (a second Ctrl-C while the first is being handled); every fourth repetition a cold
    start, signalled within ``cold_window_s``."""
    rng = np.random.default_rng(seed)
    shots = []
    for k in range(n):
        signum, where = SENDS[k % len(SENDS)]
        cold = k % 4 == 3
        sends = [(float(rng.uniform(*(cold_window_s if cold else window_s))), signum, where)]
        if k % 2:
            again, where2 = SENDS[int(rng.integers(len(SENDS)))]
            sends.append((float(rng.uniform(0.0, 0.3)), again, where2))
        shots.append(Shot(tuple(sends), cold))
    return shots


class _Lines:
    """Lines of a pipe read with a timeout (unbuffered: select sees every byte)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def next(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return ""
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def stress(package: str, commands: list[list[str]], shots: list[Shot], tmp_path: Path,
           leftovers: Callable[[int], list[str]], cwd: Path = REPO, own_log: bool = True
           ) -> tuple[list[str], float]:
    """Run ``commands[k]`` of ``package`` under ``shots[k]`` in one driver process; the
    failures (empty when every repetition stopped as it should) and the seconds taken.

    Each repetition must end with 128 + its first signal's number (or, with two signals
    close together, the second's), exactly the matching stop line on stderr (no traceback,
    no "Exception ignored"), no child process alive, and ``leftovers(k)`` (what it left
    that it should not have) empty. Without ``own_log`` the
    stderr is shared with a program the command runs (Snakemake, which echoes its failed
    jobs' logs and its own traceback when stopped while it reads the Snakefile): then the
    stop line must be the last line, and no traceback may pass through the project's own
    command-line code.
    """
    listing = tmp_path / "commands.json"
    listing.write_text(json.dumps(commands))
    log = tmp_path / "driver.stderr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(DRIVER), package, str(listing)],
                                cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, bufsize=0, env=env, start_new_session=True)
    lines = _Lines(proc.stdout.fileno())
    failures, results = [], {}
    try:
        for k, shot in enumerate(shots):
            proc.stdin.write(b"cold\n" if shot.cold else b"go\n")
            begin = lines.next(120).split()
            if begin[:2] != ["BEGIN", str(k)]:
                failures.append(f"#{k}: the driver did not start the command")
                break
            pid = int(begin[2])
            for wait_s, signum, where in shot.sends:
                time.sleep(wait_s)
                try:
                    (os.killpg if where == "group" else os.kill)(pid, signum)
                except ProcessLookupError:  # a second signal after the command had ended
                    pass
            line = lines.next(60)
            if not line:
                failures.append(f"#{k} {shot}: no end 60 s after the signal")
                break
            results[k] = json.loads(line)
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - t0
    sections = log.read_text().split("=== ")[1:]
    for k, result in results.items():
        # The stop is the first signal's; two that are pending together (the main thread in
        # one long C call, an import's) reach Python in the order of their numbers, so with
        # a second signal within 0.3 s either may be the one reported. The code and the
        # line must agree.
        sent = [signum for _, signum, _ in shots[k].sends]
        stop = result["code"] - 128
        text = sections[k].split("\n", 1)[1] if k < len(sections) else ""
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        wrong = []
        if stop not in sent:
            wrong.append(f"exit code {result['code']} (signals sent: {sent})")
        if own_log and errors != [stop_message(stop)]:
            wrong.append(f"error lines {errors}")
        if not own_log and text.strip().splitlines()[-1:] != [stop_message(stop)]:
            wrong.append("the stop line is not the last line")
        # Without its own log: Snakemake's traceback runs through the workflow copy's
        # modules, the command's own would run through the repository's.
        for bad in (("Traceback", "Exception ignored", "KeyboardInterrupt") if own_log
                    else ("Exception ignored", f"{REPO}/pipeline/", f"{REPO}/sim/")):
            if bad in text:
                wrong.append(f"{bad!r} on stderr")
        if result["alive"]:
            wrong.append(f"processes left {result['alive']}")
        wrong += leftovers(k)
        if wrong:
            failures.append(f"#{k} {shots[k]}: {'; '.join(wrong)}\n{text[-1500:]}")
    return failures, seconds


def _left_in(folder: Path) -> list[str]:
    """Whatever a stopped command left in its output folder (it should leave nothing)."""
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() \
        else []
    return [f"left {found}"] if found else []


@pytest.mark.slow
def test_simulate_stops_cleanly_whenever_the_signal_comes(point_phantom, tmp_path):
    """A two-worker simulation, 20 times: Ctrl-C to the group, SIGINT, SIGTERM or SIGHUP to
    the process, SIGTERM to the group, at a random moment of its start-up or its chunks,
    every other time followed by a second signal."""
    overlay, phantom = point_phantom
    n = REPEATS
    outs = [tmp_path / f"run{k}" / "reference.h5" for k in range(n)]
    commands = [_sim_args("simulate", overlay, "--phantom", "point_0000", "--acquisition",
                          "reference", "--phantom-file", str(phantom), "--out", str(out),
                          "--threads", "2") for out in outs]
    failures, seconds = stress("sim", commands, plan_shots(n, (0.02, 1.2), seed=1), tmp_path,
                               lambda k: _left_in(outs[k].parent))
    print(f"{n} interrupted simulations in {seconds:.1f} s")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def point_listmode(point_phantom):
    """A `short` acquisition of the point phantom (16 k prompts): what reconstruct reads."""
    overlay, phantom = point_phantom
    listmode = phantom.with_name("short.h5")
    run = subprocess.run(_sim("simulate", overlay, "--phantom", "point_0000", "--acquisition",
                              "short", "--phantom-file", str(phantom), "--out", str(listmode)),
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return overlay, phantom, listmode


@pytest.mark.slow
def test_reconstruct_stops_cleanly_whenever_the_signal_comes(point_listmode, tmp_path):
    """2D OSEM with its system matrix, attenuation and scatter, 20 times, signals as for the
    simulation: no image, NIfTI, PNG or defect file of a stopped reconstruction is left."""
    overlay, phantom, listmode = point_listmode
    n = REPEATS
    outs = [tmp_path / f"run{k}" / "image.h5" for k in range(n)]
    commands = [_sim_args("reconstruct", overlay, "--listmode", str(listmode),
                          "--phantom-file", str(phantom), "--out", str(out)) for out in outs]
    failures, seconds = stress("recon", commands, plan_shots(n, (0.02, 1.2), seed=2),
                               tmp_path, lambda k: _left_in(outs[k].parent))
    print(f"{n} interrupted reconstructions in {seconds:.1f} s")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def generative_inputs(tmp_path_factory):
    from tests.models.fixtures import make_generative_inputs, tiny_generative_config

    cfg = tiny_generative_config()
    return make_generative_inputs(tmp_path_factory.mktemp("generative"), cfg)


def _not_finished(folder: Path) -> list[str]:
    """What a stopped training may not leave: its final files, or hidden temporaries (a
    complete ``checkpoint.pt`` with its ``history.csv``, and sample grids, are what resuming
    is for)."""
    bad = [str(p.relative_to(folder)) for p in folder.rglob("*")
           if p.name.startswith(".") or p.name in ("final.pt", "losses.png", "metrics.json")]
    return [f"left {sorted(bad)}"] if bad else []


@pytest.mark.slow
def test_training_and_evaluation_stop_cleanly_whenever_the_signal_comes(generative_inputs,
                                                                        tmp_path):
    """The attention GAN's training and the evaluation's feature network, 10 times each, at
    a random moment of their start or their steps: no final model, no temporary file."""
    from pipeline.specs import feature_network_spec, train_spec
    from tests.models.fixtures import tiny_generative_config

    files = generative_inputs
    cfg = tiny_generative_config(steps=100000, checkpoint_every=5, sample_every=50)
    cfg["evaluate"]["feature_network"]["epochs"] = 100000
    n = REPEATS
    outs = [tmp_path / f"run{k}" for k in range(n)]
    train = ["train", "--spec", json.dumps(train_spec(cfg, "tubes", "attention_gan")),
             "--positron", str(files["positron"]), "--ct", str(files["ct"]), "--features",
             str(files["features"]), "--encoder", str(files["encoder"]), "--threads", "1"]
    features = ["feature-network", "--spec", json.dumps(feature_network_spec(cfg, "tubes")),
                "--positron", str(files["positron"]), "--threads", "1"]
    commands = [[*(features if k % 2 else train), "--out-dir", str(out)]
                for k, out in enumerate(outs)]
    failures, seconds = stress("models", commands, plan_shots(n, (0.02, 1.2), seed=3),
                               tmp_path, lambda k: _not_finished(outs[k]))
    print(f"{n} interrupted trainings in {seconds:.1f} s")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_the_launcher_stops_snakemake_and_its_jobs_whenever_the_signal_comes(tmp_path):
    """`python -m sim run` on a one-phantom workflow, 20 times, signals as above: the
    launcher passes the stop on to Snakemake and its jobs (phantom, CT set, simulation), ends
    with its one line and code, and leaves no process, no lock of Snakemake's and no
    temporary file; what finished before the signal may stay (a phantom), complete."""
    from tests.workflow.sandbox import copy_workflow

    (tmp_path / "workflow").mkdir()
    workflow = copy_workflow(tmp_path / "workflow")
    (workflow / "o.yaml").write_text(OVERLAY)
    n = REPEATS
    command = ["run", "--cores", "2", "--configfile", "config/qa.yaml", "o.yaml"]

    def leftovers(k: int) -> list[str]:
        hidden = [str(p.relative_to(workflow)) for p in (workflow / "results").rglob(".*")] \
            if (workflow / "results").exists() else []
        locks = list((workflow / ".snakemake" / "locks").glob("*"))
        listmode = workflow / "results/qa_point/listmode/point_0000/reference.h5"
        return ([f"temporaries {hidden}"] if hidden else []) + (
            [f"Snakemake's locks {locks}"] if locks else []) + (
            [f"{listmode.name} written"] if listmode.exists() else [])

    failures, seconds = stress("sim", [command] * n, plan_shots(n, (0.05, 3.0), seed=4),
                               tmp_path, leftovers, cwd=workflow, own_log=False)
    print(f"{n} interrupted workflow runs in {seconds:.1f} s")
    assert not failures, "\n".join(failures)


def _gone(processes: list[psutil.Process], timeout_s: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


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
