"""The README's commands, run as written in a copy of the workflow.

Every command of the README's ``bash`` blocks and every Snakemake command it quotes inline is
collected from the README itself (a command added there is tested without editing this file):

* Snakemake runs (``make run``, ``python -m sim run``, ``snakemake ...``): as a dry run, which
  builds and validates the whole DAG of that command line;
* one stage by hand (``python -m sim|recon ...``): run for real, one small job each
  (``/tmp/`` paths moved into the test's folder; ``run.root`` and ``my.yaml``, which the README
  leaves to the reader, written here);
* the generative stage by hand: ``positron-features`` run for real on an image set built here;
  the training commands, which take minutes at the default settings, parsed by their own
  command line (every documented option exists and the command is the one named);
* benchmarks: their command lines (``--help``), since each takes minutes.

``make test`` is what runs this file, and ``make run`` is the full run (its commands are taken
from ``make -n`` and dry-run).
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot

from recon.image_io import read_recon
from sim.listmode.file import read_listmode
from tests.sim.listmode.test_root_import import _events, _gate9_branches
from tests.workflow.sandbox import REPO, copy_workflow

README = (REPO / "README.md").read_text()
DRY_RUN = ["--dry-run", "--quiet", "rules"]


def bash_commands() -> list[str]:
    """The commands of the README's bash blocks: continuation lines joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def inline_snakemake_commands() -> list[str]:
    """Snakemake command lines quoted in the README's text (`snakemake ...`)."""
    spans = re.findall(r"`((?:\.venv/bin/)?snakemake [^`]+)`", README)
    return [" ".join(s.split()) for s in spans if "..." not in s]


def readme_yaml_files() -> dict[str, str]:
    """The YAML blocks the README names a file for (first line ``# path``)."""
    files = {}
    for block in re.findall(r"```yaml\n(.*?)```", README, flags=re.S):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".yaml"):
            files[first[2:].strip()] = block
    return files


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """The repository's workflow, its Makefile and benchmarks, its `.venv` (linked) and the
    config files the README asks the reader to write."""
    root = copy_workflow(tmp_path_factory.mktemp("readme"),
                         extra=("Makefile", "pyproject.toml", "benchmarks", "gate_macros"))
    (root / ".venv").symlink_to(Path(sys.executable).parents[1], target_is_directory=True)
    for name, text in readme_yaml_files().items():
        (root / name).write_text(text)
    # `validate-config --configfile my.yaml`: the reader's own overlay; the README's example.
    (root / "my.yaml").write_text(readme_yaml_files()["config/thin_walls.yaml"])
    (root / "tmp").mkdir()
    return root


def _run(command: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    # As in a shell with the venv activated (the README's bare `snakemake ...` form).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    run.output = run.stdout + run.stderr
    return run


def test_the_readme_is_read_as_expected():
    """The collectors find what the README documents (so the tests below cannot pass by
    finding nothing)."""
    commands = bash_commands()
    assert "make run" in commands
    assert sum(c.startswith(".venv/bin/python -m sim run") for c in commands) >= 4
    assert any(c.startswith(".venv/bin/python -m models train") for c in commands)
    assert "snakemake --cores 8 engine_crosscheck" in inline_snakemake_commands()
    assert "config/thin_walls.yaml" in readme_yaml_files()


def _snakemake_runs(sandbox: Path) -> list[list[str]]:
    """Every documented Snakemake command line, as argv (``make`` ones through ``make -n``)."""
    runs = []
    for command in bash_commands():
        argv = shlex.split(command)
        if argv[:2] == ["make", "run"]:
            made = _run(["make", "-n", *argv[1:]], sandbox)
            assert made.returncode == 0, made.output
            launched = [shlex.split(line) for line in made.stdout.splitlines()
                        if "-m sim run" in line]
            assert launched, made.stdout
            runs += launched
        elif argv[:4] == [".venv/bin/python", "-m", "sim", "run"]:
            runs.append(argv)
    return runs


def _cannot_run_here(argv: list[str]) -> bool:
    """Documented forms that need what this machine may lack: a finished run (--report), the
    Slurm plugin (an extra, README), conda."""
    return ("--report" in argv
            or "--profile" in argv and importlib.util.find_spec(
                "snakemake_executor_plugin_slurm") is None
            or "--sdm" in argv and shutil.which("conda") is None)


@pytest.mark.slow
def test_every_documented_snakemake_run_dry_runs(sandbox):
    runs = _snakemake_runs(sandbox)
    assert len(runs) >= 6
    for argv in runs:
        if _cannot_run_here(argv):
            continue
        run = _run([*argv, *DRY_RUN], sandbox)
        assert run.returncode == 0, (argv, run.output[-3000:])
        assert "This was a dry-run" in run.output, argv


@pytest.mark.slow
def test_inline_snakemake_commands_dry_run(sandbox):
    ran = 0
    for command in inline_snakemake_commands():
        argv = shlex.split(command)
        if _cannot_run_here(argv):
            continue
        if "--lint" not in argv:
            argv += DRY_RUN
        run = _run(argv, sandbox)
        assert run.returncode == 0, (command, run.output[-3000:])
        ran += 1
    assert ran >= 3


def _by_hand(sandbox: Path, package: str) -> list[list[str]]:
    """The README's by-hand commands of one package, `/tmp/` moved into the sandbox."""
    prefix = f".venv/bin/python -m {package} "
    return [shlex.split(c.replace("/tmp/", f"{sandbox}/tmp/")) for c in bash_commands()
            if c.startswith(prefix) and not c.startswith(".venv/bin/python -m sim run")]


@pytest.mark.slow
def test_one_stage_by_hand_commands_run_as_written(sandbox):
    """phantom -> simulate -> reconstruct, validate-config, import-root, export-petsird."""
    with uproot.recreate(sandbox / "run.root") as f:  # `--root run.root`: a GATE 9 file
        f["Coincidences"] = _gate9_branches(_events(300, 1))
        f["delay"] = _gate9_branches(_events(20, 2))
        # GATE fills this histogram once with the number of decays (README: read from it).
        f["total_nb_primaries"] = np.histogram([10**6], bins=1, range=(10**6 - 0.5, 10**6 + 0.5))
    commands = _by_hand(sandbox, "sim") + _by_hand(sandbox, "recon")
    names = [argv[3] for argv in commands]
    # The chain first, then what reads its outputs.
    order = ["phantom", "simulate", "reconstruct", "validate-config", "import-root",
             "export-petsird"]
    assert sorted(names, key=order.index) == sorted(order, key=order.index), names
    for name in order:
        argv = commands[names.index(name)]
        if name == "export-petsird":  # the documented input: a run's list-mode file
            listmode = sandbox / argv[argv.index("--listmode") + 1]
            listmode.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(sandbox / "tmp" / "t_short.h5", listmode)
        run = _run(argv, sandbox)
        assert run.returncode == 0, (name, run.output[-3000:])
    tmp = sandbox / "tmp"
    with h5py.File(tmp / "t.h5") as f:
        assert f["activity"].ndim == 3
    assert read_listmode(tmp / "t_short.h5").coincidences["crystal1"].size > 100
    assert np.isfinite(read_recon(tmp / "t_short_recon.h5").image).all()
    assert read_listmode(sandbox / "run.h5").coincidences["crystal1"].size == 300
    assert (sandbox / "tube_0000_short.petsird").stat().st_size > 1000


@pytest.mark.slow
def test_generative_stage_by_hand_commands(sandbox, monkeypatch):
    from models.__main__ import main
    from models.data.positron_dataset import build_positron_dataset
    from pipeline.config import load_config
    from pipeline.specs import phantom_names, positron_dataset_spec
    from tests.models.fixtures import make_results

    commands = _by_hand(sandbox, "models")
    assert [argv[3] for argv in commands] == ["pretrain-vae", "positron-features", "train",
                                              "generate", "enhance", "downstream"]
    # positron-features for real, on an image set of the default config built here from
    # small reconstructions (the run's own would take its whole simulation).
    results = sandbox / "results" / "tubes"
    config = load_config(sandbox / "config" / "config.yaml")
    make_results(results, phantom_names(config, "tubes"), np.random.default_rng(0), slices=30)
    build_positron_dataset(positron_dataset_spec(config, "tubes"), results,
                           results / "datasets" / "positron.h5")
    run = _run(commands[1], sandbox)
    assert run.returncode == 0, run.output[-3000:]
    with h5py.File(sandbox / "tmp" / "features.h5") as f:
        assert np.isfinite(f["features"][...]).all()
    # The others train for minutes at the default settings: each one's own command line
    # accepts it as written and names its command.
    parsed = {}

    def parse_only(parser, argv, package):
        parsed[argv[0]] = parser.parse_args(argv)
        return 0

    monkeypatch.setattr("models.cli.run_command", parse_only)
    for argv in commands:
        assert main(argv[3:]) == 0
        assert parsed[argv[3]].func.__name__ == "_cmd_" + {
            "pretrain-vae": "pretrain_vae", "positron-features": "features", "train": "train",
            "generate": "generate", "enhance": "enhance", "downstream": "downstream"}[argv[3]]


def test_documented_benchmark_command_lines_are_accepted(sandbox):
    """Each takes minutes: its own command line (imports and options) is what is run here."""
    benchmarks = [shlex.split(c) for c in bash_commands()
                  if c.startswith(".venv/bin/python benchmarks/")]
    assert len(benchmarks) >= 5
    for argv in benchmarks:
        run = _run([*argv, "--help"], sandbox, timeout=120)
        assert run.returncode == 0 and run.stdout.startswith("usage:"), (argv, run.output)
