"""`python -m sim run`: the config files and items of a Snakemake command line checked before
Snakemake (which parses them before the Snakefile's validator could) starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from snakemake.cli import get_argument_parser, parse_config

from sim.__main__ import main
from sim.launch import config_arguments, parse_config_items, stop_process_group
from tests.workflow.sandbox import copy_workflow

REPO = Path(__file__).resolve().parents[2]

#: Command lines in every form Snakemake's parser accepts for config files and items.
COMMAND_LINES = [
    ["--cores", "2", "--configfile", "a.yaml"],
    ["--configfile", "a.yaml", "b.yaml", "-n"],
    ["--configfiles", "a.yaml", "--config", "engine=fast", "device=cpu", "--cores", "1"],
    ["--configfile=a.yaml", "--config=engine=fast", "all"],
    ["-C", "engine=fast", "--configfile", "a.yaml", "--configfile", "b.yaml"],
    ["all", "--cores", "2"],
    ["--configfile", "a.yaml", "--configfile=b.yaml", "--config", "engine=fast", "-C", "x_1=2"],
]


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=lambda a: " ".join(a))
def test_config_arguments_are_read_as_snakemakes_own_parser_reads_them(argv):
    reference = get_argument_parser().parse_args(argv)
    files, items = config_arguments(argv)
    assert files == [str(p) for p in reference.configfile]
    assert items == list(reference.config or [])


def test_config_items_get_the_values_snakemake_gives_them():
    items = ["engine=fast", "count=3", "ratio=2.5", "flag=True", "off=False", "empty=",
             "nested={rings: 32}", "word=cpu-1"]
    assert parse_config_items(items) == parse_config(items)


def _one_error_line(argv, capsys) -> str:
    code = main(["run", "-n", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_every_config_file_snakemake_cannot_parse_gives_one_line_with_the_file(tmp_path,
                                                                                 capsys):
    cases = {"empty.yaml": ("", "is empty"),
             "syntax.yaml": ("scanner:\n  rings: [1,\n  modules: 2\n", "not valid YAML at line"),
             "list.yaml": ("- 1\n- 2\n", "top level must be a mapping"),
             "tab.yaml": ("scanner:\n\trings: 32\n", "not valid YAML at line 2")}
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        line = _one_error_line(["--configfile", str(path)], capsys)
        assert line.startswith(f"error: config file {path}") and expected in line, line
    missing = tmp_path / "missing.yaml"
    assert _one_error_line(["--configfile", str(missing)], capsys) == \
        f"error: config file {missing} does not exist"
    assert _one_error_line(["--configfile", str(tmp_path)], capsys) == \
        f"error: config file {tmp_path} is a folder, not a YAML file"


def test_bad_config_items_give_one_line_with_the_item(capsys):
    line = _one_error_line(["--config", "scanner.rings=32"], capsys)
    assert line.startswith("error: --config scanner.rings=32: nested keys cannot be set")
    assert "`scanner: {rings: 32}`" in line
    assert "`a: {b: {c: 1}}`" in _one_error_line(["--config", "a.b.c=1"], capsys)
    assert _one_error_line(["--config", "engine"], capsys) == \
        "error: --config engine: expected KEY=VALUE"
    assert "'1x' is not a config key" in _one_error_line(["--config", "1x=2"], capsys)


def test_a_repeated_option_is_refused_because_snakemake_would_drop_all_but_the_last(capsys):
    # The reference: Snakemake's own parser keeps the last --configfile only.
    assert get_argument_parser().parse_args(
        ["--configfile", "a.yaml", "--configfile", "b.yaml"]).configfile == [Path("b.yaml")]
    line = _one_error_line(["--configfile", "a.yaml", "--configfile", "b.yaml"], capsys)
    assert line == ("error: --configfile is given 2 times; Snakemake would read only the last "
                    "one: give every value after one option (--configfile a.yaml b.yaml)")
    assert "--config is given 2 times" in _one_error_line(
        ["--config", "engine=fast", "--config", "device=cpu"], capsys)


def test_the_merged_config_is_validated_with_the_key_named(tmp_path, capsys):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("scanner:\n  rings: .nan\n")
    assert "config key scanner.rings" in _one_error_line(["--configfile", str(overlay)], capsys)
    # Later sources win, as in Snakemake: the item's engine replaces the overlay's.
    overlay.write_text("engine: fast\n")
    line = _one_error_line(["--configfile", str(overlay), "--config", "engine=nope"], capsys)
    assert line.startswith("error: config key engine: 'nope' is not one of")


def test_limits_and_paths_the_config_implies_are_refused_before_snakemake(tmp_path, capsys):
    """What the dry run could know: a training that would run for millennia, a CT folder that
    is not there; one line each, nothing started."""
    overlay = tmp_path / "o.yaml"
    overlay.write_text("train: {steps: 1.0e+12}\n")
    line = _one_error_line(["--configfile", str(overlay)], capsys)
    assert line.startswith("error: config key train.steps: the train attention_gan job is "
                           "expected to take about") and "years" in line, line
    overlay.write_text("ct_images: {source: dicom, path: /no/such/series}\n")
    assert _one_error_line(["--configfile", str(overlay)], capsys).startswith(
        "error: config key ct_images.path: /no/such/series does not exist")


@pytest.mark.parametrize("target, overlay, expected", [
    ("statistical_validation", "validation: {datasets: [nope]}\n",
     "config key validation.datasets: 'nope' is not a dataset of the config"),
    ("statistical_validation", "validation: {acquisition: paper}\n",
     "config key validation.acquisition: 'paper' is not an acquisition of dataset 'tubes'"),
    ("detectability_study", "detectability_study: {datasets: [nope]}\n",
     "config key detectability_study.datasets: 'nope' is not a dataset of the config"),
    ("detectability_study", "detectability_study: {acquisition: paper}\n",
     "config key detectability_study.acquisition: 'paper' is not an acquisition of dataset"),
])
def test_an_on_request_target_has_its_section_checked_when_asked_for(tmp_path, capsys,
                                                                      target, overlay,
                                                                      expected):
    """The section of a target run on request is checked when that target is on the
    command line (one line naming the key, before Snakemake), and only then."""
    path = tmp_path / "o.yaml"
    path.write_text(overlay)
    line = _one_error_line(["--cores", "1", target, "--configfile", str(path)], capsys)
    assert line.startswith(f"error: {expected}"), line
    from sim.launch import check_snakemake_config

    check_snakemake_config(["--cores", "1", "--configfile", str(path)])  # `all`: not checked


def test_a_good_command_line_runs_snakemake_with_it_unchanged(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("engine: fast\n")
    # In a copy of the workflow: the repository's own results/ would leave nothing to do.
    (tmp_path / "workflow").mkdir()
    workflow = copy_workflow(tmp_path / "workflow")
    out = subprocess.run([sys.executable, "-m", "sim", "run", "--dry-run", "--quiet", "rules",
                          "--configfile", str(overlay)], cwd=workflow, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # Snakemake's own summary of the dry run: the launcher handed over to it.
    assert "This was a dry-run" in out.stdout + out.stderr


def test_a_missing_executor_plugin_is_named_with_its_install_command(tmp_path, capsys):
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text("executor: no-such-cluster\njobs: 10\n")
    line = _one_error_line(["--profile", str(profile)], capsys)
    assert line == (f"error: {profile / 'config.yaml'}: executor no-such-cluster: the executor "
                    "plugin snakemake-executor-plugin-no-such-cluster is not installed in this "
                    "environment")
    assert "plugin snakemake-executor-plugin-other is not installed" in _one_error_line(
        ["--executor", "other"], capsys)


# A Snakemake stand-in: its job (a child in its process group) outlives it after a stop.
_LEADER = """
import os, signal, subprocess, sys, time
job = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(job.pid, flush=True)
signal.signal(signal.SIGINT, lambda *a: os._exit(130))  # the leader stops at once
time.sleep(60)
"""


def _group(job_code: str) -> tuple[subprocess.Popen, psutil.Process]:
    leader = subprocess.Popen([sys.executable, "-c", _LEADER, job_code],
                              stdout=subprocess.PIPE, text=True,
                              preexec_fn=lambda: os.setpgid(0, 0))
    job = psutil.Process(int(leader.stdout.readline()))
    time.sleep(0.5)  # the job's interpreter starts and installs its handlers
    return leader, job


def _done(job: psutil.Process) -> bool:
    try:
        return job.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_stop_waits_for_every_job_of_the_group_not_only_its_leader():
    """Snakemake ends on SIGINT before its jobs finish their own clean-up: the launcher
    returns only when the job has ended too (it did not, once, in the stress test)."""
    leader, job = _group("import signal, time\n"
                         "signal.signal(signal.SIGINT, lambda *a: None)\n"
                         "time.sleep(1.0)")  # a clean-up that takes a second
    stop_process_group(leader, signal.SIGINT, timeout_s=20)
    assert leader.returncode == 130 and _done(job)


def test_a_job_that_ignores_the_stop_is_terminated_then_killed():
    leader, job = _group("import signal, time\n"
                         "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                         "time.sleep(60)")
    stop_process_group(leader, signal.SIGINT, timeout_s=0.5)
    assert _done(job)


# The launcher with a stand-in Snakemake, and a stop signal sent to it from inside `Popen`,
# after the child exists and before `Popen` has returned it (the window of the start).
_STARTING = """
import os, signal, subprocess, sys, psutil
import sim.launch as launch
from pipeline.interrupts import Interrupted, stop_on_signals

started = []

class SignalledPopen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        started.append(self.pid)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between these bytecodes
            pass

subprocess.Popen = SignalledPopen
launch.check_snakemake_config = lambda argv: {}
launch.snakemake_executable = lambda: sys.argv[1]
with stop_on_signals(exiting=True):
    try:
        launch.run_snakemake([])
        code = 0
    except Interrupted as exc:
        code = exc.exit_code
try:
    alive = psutil.Process(started[0]).status() != psutil.STATUS_ZOMBIE
except psutil.NoSuchProcess:
    alive = False
print(code, alive)
"""


def test_a_stop_while_snakemake_starts_still_stops_it_before_the_launcher_ends(tmp_path):
    """A stop signal that reaches the launcher while `Popen` is starting Snakemake (a cold
    start signalled within its first second) is passed on once Snakemake runs: the launcher
    ends with the signal's code and leaves no Snakemake behind."""
    fake = tmp_path / "snakemake"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    fake.chmod(0o755)
    out = subprocess.run([sys.executable, "-c", _STARTING, str(fake)], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["143", "False"], out.stderr[-2000:]
