"""The simulate stage refuses a phantom file that records another phantom (or dataset) than
the one its spec names, before any work: the list-mode file would record the spec's phantom
and carry the file's events."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import h5py
import pytest

from pipeline.config import load_config, validate_config
from pipeline.specs import simulate_spec
from sim.engines.stage import run_simulation
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom


@pytest.fixture(scope="module")
def point_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("simulate")
    cfg = copy.deepcopy(load_config())
    cfg["datasets"] = {"pt": {"family": "point", "n_phantoms": 2, "acquisitions": ["short"],
                              "grid": {"shape": [8, 16, 16], "voxel_size_mm": [2.0, 2.0, 2.0]},
                              "point": {"position_mm": [0.0, 0.0, 0.0], "diameter_mm": 2.0}}}
    cfg = validate_config(cfg)
    files = {}
    for name in ("point_0000", "point_0001"):
        files[name] = folder / f"{name}.h5"
        build_phantom(phantom_spec(cfg, "pt", name), files[name])
    return cfg, files


def test_cli_refuses_the_phantom_file_of_another_phantom(point_set, tmp_path):
    cfg, files = point_set
    spec = simulate_spec(cfg, "pt", "point_0000", "short")
    out = tmp_path / "short.h5"
    run = subprocess.run([sys.executable, "-m", "sim", "simulate", "--spec", json.dumps(spec),
                          "--phantom-file", str(files["point_0001"]), "--out", str(out)],
                         capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0] == ("error: the simulation spec (--spec, or --dataset and --phantom) records "
                      f"phantom 'point_0000', but phantom file {files['point_0001']} records "
                      "'point_0001'; give --phantom-file of phantom 'point_0000'")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_another_datasets_phantom_of_the_same_name_is_refused(point_set, tmp_path):
    cfg, files = point_set
    other = tmp_path / "point_0000.h5"
    other.write_bytes(files["point_0000"].read_bytes())
    with h5py.File(other, "a") as f:
        f.attrs["dataset"] = "qa"
    spec = simulate_spec(cfg, "pt", "point_0000", "short")
    with pytest.raises(ValueError, match=r"records dataset 'pt', but phantom file .*"
                                         r"point_0000.h5 records 'qa'"):
        run_simulation(spec, other, tmp_path / "short.h5")
    assert not (tmp_path / "short.h5").exists()
