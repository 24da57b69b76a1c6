"""Geant4 data check: missing or incomplete data sets give one clear error, fast, before
opengate is imported (whose own check would retry downloads for tens of seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.engines.geant4_data import REQUIRED, Geant4DataError, locate_geant4_data

MARKERS = {  # a file that proves each data set, as Geant4's EM models read them
    "G4LEDATA": ("G4EMLOW8.8", "livermore/phot_epics2014/pe-cs-8.dat"),
    "G4LEVELGAMMADATA": ("PhotonEvaporation6.1.2", "z8.a16"),
    "G4ENSDFSTATEDATA": ("G4ENSDFSTATE3.0", "ENSDFSTATE.dat"),
}


def _fake_install(base: Path, skip: str | None = None, empty: str | None = None) -> None:
    for variable, (folder, marker) in MARKERS.items():
        if variable == skip:
            continue
        path = base / folder / marker
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("" if variable == empty else "data\n")


def test_all_three_found_under_geant4_data_dir(tmp_path):
    _fake_install(tmp_path)
    found = locate_geant4_data({"GEANT4_DATA_DIR": str(tmp_path)}, search_opengate=False)
    assert found == {v: tmp_path / folder for v, (folder, _) in MARKERS.items()}
    assert {d.variable for d in REQUIRED} == set(MARKERS)


def test_explicit_variables_win(tmp_path):
    _fake_install(tmp_path / "a")
    _fake_install(tmp_path / "b")
    env = {"GEANT4_DATA_DIR": str(tmp_path / "a"),
           "G4LEDATA": str(tmp_path / "b" / "G4EMLOW8.8")}
    found = locate_geant4_data(env, search_opengate=False)
    assert found["G4LEDATA"] == tmp_path / "b" / "G4EMLOW8.8"
    assert found["G4ENSDFSTATEDATA"] == tmp_path / "a" / "G4ENSDFSTATE3.0"


@pytest.mark.parametrize("how", ["absent", "empty folder", "empty file"])
def test_missing_or_incomplete_data_set_is_named(tmp_path, how):
    if how == "absent":
        _fake_install(tmp_path, skip="G4LEVELGAMMADATA")
    elif how == "empty folder":
        _fake_install(tmp_path, skip="G4LEVELGAMMADATA")
        (tmp_path / "PhotonEvaporation6.1.2").mkdir()
    else:
        _fake_install(tmp_path, empty="G4LEVELGAMMADATA")
    with pytest.raises(Geant4DataError) as info:
        locate_geant4_data({"GEANT4_DATA_DIR": str(tmp_path)}, search_opengate=False)
    message = str(info.value)
    assert "PhotonEvaporation6.1.2 (G4LEVELGAMMADATA" in message
    assert "G4EMLOW8.8" not in message.split("To get them")[0]  # only the missing one listed
    assert str(tmp_path / "PhotonEvaporation6.1.2") in message
    assert "GEANT4_DATA_DIR" in message and "engine: fast" in message


def test_nothing_configured_lists_all_three():
    with pytest.raises(Geant4DataError, match="(?s)G4EMLOW8.8.*PhotonEvaporation6.1.2.*"
                                              "G4ENSDFSTATE3.0"):
        locate_geant4_data({}, search_opengate=False)


def test_simulate_with_opengate_fails_at_once_without_data(tmp_path, default_config):
    """The CLI path of the simulate rule: exit code 2 and the message, nothing written."""
    from sim.engines.geant4_data import opengate_data_folder

    folder = opengate_data_folder()
    if folder is not None and any(d.is_complete(folder / d.folder) for d in REQUIRED):
        pytest.skip(f"opengate's data folder {folder} holds Geant4 data on this machine")
    spec = {"engine": "opengate", "dataset": "tubes", "phantom": "tube_0000",
            "acquisition": {"name": "fast", "activity_bq": 1.0, "duration_s": 1.0,
                            "half_life_s": 6586.2},
            "scanner": default_config["scanner"], "simulation": default_config["simulation"],
            "seed": 1}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("G4") and k not in ("GEANT4_DATA_DIR", "GATEONRTD")}
    env["GEANT4_DATA_DIR"] = str(tmp_path / "no-data-here")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "simulate", "--spec", json.dumps(spec),
         "--phantom-file", str(tmp_path / "p.h5"), "--out", str(tmp_path / "lm.h5")],
        capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    assert "G4EMLOW8.8" in proc.stderr and "PhotonEvaporation" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "lm.h5").exists()
    print(f"failed in {elapsed:.2f} s")
