"""Files combined by the reconstruct stage must be of one phantom: a phantom file (or an
attenuated sensitivity image) that records another phantom, dataset, grid or phantom config
than the list-mode file is refused naming both files and both values, before any output;
fields a file does not record (an imported list-mode file) are not compared."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pipeline.config import load_config, validate_config
from pipeline.specs import recon_spec, simulate_spec
from recon.image_io import read_recon
from recon.stage import build_sensitivity_file, output_paths, reconstruct
from sim.listmode.file import acquisition_attrs, write_listmode
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom
from sim.scanner.geometry import Scanner
from tests.recon.test_point_source import point_source_events
from tests.recon.test_stage import listmode_columns, write_events

PHANTOMS = ("point_0000", "point_0001")


@pytest.fixture(scope="module")
def two_phantoms(tmp_path_factory):
    """Two point phantoms of one dataset and a list-mode file simulated (here: drawn) from
    the first, with the attributes every engine writes."""
    folder = tmp_path_factory.mktemp("provenance")
    cfg = copy.deepcopy(load_config())
    cfg["datasets"] = {"pt": {"family": "point", "n_phantoms": 2, "acquisitions": ["short"],
                              "grid": {"shape": [12, 48, 48], "voxel_size_mm": [2.0, 2.0, 2.0]},
                              "point": {"position_mm": [5.0, 0.0, 0.0], "diameter_mm": 2.0}}}
    cfg["recon"].update(voxel_size_xy_mm=4.0, iterations=1, subsets=1)
    cfg = validate_config(cfg)
    phantoms = {}
    for name in PHANTOMS:
        phantoms[name] = folder / f"{name}.h5"
        build_phantom(phantom_spec(cfg, "pt", name), phantoms[name])
    events = point_source_events(Scanner(), 3000, np.random.default_rng(1))
    attrs = acquisition_attrs(simulate_spec(cfg, "pt", PHANTOMS[0], "short"),
                              phantoms[PHANTOMS[0]], params={})
    attrs.update(engine="test", engine_version="0", primaries=3000)
    empty = listmode_columns({"crystal1": np.zeros(0, np.int32),
                              "crystal2": np.zeros(0, np.int32)})
    listmode = write_listmode(folder / "short.h5", listmode_columns(events), empty, attrs)
    return cfg, phantoms, listmode


def _copy_with(src, dst, **attrs):
    """A copy of a file with some attributes changed."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
    return dst


def _no_outputs(out) -> bool:
    return not any(p.exists() for p in output_paths(out).values())


@pytest.fixture(scope="module")
def reconstruction(two_phantoms, tmp_path_factory):
    """The list-mode file reconstructed with its own phantom file."""
    cfg, phantoms, listmode = two_phantoms
    out = tmp_path_factory.mktemp("recon") / "short.h5"
    reconstruct(recon_spec(cfg, "pt"), listmode, phantoms[PHANTOMS[0]], out)
    return out


def test_the_phantom_the_listmode_file_records_is_accepted_and_recorded(two_phantoms,
                                                                        reconstruction):
    _, phantoms, _ = two_phantoms
    attrs = read_recon(reconstruction).attrs
    with h5py.File(phantoms[PHANTOMS[0]]) as f:
        sha, voxel = f.attrs["config_sha256"], f.attrs["voxel_size_mm"].tolist()
    assert attrs["phantom_name"] == "point_0000" and attrs["dataset"] == "pt"
    assert attrs["phantom_config_sha256"] == sha
    assert json.loads(attrs["phantom_grid"]) == {"shape": [12, 48, 48], "voxel_size_mm": voxel,
                                                 "origin_mm": [-11.0, -47.0, -47.0]}


def test_cli_refuses_another_phantoms_file_naming_both_files(two_phantoms, tmp_path):
    cfg, phantoms, listmode = two_phantoms
    out = tmp_path / "x.h5"
    run = subprocess.run(
        [sys.executable, "-m", "recon", "reconstruct", "--spec",
         json.dumps(recon_spec(cfg, "pt")), "--listmode", str(listmode), "--phantom-file",
         str(phantoms[PHANTOMS[1]]), "--out", str(out)], capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0] == (f"error: list-mode file {listmode} records phantom 'point_0000', but "
                      f"phantom file {phantoms[PHANTOMS[1]]} records 'point_0001'; give the "
                      "phantom file the list-mode file was simulated from")
    assert _no_outputs(out)


@pytest.mark.parametrize("attrs, expected", [
    ({"dataset": "tubes"}, "records dataset 'pt', but phantom file {phantom} records 'tubes'"),
    ({"voxel_size_mm": np.array([2.0, 2.0, 1.0])},
     "records phantom grid voxel_size_mm [2.0, 2.0, 2.0], but phantom file {phantom} "
     "records [2.0, 2.0, 1.0]"),
    ({"config_sha256": "0" * 64},
     "records phantom config_sha256 '{sha}', but phantom file {phantom} records '" + "0" * 64),
])
@pytest.mark.parametrize("attenuation", [True, False])
def test_a_phantom_file_that_disagrees_on_any_record_is_refused(two_phantoms, tmp_path,
                                                                attrs, expected, attenuation):
    cfg, phantoms, listmode = two_phantoms
    spec = recon_spec(cfg, "pt")
    spec["recon"]["attenuation_correction"] = attenuation  # else for the defect measures
    phantom = _copy_with(phantoms[PHANTOMS[0]], tmp_path / "p.h5", **attrs)
    with h5py.File(phantoms[PHANTOMS[0]]) as f:
        sha = f.attrs["config_sha256"]
    out = tmp_path / "x.h5"
    with pytest.raises(ValueError) as info:
        reconstruct(spec, listmode, phantom, out)
    assert str(info.value).startswith(f"list-mode file {listmode} ")
    assert expected.format(phantom=phantom, sha=sha) in str(info.value)
    assert _no_outputs(out)


def test_files_without_the_records_are_combined_unchecked(two_phantoms, tmp_path):
    cfg, phantoms, _ = two_phantoms
    # A list-mode file as import-root writes it: no phantom records at all.
    imported = write_events(tmp_path / "imported.h5",
                            point_source_events(Scanner(), 2000, np.random.default_rng(2)))
    out = tmp_path / "r.h5"
    reconstruct(recon_spec(cfg, "pt"), imported, phantoms[PHANTOMS[1]], out)
    # ...and the reconstruction records the phantom file's, the only ones there are.
    assert read_recon(out).attrs["phantom_name"] == "point_0001"


def test_an_attenuated_sensitivity_image_of_another_phantom_is_refused(two_phantoms,
                                                                       tmp_path):
    cfg, phantoms, listmode = two_phantoms
    spec = recon_spec(cfg, "pt")
    spec["recon"].update(mode="3d", max_ring_difference=2)
    sensitivity = build_sensitivity_file(spec, tmp_path / "sens.h5", phantoms[PHANTOMS[1]])
    with h5py.File(sensitivity) as f:
        assert f.attrs["phantom_name"] == "point_0001"
    # The list-mode file and the phantom file agree; the sensitivity image is the other's.
    out = tmp_path / "x.h5"
    with pytest.raises(ValueError) as info:
        reconstruct(spec, listmode, phantoms[PHANTOMS[0]], out, sensitivity_h5=sensitivity)
    assert str(info.value) == (
        f"sensitivity file {sensitivity} records phantom 'point_0001', but phantom file "
        f"{phantoms[PHANTOMS[0]]} records 'point_0000'; give the sensitivity image made with "
        "this phantom file")
    assert _no_outputs(out)


def test_cli_defect_figure_refuses_a_phantom_file_of_another_phantom(two_phantoms,
                                                                     reconstruction,
                                                                     tmp_path):
    _, phantoms, _ = two_phantoms
    doc = tmp_path / "fast_defects.json"
    doc.write_text(json.dumps({
        "phantom": "point_0000", "acquisition": "short", "reconstruction": str(reconstruction),
        "phantom_file": str(phantoms[PHANTOMS[1]]),
        "defects": [{"label": 1, "type": "hole", "size_mm": 2.0, "status": "ok"}]}))
    csv_path, png = tmp_path / "detectability.csv", tmp_path / "defects.png"
    run = subprocess.run([sys.executable, "-m", "recon", "detectability", "--defects",
                          str(doc), "--out-csv", str(csv_path), "--out-png", str(png)],
                         capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0] == (f"error: reconstruction {reconstruction} records phantom 'point_0000', "
                      f"but phantom file {phantoms[PHANTOMS[1]]} records 'point_0001'; its "
                      "_defects.json names another phantom file")
    assert not csv_path.exists() and not png.exists()
