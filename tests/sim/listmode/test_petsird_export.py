"""PETSIRD export: every event of a list-mode file comes back with the detection bins, TOF bin,
energy bins and time block that the PETSIRD conventions give (computed here independently),
and the header's replicated modules rebuild every crystal centre of the scanner."""

from __future__ import annotations

import json
import math

import numpy as np
import petsird
import pytest

from sim.listmode.file import COLUMNS, write_listmode
from sim.listmode.petsird_export import export_petsird, read_petsird
from sim.scanner.geometry import Scanner

C_MM_PER_NS = 299.792458  # speed of light, independent of the package's constant
SETTINGS = {"name": "test-184x64", "energy_resolution": 0.15, "time_resolution_ps": 300.0,
            "energy_window_kev": [350.0, 650.0], "coincidence_window_ns": 10.0,
            "delayed_window_offset_ns": 500.0, "multiples_policy": "TakeAllGoods"}
DURATION_S = 0.005


def _events(rng, n: int, delay_ns: float) -> dict:
    """Random coincidences across the whole scanner, times within 5 ms, |t1 - t2| < 5 ns
    (plus the delayed-window offset for delayed pairs), energies in the window."""
    n_crystals = Scanner().n_crystals
    c1 = rng.integers(0, n_crystals, n)
    c2 = rng.integers(0, n_crystals - 1, n)
    c2 = c2 + (c2 >= c1)  # distinct crystals, c1 < c2 and c1 > c2 both frequent
    t1 = rng.uniform(1e3, DURATION_S * 1e9 - 1e3, n)
    straddle = slice(0, n // 5)  # pairs around a 1 ms boundary: the earliest photon decides
    t1[straddle] = (rng.integers(1, 5, n // 5) * 1e6
                    + rng.uniform(-0.5, 0.5, n // 5) * (delay_ns + 5.0))
    dt = rng.uniform(-5.0, 5.0, n)
    t2 = t1 - (dt + np.sign(dt) * delay_ns)
    columns = {
        "crystal1": c1, "crystal2": c2, "time1_ns": t1, "time2_ns": t2,
        "energy1_kev": rng.uniform(350.0, 650.0, n), "energy2_kev": rng.uniform(350.0, 650.0, n),
        "pos1_mm": np.zeros((n, 3)), "pos2_mm": np.zeros((n, 3)),
        "event1": np.arange(n), "event2": np.arange(n) + n,
        "annihilation_mm": np.full((n, 3), np.nan),
    }
    for name in ("compton_phantom1", "compton_phantom2", "rayleigh_phantom1",
                 "rayleigh_phantom2", "kind"):
        columns[name] = np.zeros(n)
    return {k: np.asarray(v, dtype=COLUMNS[k][0]) for k, v in columns.items()}


def _attrs(with_config: bool = True) -> dict:
    attrs = {"engine": "fast", "engine_version": "test", "primaries": 1000,
             "activity_bq": 1e6, "duration_s": DURATION_S,
             "scanner": json.dumps(Scanner().to_dict())}
    if with_config:
        attrs["config"] = json.dumps({"scanner": SETTINGS})
    return attrs


def _petsird_module_element(crystal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Module = rsector * 8 + axial module, element = j + 8 k (the documented numbering)."""
    ring, index = np.divmod(crystal, 184)
    rsector, j = np.divmod(index, 8)
    axial_module, k = np.divmod(ring, 8)
    return rsector * 8 + axial_module, j + 8 * k


def _expected(columns: dict, delay_ns: float, is_delayed: bool, block_ms: int) -> tuple:
    """Rows (delayed, crystal1, crystal2, tof index, energy index 1, 2, time block) and the
    stored t1 - t2 (ns) by the PETSIRD conventions, from the list-mode columns."""
    energy_edges = (350.0 + 10.0 * np.arange(31)).astype(np.float32)
    tof_edges = ((np.arange(801) - 400) * 0.025 * C_MM_PER_NS / 2).astype(np.float32)

    def energy_index(e):
        return np.clip(np.digitize(e, energy_edges) - 1, 0, 29)

    def detection_bin(c, e):
        module, element = _petsird_module_element(c)
        return energy_index(e) + (element + module * 64) * 30

    c1, c2 = columns["crystal1"].astype(np.int64), columns["crystal2"].astype(np.int64)
    t1, t2 = columns["time1_ns"], columns["time2_ns"]
    # delayed: the later photon is moved back by the window offset
    t1c = np.where(t1 > t2, t1 - delay_ns, t1)
    t2c = np.where(t2 > t1, t2 - delay_ns, t2)
    swap = detection_bin(c1, columns["energy1_kev"]) < detection_bin(c2, columns["energy2_kev"])
    first_t, second_t = np.where(swap, t2c, t1c), np.where(swap, t1c, t2c)
    dt_ns = first_t - second_t
    tof_index = np.clip(np.digitize(dt_ns * C_MM_PER_NS / 2, tof_edges.astype(float)) - 1,
                        0, 799)
    e1, e2 = energy_index(columns["energy1_kev"]), energy_index(columns["energy2_kev"])
    rows = np.stack([
        np.full(c1.size, int(is_delayed)),
        np.where(swap, c2, c1), np.where(swap, c1, c2), tof_index,
        np.where(swap, e2, e1), np.where(swap, e1, e2),
        np.floor(np.minimum(t1, t2) / (block_ms * 1e6)).astype(np.int64),
    ], axis=1)
    return rows, dt_ns


def _decoded_rows(out: dict) -> np.ndarray:
    return np.stack([out["delayed"].astype(np.int64), out["crystal1"], out["crystal2"],
                     out["tof_index"], out["energy_index1"], out["energy_index2"],
                     out["time_block"]], axis=1).astype(np.int64)


def _sorted(rows: np.ndarray, *extra: np.ndarray):
    order = np.lexsort(rows.T[::-1])
    return (rows[order], *(e[order] for e in extra))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rng = np.random.default_rng(7)
    prompts, delayed = _events(rng, 400, 0.0), _events(rng, 60, 500.0)
    folder = tmp_path_factory.mktemp("petsird")
    listmode = write_listmode(folder / "lm.h5", prompts, delayed, _attrs())
    summary = export_petsird(listmode, folder / "lm.petsird")
    return prompts, delayed, summary, read_petsird(folder / "lm.petsird")


def test_every_event_round_trips(exported):
    prompts, delayed, summary, out = exported
    assert summary["prompts"] == 400 and summary["delayed"] == 60
    assert summary["time_blocks"] == 5 and summary["settings_source"] == "file"
    assert summary["tof_outside"] == 0 and summary["energy_outside"] == 0
    assert out["delayed"].sum() == 60 and (~out["delayed"]).sum() == 400

    rows_p, dt_p = _expected(prompts, 0.0, False, 1)
    rows_d, dt_d = _expected(delayed, 500.0, True, 1)
    expected, dt = _sorted(np.concatenate([rows_p, rows_d]), np.concatenate([dt_p, dt_d]))
    decoded, tof_ns, block = _sorted(_decoded_rows(out), out["tof_ns"], out["time_block"])
    np.testing.assert_array_equal(decoded, expected)

    # the crystal pairs as unordered pairs, and the PETSIRD order of the detection bins
    pairs = np.sort(np.concatenate([np.stack([g["crystal1"], g["crystal2"]], 1)
                                    for g in (prompts, delayed)]), axis=1)
    decoded_pairs = np.sort(np.stack([out["crystal1"], out["crystal2"]], 1), axis=1)
    np.testing.assert_array_equal(pairs[np.lexsort(pairs.T)],
                                  decoded_pairs[np.lexsort(decoded_pairs.T)])
    # the TOF centre has the sign of t1 - t2 of the stored order, within half a bin
    assert np.all(np.sign(tof_ns) == np.sign(dt))
    assert np.all(np.abs(tof_ns - dt) <= 0.0125 + 1e-6)
    # each event lies in its block's interval (earliest photon)
    t_min_ms = np.concatenate([np.minimum(g["time1_ns"], g["time2_ns"])
                               for g in (prompts, delayed)]) / 1e6
    intervals = out["time_intervals_ms"]
    np.testing.assert_array_equal(intervals, np.stack([np.arange(5), np.arange(1, 6)], 1))
    assert np.all((np.sort(intervals[block, 0]) <= np.sort(t_min_ms))
                  & (np.sort(t_min_ms) < np.sort(intervals[block, 1])))


def test_header_describes_the_digitizer(exported):
    *_, out = exported
    scanner = out["header"].scanner
    assert scanner.model_name == "test-184x64"
    np.testing.assert_allclose(scanner.energy_resolution_at_511, [0.15], rtol=1e-6)
    ctr_mm = math.sqrt(2) * 0.300 * C_MM_PER_NS / 2  # per-single FWHM 300 ps -> CTR
    np.testing.assert_allclose(scanner.tof_resolution[0][0], ctr_mm, rtol=1e-6)
    np.testing.assert_array_equal(
        out["tof_bin_edges_mm"], ((np.arange(801) - 400) * 0.025 * C_MM_PER_NS / 2)
        .astype(np.float32))
    assert out["tof_bin_edges_mm"][0] <= -10.0 * C_MM_PER_NS / 2 * (1 - 1e-6)
    np.testing.assert_array_equal(out["energy_bin_edges_kev"],
                                  (350.0 + 10.0 * np.arange(31)).astype(np.float32))
    policy = petsird.CoincidencePolicy.MULTIPLES_AS_ALL_COINCIDENCES
    assert scanner.prompt_event_policy == policy and scanner.delayed_event_policy == policy
    (material,) = scanner.bulk_materials
    assert material.name == "LYSO" and material.density == pytest.approx(7.1)
    assert sorted(a.atomic_number for a in material.atoms) == [8, 14, 39, 71]
    assert sum(material.mass_fractions) == pytest.approx(1.0, abs=1e-6)
    efficiencies = scanner.detection_efficiencies
    assert efficiencies.calibration_factor == 1.0
    assert efficiencies.detection_bin_efficiencies == []  # size 0: every efficiency is 1


def test_geometry_rebuilds_every_crystal(exported):
    *_, out = exported
    replicated = out["header"].scanner.scanner_geometry.replicated_modules
    assert len(replicated) == 1
    modules = np.array([t.matrix for t in replicated[0].transforms], dtype=np.float64)
    crystals = replicated[0].object.detecting_elements
    elements = np.array([t.matrix for t in crystals.transforms], dtype=np.float64)
    corners = np.array([c.c for c in crystals.object.shape.corners], dtype=np.float64)
    assert modules.shape == (184, 3, 4) and elements.shape == (64, 3, 4)
    for matrices in (modules, elements):  # rigid: orthonormal rotations
        rot = matrices[:, :, :3]
        np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(
            np.eye(3), rot.shape), atol=1e-6)

    def to_world(points):  # module transform of element transform of points (p, 3)
        local = np.einsum("eij,pj->epi", elements[:, :, :3], points) + elements[:, None, :, 3]
        return (np.einsum("mij,epj->mepi", modules[:, :, :3], local)
                + modules[:, None, None, :, 3])

    world = to_world(corners)                          # (184, 64, 8, 3)
    module, element = np.meshgrid(np.arange(184), np.arange(64), indexing="ij")
    rsector, axial_module = np.divmod(module, 8)
    k, j = np.divmod(element, 8)
    ids = (axial_module * 8 + k) * 184 + rsector * 8 + j
    assert np.array_equal(np.sort(ids.ravel()), np.arange(11776))
    scanner = Scanner()
    error = np.abs(world.mean(axis=2) - scanner.crystal_centres_mm(ids))
    assert error.max() < 1e-3, error.max()
    # the box's depth runs along each crystal's outward normal, 20 mm, front face inwards
    depth = world[:, :, 4:].mean(axis=2) - world[:, :, :4].mean(axis=2)
    np.testing.assert_allclose(depth, 20.0 * scanner.crystal_frames(ids)[..., 0, :], atol=1e-3)
    extent = corners.max(axis=0) - corners.min(axis=0)
    np.testing.assert_allclose(extent, scanner.crystal_size_mm, atol=1e-6)


def test_refuses_to_overwrite(tmp_path):
    rng = np.random.default_rng(3)
    listmode = write_listmode(tmp_path / "lm.h5", _events(rng, 20, 0.0), _events(rng, 2, 500.0),
                              _attrs())
    out = tmp_path / "lm.petsird"
    export_petsird(listmode, out, time_block_ms=2)
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match=r"lm.petsird exists"):
        export_petsird(listmode, out)
    assert out.read_bytes() == before
    summary = export_petsird(listmode, out, overwrite=True, time_block_ms=5)
    assert summary["time_blocks"] == 1 and read_petsird(out)["crystal1"].size == 22
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm.h5", "lm.petsird"]


def test_empty_listmode_gives_zero_events(tmp_path):
    empty = _events(np.random.default_rng(0), 0, 0.0)
    listmode = write_listmode(tmp_path / "empty.h5", empty, empty, _attrs(with_config=False))
    summary = export_petsird(listmode, tmp_path / "empty.petsird")
    assert summary["prompts"] == 0 and summary["delayed"] == 0
    assert summary["settings_source"] == "schema defaults"
    out = read_petsird(tmp_path / "empty.petsird")
    assert out["crystal1"].size == 0 and out["delayed"].size == 0
    assert out["time_intervals_ms"].shape == (5, 2)  # the acquisition's 5 ms, 1 ms blocks
    assert out["header"].scanner.model_name == "industrial-184x64"


def test_bad_input_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        export_petsird(tmp_path / "missing.h5", tmp_path / "x.petsird")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5"):
        export_petsird(junk, tmp_path / "x.petsird")
    with pytest.raises(ValueError, match="junk.h5: not a complete PETSIRD"):
        read_petsird(junk)
    rng = np.random.default_rng(5)
    listmode = write_listmode(tmp_path / "lm.h5", _events(rng, 5, 0.0), _events(rng, 1, 500.0),
                              _attrs())
    with pytest.raises(ValueError, match="time_block_ms"):
        export_petsird(listmode, tmp_path / "x.petsird", time_block_ms=0.5)
    export_petsird(listmode, tmp_path / "ok.petsird")
    truncated = tmp_path / "truncated.petsird"
    truncated.write_bytes((tmp_path / "ok.petsird").read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated.petsird: not a complete PETSIRD"):
        read_petsird(truncated)
    assert not (tmp_path / "x.petsird").exists()


def test_cli_export_petsird(tmp_path, capsys):
    from sim.__main__ import main

    rng = np.random.default_rng(6)
    prompts = _events(rng, 40, 0.0)
    listmode = write_listmode(tmp_path / "lm.h5", prompts, _events(rng, 3, 500.0), _attrs())
    out = tmp_path / "lm.petsird"
    assert main(["export-petsird", "--listmode", str(listmode), "--out", str(out)]) == 0
    assert "40 prompts, 3 delayed" in capsys.readouterr().out
    back = read_petsird(out)
    pairs = np.sort(np.stack([back["crystal1"], back["crystal2"]], 1)[~back["delayed"]], 1)
    expected = np.sort(np.stack([prompts["crystal1"], prompts["crystal2"]], 1), 1)
    np.testing.assert_array_equal(pairs[np.lexsort(pairs.T)], expected[np.lexsort(expected.T)])
    assert main(["export-petsird", "--listmode", str(listmode), "--out", str(out)]) == 2
