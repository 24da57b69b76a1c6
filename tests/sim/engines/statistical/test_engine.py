"""The statistical engine through the simulate stage and its command line: a readable
list-mode file whose counts match the embedded engine's for the same phantom (trues within
2 %, scattered within the background sample's error, randoms and delayed within 4 sigma),
and one-line refusals of a missing or foreign detector response file. The response comes
from the command line with few photons per cell for the refusals, and from a calibration
made here with enough photons for the counts."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from pipeline.config import load_config, validate_config
from pipeline.specs import response_spec, simulate_spec
from sim.engines.stage import run_simulation
from sim.engines.statistical.response import calibrate
from sim.engines.statistical.response_file import write_response
from sim.listmode.file import read_listmode
from sim.listmode.histogram import read_histogram
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom
from tests.sim.engines.statistical.helpers import DIGITIZER, SCANNER


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("statistical")
    cfg = copy.deepcopy(load_config())
    cfg["simulation"]["statistical"] = {"photons_per_cell": 10, "background_decays": 400_000}
    cfg["acquisitions"]["short"] = {"activity_bq": 4e6, "duration_s": 0.25}
    cfg["positron_images"]["low_count"] = "short"
    cfg["datasets"] = {"pt": {"family": "point", "n_phantoms": 1, "acquisitions": ["short"],
                              "grid": {"shape": [16, 40, 40], "voxel_size_mm": [2.0, 1.0, 1.0]},
                              "point": {"position_mm": [3.0, -2.0, 1.0], "diameter_mm": 20.0}}}
    cfg = validate_config(cfg)
    phantom = folder / "point_0000.h5"
    build_phantom(phantom_spec(cfg, "pt", "point_0000"), phantom)
    response = folder / "response.h5"
    run = subprocess.run([sys.executable, "-m", "sim", "calibrate-response", "--spec",
                          json.dumps(response_spec(cfg)), "--out", str(response)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return cfg, phantom, response, folder


@pytest.mark.slow
def test_the_engine_writes_a_list_mode_file_that_counts_like_the_monte_carlo(setup):
    """Both ways of drawing the trues (thinning, counted lines), against one Monte Carlo
    run; the frame is cut into several time slices, which must come out in time order."""
    cfg, phantom, _, folder = setup
    response = folder / "response_60.h5"
    write_response(response, calibrate(SCANNER, DIGITIZER, photons_per_cell=60, seed=1), {})
    spec = _listmode(simulate_spec(cfg, "pt", "point_0000", "short"))
    spec["simulation"]["statistical"]["slice_candidates"] = 100_000
    mc_file = folder / "fast.h5"
    mc = run_simulation({**spec, "engine": "fast"}, phantom, mc_file, workers=2)
    for trues in ("thinning", "lines"):
        drawn = copy.deepcopy(spec)
        drawn["simulation"]["statistical"]["trues"] = trues
        stat = folder / f"statistical_{trues}.h5"
        counts = run_simulation({**drawn, "engine": "statistical"}, phantom, stat, workers=2,
                                response_h5=response)
        listmode = read_listmode(stat)
        assert listmode.attrs["engine"] == "statistical" and len(listmode) == counts["prompts"]
        assert listmode.attrs["trues_drawn_by"] == trues
        kinds = np.bincount(listmode.coincidences["kind"], minlength=3)
        assert kinds.tolist() == [counts["trues"], counts["scattered"], counts["randoms"]]
        assert np.all(np.diff(listmode.coincidences["time1_ns"]) >= 0)  # time order
        assert len(np.unique(listmode.coincidences["event1"])) == len(listmode)
        assert abs(counts["trues"] - mc["trues"]) < max(0.02 * mc["trues"],
                                                        3 * np.sqrt(mc["trues"])), trues
        sample_scattered = mc["scattered"] * 400_000 / mc["primaries"]  # about, in the sample
        sigma = mc["scattered"] * np.sqrt(1 / mc["scattered"] + 1 / sample_scattered)
        assert abs(counts["scattered"] - mc["scattered"]) < 3 * sigma
        for key in ("randoms", "delayed"):
            assert abs(counts[key] - mc[key]) < 4 * np.sqrt(mc[key]) + 0.05 * mc[key], key


def _listmode(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    spec["simulation"]["statistical"]["output"] = "listmode"
    return spec


def test_the_histogram_holds_the_pairs_of_the_same_events(setup, tmp_path):
    """Same seed, both outputs: the histogram's counts per pair and kind are those of the
    list-mode file's events, counted here with numpy; the reconstruction's reader gives its
    prompts, and the list-mode reader refuses it naming the output setting."""
    cfg, phantom, response, _ = setup
    spec = {**simulate_spec(cfg, "pt", "point_0000", "short"), "engine": "statistical"}
    assert spec["simulation"]["statistical"]["output"] == "histogram"  # the default
    counts = run_simulation(spec, phantom, tmp_path / "h.h5", response_h5=response)
    run_simulation(_listmode(spec), phantom, tmp_path / "l.h5", response_h5=response)
    events = read_listmode(tmp_path / "l.h5")
    data = read_histogram(tmp_path / "h.h5")
    assert data.attrs["output"] == "histogram" and data.prompts == counts["prompts"]
    for group, columns, kinds in (("coincidences", data.coincidences, True),
                                  ("delayed", data.delayed, False)):
        ev = getattr(events, group)
        lo = np.minimum(ev["crystal1"], ev["crystal2"]).astype(np.int64)
        hi = np.maximum(ev["crystal1"], ev["crystal2"]).astype(np.int64)
        pairs, inverse, n = np.unique(lo * SCANNER.n_crystals + hi, return_inverse=True,
                                      return_counts=True)
        assert n.sum() > 0, group
        np.testing.assert_array_equal(columns["crystal1"], pairs // SCANNER.n_crystals)
        np.testing.assert_array_equal(columns["crystal2"], pairs % SCANNER.n_crystals)
        np.testing.assert_array_equal(columns["count"], n)
        if kinds:
            for k, name in enumerate(("trues", "scattered", "randoms")):
                per_pair = np.bincount(inverse.ravel(), weights=ev["kind"] == k,
                                       minlength=pairs.size)
                np.testing.assert_array_equal(columns[name], per_pair)
    with pytest.raises(ValueError, match="simulation.statistical.output: listmode"):
        read_listmode(tmp_path / "h.h5")


def test_a_missing_or_foreign_response_file_is_refused_in_one_line(setup, tmp_path):
    cfg, phantom, response, _ = setup
    spec = {**simulate_spec(cfg, "pt", "point_0000", "short"), "engine": "statistical"}
    base = [sys.executable, "-m", "sim", "simulate", "--phantom-file", str(phantom),
            "--out", str(tmp_path / "out.h5")]
    other = copy.deepcopy(spec)
    other["scanner"]["energy_resolution"] = 0.12
    deeper = copy.deepcopy(spec)
    deeper["scanner"]["crystal_depth_mm"] = 22.0
    cases = {
        "no file given": ([*base, "--spec", json.dumps(spec)], "needs the detector response"),
        "no such file": ([*base, "--spec", json.dumps(spec), "--response",
                          str(tmp_path / "none.h5")], "does not exist"),
        "another digitizer": ([*base, "--spec", json.dumps(other), "--response",
                               str(response)], "digitizer.energy_resolution: file 0.15, "
                                               "config 0.12"),
        "another scanner": ([*base, "--spec", json.dumps(deeper), "--response",
                             str(response)], "scanner.crystal_depth_mm: file 20.0, config 22.0"),
    }
    for case, (argv, expected) in cases.items():
        run = subprocess.run(argv, capture_output=True, text=True)
        err = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(err) == 1, (case, run.stderr)
        assert expected in err[0] and "Traceback" not in run.stderr, (case, err)
        assert not (tmp_path / "out.h5").exists()


def test_a_preparation_file_gives_what_the_job_would_compute(setup, tmp_path):
    """The preparation written and read back gives the file the job makes when it
    prepares the phantom itself with the same seed (bit for bit), whatever the output and
    the way trues are drawn; a preparation of another phantom or with other settings is
    refused naming the file, and so is one of another version of the preparation."""
    from sim.engines.statistical.engine import StatisticalSettings, _seed
    from sim.engines.statistical.preparation import prepare, read_preparation, write_preparation
    from sim.phantoms.file import read_phantom

    cfg, phantom, response, _ = setup
    spec = {**simulate_spec(cfg, "pt", "point_0000", "short"), "engine": "statistical"}
    decays = StatisticalSettings.from_config(spec["simulation"]).background_decays
    prep = prepare(read_phantom(phantom), spec, decays, _seed(spec["seed"], 1))
    prep_h5 = write_preparation(tmp_path / "prep.h5", prep, spec, {})
    again = read_preparation(prep_h5, _listmode(spec))  # the output setting does not matter
    lines = copy.deepcopy(spec)
    lines["simulation"]["statistical"].update(trues="lines", slice_candidates=50_000)
    read_preparation(prep_h5, lines)  # nor how the trues are drawn and sliced
    np.testing.assert_array_equal(again.expected.envelope, prep.expected.envelope)
    np.testing.assert_array_equal(again.sample.singles_crystal, prep.sample.singles_crystal)
    run_simulation(spec, phantom, tmp_path / "with.h5", response_h5=response, prep_h5=prep_h5)
    run_simulation(spec, phantom, tmp_path / "without.h5", response_h5=response)
    a, b = read_histogram(tmp_path / "with.h5"), read_histogram(tmp_path / "without.h5")
    for group in ("coincidences", "delayed"):
        for name, column in getattr(a, group).items():
            np.testing.assert_array_equal(column, getattr(b, group)[name])
    other = copy.deepcopy(spec)
    other["simulation"]["statistical"]["background_decays"] = 500_000
    with pytest.raises(ValueError, match=r"prep\.h5: made for another simulation"):
        run_simulation(other, phantom, tmp_path / "other.h5", response_h5=response,
                       prep_h5=prep_h5)
    with pytest.raises(ValueError, match="made for another phantom"):
        read_preparation(prep_h5, {**spec, "phantom": "point_0001"})
    assert not (tmp_path / "other.h5").exists()
    # A file of an earlier preparation (no version, or another) is refused naming it.
    with h5py.File(prep_h5, "a") as f:
        del f.attrs["prep_version"]
    with pytest.raises(ValueError, match=r"prep\.h5: made by another version .*run the "
                                         r"statistical_prep job again"):
        read_preparation(prep_h5, spec)


def test_the_command_line_prepares_a_phantom_for_its_simulate_jobs(setup, tmp_path):
    """What the statistical_prep and simulate rules run: prepare-statistical with the
    phantom's prep spec, then simulate --prep; the histogram records the file it used."""
    from pipeline.specs import statistical_prep_spec

    cfg, phantom, response, _ = setup
    prep_spec = statistical_prep_spec(cfg, "pt", "point_0000")
    run = subprocess.run([sys.executable, "-m", "sim", "prepare-statistical", "--spec",
                          json.dumps(prep_spec), "--phantom-file", str(phantom), "--out",
                          str(tmp_path / "prep.h5")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    spec = {**simulate_spec(cfg, "pt", "point_0000", "short"), "engine": "statistical"}
    run = subprocess.run([sys.executable, "-m", "sim", "simulate", "--spec", json.dumps(spec),
                          "--phantom-file", str(phantom), "--out", str(tmp_path / "h.h5"),
                          "--response", str(response), "--prep", str(tmp_path / "prep.h5")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    data = read_histogram(tmp_path / "h.h5")
    assert json.loads(data.attrs["params"])["prep_file"] == str(tmp_path / "prep.h5")
    assert data.prompts > 0
