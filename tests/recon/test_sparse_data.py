"""A valid list-mode file with no or very few coincidences is a result, not a crash: every
reconstruction mode writes its image and its defect measures, the measures an empty image
cannot have are NaN with a reason (never infinite, never a division error), and the
dataset's detectability table and figure are built from them."""

from __future__ import annotations

import copy
import csv
import json
import math

import numpy as np
import pytest

from pipeline.config import load_config, validate_config
from pipeline.specs import recon_spec, simulate_spec
from recon.__main__ import main as recon_main
from recon.detectability import MEASURES
from recon.detectability import read_json as read_detectability
from recon.image_io import read_recon
from sim.engines.stage import run_simulation
from sim.listmode.file import read_listmode, write_listmode
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom

#: Recon settings per mode: 3D with few ring differences, and the kernel method, to stay fast.
MODES = {"2d": {"mode": "2d"},
         "3d": {"mode": "3d", "max_ring_difference": 4, "iterations": 1},
         "2d-kernel": {"mode": "2d", "kernel": "mu", "kernel_window": [1, 1, 1]}}
#: Prompts kept of the simulated file: none, ten (all within two rings of each other, so that
#: every mode keeps them: the paper preset's count), and all of them (a few hundred).
COUNTS = (0, 10, None)


@pytest.fixture(scope="module")
def tube(tmp_path_factory):
    """A small aluminium tube with two steel inclusions and a 600 Bq x 1 s acquisition of
    it, cut to the counts of COUNTS (same provenance records)."""
    folder = tmp_path_factory.mktemp("sparse")
    cfg = copy.deepcopy(load_config())
    cfg["acquisitions"]["sparse"] = {"activity_bq": 3000.0, "duration_s": 1.0}
    cfg["datasets"] = {"tb": {
        "family": "tube", "n_phantoms": 1, "acquisitions": ["sparse"],
        "grid": {"shape": [20, 64, 64], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "tube": {"outer_radius_mm": [26.0, 26.0], "wall_thickness_mm": [4.0, 4.0],
                 "length_mm": [36.0, 36.0], "end_cap_mm": 3.0, "anisotropic_probability": 0.0},
        "defects": {"count": [2, 2], "types": {"inclusion": 1.0},
                    "inclusion": {"diameter_mm": [6.0, 8.0], "material": "steel"}}}}
    cfg["positron_images"].update(low_count="sparse", reference="sparse")
    cfg["recon"].update(voxel_size_xy_mm=2.0, iterations=2, subsets=2)
    cfg["train"]["methods"] = []
    cfg = validate_config(cfg)
    phantom_h5 = folder / "tube_0000.h5"
    build_phantom(phantom_spec(cfg, "tb", "tube_0000"), phantom_h5)
    full = folder / "full.h5"
    run_simulation(simulate_spec(cfg, "tb", "tube_0000", "sparse"), phantom_h5, full)
    data = read_listmode(full)
    rings = cfg["scanner"]["crystals_per_ring"]
    near = np.flatnonzero(abs(data.coincidences["crystal1"] // rings
                              - data.coincidences["crystal2"] // rings) <= 2)
    files = {}
    for n in COUNTS:
        rows = np.arange(len(data)) if n is None else near[:n]
        path = folder / f"n{len(rows)}.h5"
        write_listmode(path, {k: v[rows] for k, v in data.coincidences.items()},
                       {k: v[:0] for k, v in data.delayed.items()}, data.attrs)
        files[len(rows)] = path
    return cfg, phantom_h5, files


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_no_or_few_coincidences_give_images_and_undefined_measures(tube, tmp_path, mode,
                                                                   capsys):
    cfg, phantom_h5, files = tube
    assert max(files) >= 20, "the full acquisition should hold some coincidences"
    spec = recon_spec(cfg, "tb")
    spec["recon"].update(MODES[mode])
    docs = []
    for n, listmode in files.items():
        out = tmp_path / f"n{n}" / "sparse.h5"
        code = recon_main(["reconstruct", "--spec", json.dumps(spec), "--listmode",
                           str(listmode), "--phantom-file", str(phantom_h5), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "Traceback" not in err and "error:" not in err, err
        image = read_recon(out).image
        assert np.isfinite(image).all() and (image >= 0).all()
        if n == 0:
            assert not image.any()
        json_path = out.with_name("sparse_defects.json")
        doc = read_detectability(json_path)
        assert [r["label"] for r in doc["defects"]] == [1, 2]
        for row in doc["defects"]:
            values = {m: row[m] for m in MEASURES}
            assert not any(math.isinf(v) for v in values.values()), (n, row)
            if row["status"] != "ok":
                assert row["status"].startswith("missing: ") and math.isnan(row["crc"]), row
        if n == 0:  # nothing measured: said so, not a number that looks valid
            assert all(r["status"].startswith("missing: no counts") for r in doc["defects"])
            assert all(math.isnan(r[m]) for r in doc["defects"]
                       for m in ("crc", "ratio", "cnr"))
        assert "Infinity" not in json_path.read_text() and "NaN" not in json_path.read_text()
        docs.append(json_path)
    # The dataset's table and figure, as the detectability rule makes them.
    table, figure = tmp_path / "detectability.csv", tmp_path / "defects.png"
    assert recon_main(["detectability", "--defects", *map(str, docs), "--out-csv", str(table),
                       "--out-png", str(figure)]) == 0, capsys.readouterr().err
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(files)
    assert figure.read_bytes()[:4] == b"\x89PNG"
