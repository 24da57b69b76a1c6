"""The opengate engine builds the simulation the issue describes (no Geant4 data needed):
crystal centres, materials, source, physics and digitizer chain are checked against values
computed here from the config, the MetaImage headers and textbook compositions.

The run itself needs the Geant4 data; that test is marked ``geant4`` and skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import xraylib

from pipeline.config import load_config, validate_config
from pipeline.specs import simulate_spec
from sim.engines.geant4_data import Geant4DataError, locate_geant4_data
from sim.phantoms.metaimage import read_mhd
from sim.phantoms.spec import phantom_spec
from sim.scanner.geometry import Scanner

gate = pytest.importorskip("sim.engines.opengate").import_opengate(check_data=False)
from sim.engines.opengate import build_simulation  # noqa: E402


def _have_geant4_data() -> bool:
    try:
        locate_geant4_data()
    except Geant4DataError:
        return False
    return True


@pytest.fixture(scope="module")
def small_tube(tmp_path_factory):
    """A default tube on a coarse grid (10 x 48 x 48 voxels of 10 x 2 x 2 mm)."""
    from sim.phantoms.stage import build_phantom

    cfg = load_config()
    cfg["datasets"]["tubes"]["grid"] = {"shape": [10, 48, 48], "voxel_size_mm": [10.0, 2.0, 2.0]}
    path = tmp_path_factory.mktemp("phantom") / "tube_0000.h5"
    build_phantom(phantom_spec(validate_config(cfg), "tubes", "tube_0000"), path)
    return path


def _spec(config_changes: dict | None = None) -> dict:
    cfg = load_config()
    for key, value in (config_changes or {}).items():
        cfg["scanner"][key] = value
    return simulate_spec(validate_config(cfg), "tubes", "tube_0000", "short")


@pytest.fixture(scope="module")
def built(small_tube, tmp_path_factory):
    spec = _spec()
    return spec, build_simulation(gate, spec, small_tube, tmp_path_factory.mktemp("og"),
                                  threads=1)


def test_crystal_centres_match_the_scanner_geometry(built):
    spec, setup = built
    u = gate.g4_units
    scanner = Scanner.from_config(spec["scanner"])
    vm = setup.sim.volume_manager
    module, crystal = vm.get_volume("module"), vm.get_volume("crystal")
    t_module = np.asarray(module.translation, dtype=float) / u.mm
    r_module = np.asarray(module.rotation, dtype=float)
    t_crystal = np.asarray(crystal.translation, dtype=float) / u.mm
    assert len(t_module) == 23 * 8 and len(t_crystal) == 64
    centres = np.einsum("mij,cj->mci", r_module, t_crystal) + t_module[:, None, :]
    assert centres.shape[0] * centres.shape[1] == 11_776
    # Copy numbers written out by hand: module m = rsector * 8 + axial module,
    # crystal c = j + 8 k (GATE's cubic-array order).
    m, c = np.meshgrid(np.arange(184), np.arange(64), indexing="ij")
    ring = (m % 8) * 8 + c // 8
    index = (m // 8) * 8 + c % 8
    expected = scanner.crystal_centres_mm(ring * 184 + index)
    assert np.abs(centres - expected).max() < 1e-3
    # Each crystal's box is the scanner's crystal, with depth along the module normal.
    assert np.allclose(np.asarray(crystal.size) / u.mm, [20.0, 4.0, 4.0])
    normal = r_module[:, :, 0]
    frames = scanner.crystal_frames(scanner.crystal_id(ring[:, 0], index[:, 0]))
    assert np.abs(normal - frames[:, 0, :]).max() < 1e-12


def _mass_fractions(formula: str) -> dict[str, float]:
    """Mass fractions from a formula with atomic weights (independent of sim.phantoms.materials)."""
    import re

    parts = [(sym, float(n) if n else 1.0) for sym, n in re.findall(r"([A-Z][a-z]?)([\d.]*)",
                                                                     formula)]
    masses = {sym: n * xraylib.AtomicWeight(xraylib.SymbolToAtomicNumber(sym))
              for sym, n in parts}
    total = sum(masses.values())
    return {sym: m / total for sym, m in masses.items()}


def test_materials_are_the_projects(built, small_tube):
    spec, setup = built
    u = gate.g4_units
    vm = setup.sim.volume_manager
    assert vm.get_volume("crystal").material == "nde_lyso"
    weights = vm.material_database.new_materials_weights
    name, symbols, fractions, density = weights["nde_lyso"]
    assert density == pytest.approx(7.1 * u.g / u.cm3)
    expected = _mass_fractions("Lu1.8Y0.2SiO5")
    got = dict(zip(symbols, fractions, strict=True))
    assert set(got) == set(expected)
    for sym, w in expected.items():
        assert got[sym] == pytest.approx(w, rel=1e-4)
    _, symbols, fractions, density = weights["nde_aluminium"]
    assert symbols == ["Al"] and density == pytest.approx(2.699 * u.g / u.cm3)
    # Every label of the image maps to its material, with half-open [id, id + 1) ranges.
    labels, _, _ = read_mhd(str(small_tube).replace(".h5", "_materials.mhd"))
    table = {lo: name for lo, hi, name in vm.get_volume("phantom").voxel_materials
             if hi == lo + 1}
    table_lines = (small_tube.parent / "tube_0000_materials.txt").read_text().split("\n")[1:]
    for line in filter(None, table_lines):
        label, _, gate_name = line.split()
        assert int(label) in table
    assert set(np.unique(labels)) <= set(table)
    assert {"nde_water", "nde_aluminium"} <= set(table.values())


def test_phantom_and_source_sit_where_the_metaimage_puts_them(small_tube, tmp_path):
    import shutil

    for f in small_tube.parent.glob("tube_0000*"):
        shutil.copy(f, tmp_path)
    for which in ("activity", "materials"):  # move the phantom off centre
        mhd = tmp_path / f"tube_0000_{which}.mhd"
        mhd.write_text(mhd.read_text().replace("Offset = -47 -47 -45", "Offset = -42 -50 -38"))
    spec = _spec()
    setup = build_simulation(gate, spec, tmp_path / "tube_0000.h5", tmp_path, threads=1)
    u = gate.g4_units
    header = dict(line.split(" = ") for line in
                  (tmp_path / "tube_0000_activity.mhd").read_text().splitlines())
    offset, spacing, size = (np.array(header[k].split(), dtype=float)  # x, y, z
                             for k in ("Offset", "ElementSpacing", "DimSize"))
    centre = offset + (size - 1) / 2 * spacing
    assert np.allclose(centre, [5, -3, 7])
    phantom = setup.sim.volume_manager.get_volume("phantom")
    assert np.allclose(np.asarray(phantom.translation) / u.mm, centre)
    source = setup.sim.source_manager.get_source("activity")
    assert np.allclose(np.asarray(source.position.translation) / u.mm, centre)
    assert source.particle == "back_to_back"
    assert source.activity * setup.sim.number_of_threads == pytest.approx(
        spec["acquisition"]["activity_bq"] * u.Bq)
    assert source.half_life == pytest.approx(6586.2 * u.s, rel=1e-3)  # F-18, 109.77 min
    assert source.direction.accolinearity_flag
    assert source.direction.accolinearity_fwhm == pytest.approx(0.5 * u.deg)
    assert setup.sim.run_timing_intervals == [[0, pytest.approx(0.1 * u.s)]]


def test_physics_and_digitizer_chain_follow_the_config(built):
    spec, setup = built
    u = gate.g4_units
    sim = setup.sim
    assert sim.physics_manager.physics_list_name == "G4EmStandardPhysics_option4"
    assert sim.physics_manager.global_production_cuts["all"] == pytest.approx(0.7 * u.mm)
    chain = ["hits", "adder", "readout", "energy_blur", "time_blur", "window"]
    actors = {name: sim.actor_manager.get_actor(name) for name in
              [*chain, "coincidences", "delayed"]}
    for previous, name in zip(chain, chain[1:], strict=False):
        assert actors[name].input_digi_collection == previous
    assert actors["adder"].group_volume == "crystal"
    assert actors["readout"].group_volume == "module"
    assert actors["readout"].discretize_volume == "crystal"
    assert actors["readout"].policy == "EnergyWinnerPosition"
    eb, tb = actors["energy_blur"], actors["time_blur"]
    assert (eb.blur_attribute, eb.blur_method) == ("TotalEnergyDeposit", "InverseSquare")
    assert eb.blur_resolution == pytest.approx(0.15)
    assert eb.blur_reference_value == pytest.approx(511 * u.keV)
    assert (tb.blur_attribute, tb.blur_method) == ("GlobalTime", "Gaussian")
    assert tb.blur_fwhm == pytest.approx(300 * u.ps)
    (channel,) = actors["window"].channels
    assert channel["name"] == "singles"
    assert (channel["min"], channel["max"]) == (pytest.approx(350 * u.keV),
                                                pytest.approx(650 * u.keV))
    for name, offset_ns in (("coincidences", 0.0), ("delayed", 500.0)):
        sorter = actors[name]
        assert sorter.input_digi_collection == "singles"
        assert sorter.window == pytest.approx(10 * u.ns)
        assert sorter.offset == pytest.approx(offset_ns * u.ns)
        assert sorter.multiples_policy == "TakeAllGoods"
    hits_attributes = set(actors["hits"].attributes)
    assert {"EventID", "EventPosition", "ComptonPhantom", "RayleighPhantom"} <= hits_attributes


def test_distance_cut_keeps_every_pair_two_modules_apart(built):
    spec, setup = built
    u = gate.g4_units
    cut_mm = setup.sim.actor_manager.get_actor("coincidences").min_transaxial_distance / u.mm
    scanner = Scanner.from_config(spec["scanner"])
    xy = scanner.crystal_centres_mm(np.arange(184))[:, :2]
    pairs = [(a, b) for a in range(184) for b in range(184)]
    a, b = np.array(pairs).T
    d = np.abs(a // 8 - b // 8)
    sectors = np.minimum(d, 23 - d)
    dist = np.hypot(*(xy[a] - xy[b]).T)
    assert (dist[sectors >= 2] >= cut_mm).all()
    assert (dist[sectors == 1] < cut_mm).any()  # the cut removes some neighbours


def test_other_config_values_reach_the_simulation(small_tube, tmp_path):
    spec = _spec({"coincidence_window_ns": 6.0, "multiples_policy": "TakeWinnerOfGoods",
                  "energy_window_kev": [400.0, 600.0], "time_resolution_ps": 200.0})
    u = gate.g4_units
    setup = build_simulation(gate, spec, small_tube, tmp_path, threads=2)
    sim = setup.sim
    sorter = sim.actor_manager.get_actor("coincidences")
    assert sorter.window == pytest.approx(6 * u.ns)
    assert sorter.multiples_policy == "TakeWinnerOfGoods"
    (channel,) = sim.actor_manager.get_actor("window").channels
    assert channel["min"] == pytest.approx(400 * u.keV)
    assert sim.actor_manager.get_actor("time_blur").blur_fwhm == pytest.approx(200 * u.ps)
    assert sim.number_of_threads == 2
    source = sim.source_manager.get_source("activity")
    assert source.activity == pytest.approx(spec["acquisition"]["activity_bq"] * u.Bq / 2)


@pytest.mark.geant4
@pytest.mark.skipif(not _have_geant4_data(), reason="Geant4 data sets (G4EMLOW, "
                    "PhotonEvaporation, G4ENSDFSTATE) not installed; see the README")
def test_opengate_run_writes_listmode(small_tube, tmp_path):
    from sim.engines.opengate import run_opengate
    from sim.listmode.file import read_listmode

    spec = _spec()
    spec["acquisition"] = {**spec["acquisition"], "activity_bq": 2e5, "duration_s": 0.01}
    counts = run_opengate(spec, small_tube, tmp_path / "og.h5", threads=1)
    data = read_listmode(tmp_path / "og.h5")
    assert data.attrs["engine"] == "opengate" and len(data) == counts["coincidences"] > 0
    # Prompts per decay is of the order of the embedded engine's (0.1-0.3 in a tube).
    assert 0.02 < len(data) / data.attrs["primaries"] < 0.6
