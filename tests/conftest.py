"""Shared fixtures (the validated default config, small phantom specs, a tiny disk) and the
order in which the test files are handed to the pytest-xdist workers."""

from __future__ import annotations

import copy

import pytest

from pipeline.config import load_config, validate_config
from sim.phantoms.spec import phantom_spec

#: The test files that take minutes, longest first (measured with ``pytest --durations``):
#: handed out first, so that the short files fill the end of the run on both workers instead
#: of one worker running a long file alone at the end (`make test`: ``--dist loadfile``,
#: which hands out whole files in collection order).
LONGEST_FILES = (
    "tests/workflow/test_workflow.py",
    "tests/workflow/test_readme_commands.py",
    "tests/pipeline/test_interruptions.py",
    "tests/sim/engines/statistical/test_trues.py",
    "tests/recon/test_stage.py",
    "tests/sim/engines/statistical/test_engine.py",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    """:data:`LONGEST_FILES` first, then the other files holding a test marked ``slow``, then
    the rest; the order within a file is kept."""
    rank = {name: k for k, name in enumerate(LONGEST_FILES)}
    slow_files = {item.nodeid.split("::")[0] for item in items
                  if item.get_closest_marker("slow") is not None}

    def key(item) -> int:
        name = item.nodeid.split("::")[0]
        return rank.get(name, len(rank) + (name not in slow_files))

    items.sort(key=key)


@pytest.fixture(scope="session")
def default_config() -> dict:
    return load_config()


@pytest.fixture
def make_spec(default_config):
    """Build a phantom spec from a dataset section overriding the default `tubes` set."""

    def _make(dataset: dict | None = None, phantom: str | None = None, name: str = "t") -> dict:
        cfg = copy.deepcopy(default_config)
        base = {k: v for k, v in cfg["datasets"]["tubes"].items()}
        cfg["datasets"] = {name: {**base, **(dataset or {})}}
        cfg = validate_config(cfg)
        family = cfg["datasets"][name]["family"]
        return phantom_spec(cfg, name, phantom or f"{family}_0000")

    return _make


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB file system (tmpfs), or a skip when this machine does not let us mount one."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({run.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        # A writer that failed may hold its file open until it is collected (torch's zip
        # writer does): collect first, and detach the mount lazily if it is still busy.
        import gc

        gc.collect()
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def foreground_signals():
    """SIGINT, SIGTERM and SIGHUP with a terminal's foreground dispositions for the test,
    the process's own put back afterwards: a suite started in the background (``make test
    &``, ``nohup``, some CI runners) inherits SIGINT and SIGHUP ignored, which the stop
    handling rightly leaves alone, so tests that send themselves signals set them first."""
    import signal

    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
              signal.SIGHUP: signal.SIG_DFL}
    previous = {s: signal.signal(s, handler) for s, handler in wanted.items()}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
