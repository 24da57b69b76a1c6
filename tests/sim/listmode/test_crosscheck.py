"""Engine cross-check: rates, fractions and histograms of two list-mode files compared."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.listmode.crosscheck import histogram_chi2_per_bin, lor_radius_mm, write_crosscheck
from sim.listmode.file import COLUMNS, read_listmode, write_listmode
from sim.scanner.geometry import Scanner

SCANNER = Scanner()


def _file(path, engine: str, primaries: int, n: int, kinds: tuple[int, int, int], seed: int):
    rng = np.random.default_rng(seed)
    cols = {name: np.zeros((n, w) if w else n, dtype=dt) for name, (dt, w) in COLUMNS.items()}
    cols["crystal1"] = rng.integers(0, SCANNER.n_crystals, n).astype(np.int32)
    cols["crystal2"] = ((cols["crystal1"] + 92) % SCANNER.n_crystals).astype(np.int32)
    cols["energy1_kev"] = rng.normal(511, 30, n).astype(np.float32)
    cols["energy2_kev"] = rng.normal(511, 30, n).astype(np.float32)
    cols["kind"] = np.repeat([0, 1, 2], kinds).astype(np.uint8)
    delayed = {k: v[: kinds[2]] for k, v in cols.items()}
    attrs = {"engine": engine, "engine_version": "x", "primaries": primaries,
             "activity_bq": 1.0, "duration_s": 1.0, "scanner": json.dumps(SCANNER.to_dict())}
    return write_listmode(path, cols, delayed, attrs)


def test_same_physics_at_twice_the_decays_agrees(tmp_path):
    a = _file(tmp_path / "a.h5", "opengate", 100_000, 6000, (4000, 1500, 500), 1)
    b = _file(tmp_path / "b.h5", "fast", 200_000, 12000, (8000, 3000, 1000), 2)
    rows = {r["metric"]: r for r in write_crosscheck(a, b, tmp_path / "out")}
    prompts = rows["prompts per 1000 decays"]
    assert prompts["a"] == pytest.approx(60.0) and prompts["b"] == pytest.approx(60.0)
    assert prompts["ratio_b_over_a"] == pytest.approx(1.0)
    assert rows["scatter fraction"]["a"] == pytest.approx(0.25)
    assert rows["random fraction"]["b"] == pytest.approx(1000 / 12000)
    assert rows["energy spectrum chi2 per bin"]["z"] < 2.0  # same distribution
    for name in ("crosscheck.csv", "crosscheck.md", "crosscheck.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "| prompts per 1000 decays | 60 | 60 | 1 |" in (
        tmp_path / "out" / "crosscheck.md").read_text()
    with pytest.raises(FileExistsError):
        write_crosscheck(a, b, tmp_path / "out")


def test_a_real_difference_shows_as_a_large_z(tmp_path):
    a = _file(tmp_path / "a.h5", "opengate", 100_000, 6000, (4000, 1500, 500), 1)
    b = _file(tmp_path / "b.h5", "fast", 100_000, 5000, (3000, 1500, 500), 2)
    rows = {r["metric"]: r for r in write_crosscheck(a, b, tmp_path / "out")}
    # 60 vs 50 per 1000 decays with sqrt(6000 + 5000) / 100 = 1.05 per 1000 of error.
    assert rows["prompts per 1000 decays"]["z"] == pytest.approx(-10 / np.sqrt(1.1), rel=1e-6)


def test_lor_radius_against_sampled_distance(tmp_path):
    path = _file(tmp_path / "a.h5", "fast", 1000, 200, (200, 0, 0), 3)
    data = read_listmode(path)
    radius = lor_radius_mm(data)
    p1 = SCANNER.crystal_centres_mm(data.coincidences["crystal1"])[:, :2]
    p2 = SCANNER.crystal_centres_mm(data.coincidences["crystal2"])[:, :2]
    t = np.linspace(-0.5, 1.5, 40001)[None, :, None]
    points = p1[:, None, :] + t * (p2 - p1)[:, None, :]
    sampled = np.hypot(points[..., 0], points[..., 1]).min(axis=1)
    np.testing.assert_allclose(radius, sampled, atol=0.02)


def test_chi2_per_bin_is_zero_for_identical_rates_and_large_for_different():
    h = np.array([100, 400, 900, 400, 100])
    assert histogram_chi2_per_bin(h, 1000, 2 * h, 2000) == pytest.approx(0.0)
    flat = np.full(5, 380)  # same total, other shape
    assert histogram_chi2_per_bin(h, 1000, flat, 1000) > 20


@pytest.mark.parametrize("key, theirs, expected", [
    ("phantom_name", "tube_0002", "records phantom 'tube_0001', but list-mode file {b} records "
                                  "'tube_0002'"),
    ("acquisition", "reference", "records acquisition 'fast', but list-mode file {b} records "
                                 "'reference'"),
    ("scanner", json.dumps(Scanner(crystal_depth_mm=10.0).to_dict()),
     "records scanner geometry crystal_depth_mm 20.0, but list-mode file {b} records 10.0"),
])
def test_cli_refuses_files_of_another_phantom_acquisition_or_scanner(tmp_path, capsys, key,
                                                                     theirs, expected):
    import h5py

    from sim.__main__ import main

    a = _file(tmp_path / "a.h5", "opengate", 1000, 60, (40, 15, 5), 1)
    b = _file(tmp_path / "b.h5", "fast", 1000, 60, (40, 15, 5), 2)
    for path, value in ((a, None), (b, theirs)):
        with h5py.File(path, "a") as f:
            f.attrs.update(phantom_name="tube_0001", acquisition="fast", dataset="tubes")
            if value is not None:
                f.attrs[key] = value
    out = tmp_path / "out"
    assert main(["crosscheck", "--a", str(a), "--b", str(b), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: list-mode file {a} "), err
    assert expected.format(b=b) in err[0]
    assert not out.exists() or list(out.iterdir()) == []
