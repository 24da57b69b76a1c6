"""The gate9 engine's job: render, run ``Gate`` from PATH, import the ROOT file.

Without GATE 9 the plumbing is exercised with a stand-in ``Gate`` script on PATH that does
what GATE's ROOT output does (writes ``Coincidences`` and ``delay`` trees into the file the
rendered macro names); the real run is the ``gate9``-marked test.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import textwrap

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.specs import simulate_spec
from sim.engines.gate9.engine import run_gate9
from sim.listmode.file import read_listmode
from tests.sim.engines.gate9.test_macros import offset_phantom  # noqa: F401  (fixture)
from tests.sim.listmode.test_root_import import _check, _events, _gate9_branches

SPEC = simulate_spec(load_config(), "tubes", "tube_0000", "short")


def _install_fake_gate(bin_dir, events_file, exit_code: int = 0):
    """A ``Gate`` stand-in: finds setFileName in the rendered macros and writes the trees."""
    bin_dir.mkdir()
    script = bin_dir / "Gate"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import pickle, sys
        from pathlib import Path
        import uproot
        if sys.argv[1] == "--version":
            print("GATE 9.4 (test stand-in)"); sys.exit(0)
        if {exit_code}:
            print("G4Exception: fatal error in the stand-in"); sys.exit({exit_code})
        main = Path(sys.argv[1])
        name = next(line.split()[1] for mac in main.parent.glob("*.mac")
                    for line in mac.read_text().splitlines()
                    if line.startswith("/gate/output/root/setFileName"))
        prompts, delayed = pickle.loads(Path({str(events_file)!r}).read_bytes())
        with uproot.recreate(main.parent / (name + ".root")) as f:
            f["Coincidences"] = prompts
            f["delay"] = delayed
    """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_gate(tmp_path, monkeypatch):
    import pickle

    prompts, delayed = _events(300, 11), _events(20, 12)
    events_file = tmp_path / "events.pkl"
    events_file.write_bytes(pickle.dumps((_gate9_branches(prompts), _gate9_branches(delayed))))
    _install_fake_gate(tmp_path / "bin", events_file)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return prompts, delayed


def test_run_gate9_imports_what_gate_writes(fake_gate, offset_phantom, tmp_path):  # noqa: F811
    prompts, delayed = fake_gate
    out = tmp_path / "lm.h5"
    counts = run_gate9(SPEC, offset_phantom, out)
    assert counts == {"coincidences": 300, "delayed": 20}
    data = read_listmode(out)
    _check(data.coincidences, prompts)
    _check(data.delayed, delayed)
    assert data.attrs["engine"] == "gate9"
    assert data.attrs["engine_version"] == "GATE 9.4 (test stand-in)"
    # no total_nb_primaries histogram: the expected number of decays
    assert data.attrs["primaries"] == round(6e5 * 0.1)
    assert not (tmp_path / ".lm.gate9").exists()  # work folder removed after the import


def test_missing_gate_is_one_clear_error(offset_phantom, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(RuntimeError, match="needs the GATE 9 `Gate` executable on PATH"):
        run_gate9(SPEC, offset_phantom, tmp_path / "lm.h5")
    assert not list(tmp_path.glob("*lm*"))


def test_failed_gate_run_reports_its_log(offset_phantom, tmp_path, monkeypatch):  # noqa: F811
    _install_fake_gate(tmp_path / "bin", tmp_path / "none.pkl", exit_code=3)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RuntimeError, match="(?s)Gate exited with code 3.*G4Exception"):
        run_gate9(SPEC, offset_phantom, tmp_path / "lm.h5")
    assert not (tmp_path / "lm.h5").exists()
    assert (tmp_path / ".lm.gate9" / "gate.log").is_file()  # kept for inspection


@pytest.mark.gate9
@pytest.mark.skipif(shutil.which("Gate") is None, reason="GATE 9 `Gate` executable not on PATH")
def test_real_gate9_run(offset_phantom, tmp_path):  # noqa: F811
    spec = {**SPEC, "acquisition": {**SPEC["acquisition"], "activity_bq": 1e5,
                                    "duration_s": 0.01}}
    counts = run_gate9(spec, offset_phantom, tmp_path / "lm.h5")
    data = read_listmode(tmp_path / "lm.h5")
    assert counts["coincidences"] == len(data) > 0
    assert np.all(np.isin(data.coincidences["kind"], [0, 1, 2]))
