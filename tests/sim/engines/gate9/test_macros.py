"""GATE 9 macros rendered from the config, checked command by command against the geometry."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import sim.engines.gate9.macros as gm
from pipeline.config import load_config, validate_config
from pipeline.specs import simulate_spec
from sim.engines.gate9.macros import (
    TEMPLATES_DIR,
    gate_command,
    gate_seed,
    macro_values,
    render_gate9_macros,
)
from sim.phantoms.file import gate_range_table, material_table
from sim.phantoms.materials import get_material
from sim.phantoms.metaimage import read_mhd, write_mhd
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom
from sim.phantoms.voxelise import MATERIAL_IDS
from sim.scanner.geometry import Scanner

DIGI = "/gate/digitizerMgr/crystal/SinglesDigitizer/Singles/"
SORTER = "/gate/digitizerMgr/CoincidenceSorter/"


# ---------------------------------------------------------------------- helpers
def parse_macros(main: Path) -> list[tuple[str, list[str]]]:
    """(command, arguments) in execution order, following /control/execute into other files."""
    commands: list[tuple[str, list[str]]] = []
    for line in main.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "#" not in line, f"{main}: Geant4 cuts a command at '#': {line!r}"
        command, *args = line.split()
        if command == "/control/execute":
            assert len(args) == 1 and Path(args[0]).is_absolute()
            commands += parse_macros(Path(args[0]))
        else:
            commands.append((command, args))
    return commands


def args_of(commands, command: str) -> list[str]:
    """Arguments of a command that must appear exactly once."""
    found = [a for c, a in commands if c == command]
    assert len(found) == 1, f"{command} appears {len(found)} times"
    return found[0]


def number(commands, command: str, unit: str | None = None) -> float:
    """The value of a one-number command, checking its unit."""
    args = args_of(commands, command)
    if unit is None:
        assert len(args) == 1, args
    else:
        assert len(args) == 2 and args[1] == unit, f"{command} {args}: expected unit {unit}"
    return float(args[0])


def vector(commands, command: str, unit: str) -> np.ndarray:
    args = args_of(commands, command)
    assert len(args) == 4 and args[3] == unit, f"{command} {args}: expected unit {unit}"
    return np.array([float(a) for a in args[:3]])


def small_tube_config(overrides: dict | None = None) -> dict:
    """Default config with a coarse grid for the tubes dataset (fast phantom stage)."""
    cfg = load_config(overrides=overrides)
    cfg["datasets"]["tubes"].update(
        {"grid": {"shape": [28, 96, 96], "voxel_size_mm": [4.0, 1.0, 1.0]},
         "partial_volume_subsamples": 2})
    return validate_config(cfg)


@pytest.fixture(scope="module")
def stage_phantom(tmp_path_factory) -> Path:
    """tube_0000 written by the phantom stage (its GATE copies sit beside the .h5)."""
    cfg = small_tube_config()
    out = tmp_path_factory.mktemp("phantoms") / "tube_0000.h5"
    build_phantom(phantom_spec(cfg, "tubes", "tube_0000"), out)
    return out


@pytest.fixture
def offset_phantom(tmp_path) -> Path:
    """A small off-centre phantom written directly: water box with aluminium, in air."""
    names = np.full((5, 6, 8), "air", dtype=object)
    names[1:4, 1:5, 2:6] = "water"
    names[2, 2, 3] = "aluminium"
    ids = np.vectorize(MATERIAL_IDS.__getitem__)(names).astype(np.uint8)
    activity = (names == "water").astype(np.float32)
    activity /= activity.sum()
    voxel_zyx, origin_zyx = (2.0, 1.5, 1.0), (-1.0, 10.25, -7.5)
    for suffix, array in (("materials", ids), ("activity", activity)):
        write_mhd(tmp_path / f"box_0000_{suffix}.mhd", array, voxel_zyx, origin_zyx)
    (tmp_path / "box_0000_materials.txt").write_text(gate_range_table(material_table(ids)))
    return tmp_path / "box_0000.h5"


@pytest.fixture(scope="module")
def default_spec() -> dict:
    return simulate_spec(load_config(), "tubes", "tube_0000", "short")


@pytest.fixture(scope="module")
def default_run(stage_phantom, default_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("gate9")
    main = render_gate9_macros(default_spec, stage_phantom, out)
    return main, parse_macros(main)


# ---------------------------------------------------------------------- default config
def test_render_writes_every_template(default_run):
    main, _ = default_run
    assert main.name == "main.mac"
    assert sorted(p.name for p in main.parent.glob("*.mac")) == sorted(
        p.name for p in TEMPLATES_DIR.glob("*.mac"))
    assert not list(main.parent.glob(".*.tmp"))
    for path in main.parent.glob("*.mac"):
        assert "{{" not in path.read_text() and "}}" not in path.read_text()


def test_geometry_commands_follow_the_scanner(default_run):
    _, cmds = default_run
    s = Scanner()  # the config's scanner is the default one
    world_daughters = [(a, b) for (c, a), (d, b) in zip(cmds, cmds[1:], strict=False)
                       if c == "/gate/world/daughters/name" and d == "/gate/world/daughters/insert"]
    assert world_daughters == [(["cylindricalPET"], ["cylinder"]),
                               (["phantom"], ["ImageNestedParametrisedVolume"])]
    assert number(cmds, "/gate/rsector/ring/setRepeatNumber") == 23 == s.modules_per_ring
    assert number(cmds, "/gate/rsector/ring/setFirstAngle", "deg") == pytest.approx(
        math.degrees(s.first_module_angle_rad), abs=1e-9)
    assert number(cmds, "/gate/rsector/ring/setFirstAngle", "deg") == pytest.approx(6.32,
                                                                                   abs=0.01)
    apothem = 32.0 / (2 * math.tan(math.pi / 23))  # 8 crystals of 4 mm, no gap
    np.testing.assert_allclose(vector(cmds, "/gate/rsector/placement/setTranslation", "mm"),
                               [apothem + 10.0, 0, 0], atol=1e-4)
    for volume, size in (("rsector", (20, 32, 256)), ("module", (20, 32, 32)),
                         ("crystal", (20, 4, 4))):
        for axis, length in zip("XYZ", size, strict=True):
            assert number(cmds, f"/gate/{volume}/geometry/set{axis}Length", "mm") == length
    assert [number(cmds, f"/gate/crystal/cubicArray/setRepeatNumber{a}") for a in "XYZ"] == [
        1, 8, 8]
    np.testing.assert_allclose(vector(cmds, "/gate/crystal/cubicArray/setRepeatVector", "mm"),
                               [0, 4, 4])
    assert [number(cmds, f"/gate/module/cubicArray/setRepeatNumber{a}") for a in "XYZ"] == [
        1, 1, 8]
    np.testing.assert_allclose(vector(cmds, "/gate/module/cubicArray/setRepeatVector", "mm"),
                               [0, 0, 32])
    assert args_of(cmds, "/gate/crystal/setMaterial") == [get_material("lyso").gate_name]
    for level, volume in (("rsector", "rsector"), ("module", "module"), ("crystal", "crystal")):
        assert args_of(cmds, f"/gate/systems/cylindricalPET/{level}/attach") == [volume]
    assert ("/gate/crystal/attachCrystalSD", []) in cmds
    # The system cylinder holds the modules and leaves the bore free.
    rmin = number(cmds, "/gate/cylindricalPET/geometry/setRmin", "mm")
    rmax = number(cmds, "/gate/cylindricalPET/geometry/setRmax", "mm")
    assert rmin <= apothem and rmax >= math.hypot(apothem + 20, 16)
    assert number(cmds, "/gate/cylindricalPET/geometry/setHeight", "mm") >= 256


def test_digitizer_commands_follow_the_config(default_run):
    _, cmds = default_run
    inserted = [a[0] for c, a in cmds if c == DIGI + "insert"]
    assert inserted == ["adder", "readout", "energyResolution", "timeResolution",
                        "energyFraming"]
    assert args_of(cmds, DIGI + "readout/setPolicy") == ["TakeEnergyWinner"]
    assert number(cmds, DIGI + "readout/setDepth") == 2  # cylindricalPET: 1 rsector, 2 module
    assert number(cmds, DIGI + "energyResolution/fwhm") == 0.15
    assert number(cmds, DIGI + "energyResolution/energyOfReference", "keV") == 511
    assert number(cmds, DIGI + "timeResolution/fwhm", "ps") == 300
    assert number(cmds, DIGI + "energyFraming/setMin", "keV") == 350
    assert number(cmds, DIGI + "energyFraming/setMax", "keV") == 650
    for sorter, offset_ns in (("Coincidences", 0.0), ("delay", 500.0)):
        assert number(cmds, f"{SORTER}{sorter}/setWindow", "ns") == 10
        assert number(cmds, f"{SORTER}{sorter}/setOffset", "ns") == offset_ns
        assert number(cmds, f"{SORTER}{sorter}/minSectorDifference") == 2
        assert args_of(cmds, f"{SORTER}{sorter}/MultiplesPolicy") == ["takeAllGoods"]
        assert args_of(cmds, f"{SORTER}{sorter}/allDigiOpenCoincGate") == ["true"]
        assert args_of(cmds, f"{SORTER}{sorter}/setInputCollection") == ["Singles_crystal"]
    # The delayed sorter is created (name, then insert) before its settings.
    names = [i for i, (c, a) in enumerate(cmds) if c == "/gate/digitizerMgr/name"]
    inserts = [i for i, (c, a) in enumerate(cmds) if c == "/gate/digitizerMgr/insert"]
    assert [cmds[i][1] for i in names] == [["delay"]]
    assert [cmds[i][1] for i in inserts] == [["CoincidenceSorter"]]
    first_delay = min(i for i, (c, _) in enumerate(cmds) if c.startswith(SORTER + "delay/"))
    assert names[0] < inserts[0] < first_delay


def test_source_physics_output_and_run_follow_the_spec(default_run, default_spec,
                                                       stage_phantom):
    main, cmds = default_run
    stem = stage_phantom.with_suffix("")
    activity, voxel_zyx, origin_zyx = read_mhd(f"{stem}_activity.mhd")
    src = "/gate/source/phantom_source/"
    assert args_of(cmds, "/gate/source/addSource") == ["phantom_source", "voxel"]
    assert args_of(cmds, src + "imageReader/readFile") == [str(Path(f"{stem}_activity.mhd"))]
    scale = number(cmds, src + "imageReader/linearTranslator/setScale", "Bq")
    assert scale * activity.sum(dtype=np.float64) == pytest.approx(600000.0, rel=1e-9)
    np.testing.assert_allclose(vector(cmds, src + "setPosition", "mm"),
                               (origin_zyx - voxel_zyx / 2)[::-1], atol=1e-9)
    assert args_of(cmds, src + "setType") == ["backtoback"]
    assert args_of(cmds, src + "gps/particle") == ["gamma"]
    assert number(cmds, src + "gps/monoenergy", "keV") == 511
    assert args_of(cmds, src + "setAccolinearityFlag") == ["true"]
    assert number(cmds, src + "setAccoValue", "deg") == 0.5
    assert number(cmds, src + "setForcedHalfLife", "s") == 6586.2

    assert args_of(cmds, "/gate/physics/addPhysicsList") == ["emstandard_opt4"]
    assert args_of(cmds, "/gate/physics/SetMinKineticEnergyInRegion") == ["world", "1", "keV"]
    for particle in ("Gamma", "Electron", "Positron"):  # simulation.production_cut_mm
        assert args_of(cmds, f"/gate/physics/{particle}/SetCutInRegion") == ["world", "0.7",
                                                                             "mm"]
    assert args_of(cmds, "/gate/physics/ActivateSpecialCuts") == ["gamma"]

    assert args_of(cmds, "/gate/phantom/geometry/setImage") == [
        str(Path(f"{stem}_materials.mhd"))]
    assert args_of(cmds, "/gate/phantom/geometry/setRangeToMaterialFile") == [
        str(Path(f"{stem}_materials.txt"))]
    assert ("/gate/phantom/attachPhantomSD", []) in cmds

    assert args_of(cmds, "/gate/output/root/setFileName") == [str(main.parent / "gate9")]
    for flag, value in (("Hit", "0"), ("Singles", "1"), ("Coincidences", "1"), ("delay", "1")):
        assert args_of(cmds, f"/gate/output/root/setRoot{flag}Flag") == [value]

    assert args_of(cmds, "/gate/random/setEngineName") == ["MersenneTwister"]
    assert number(cmds, "/gate/random/setEngineSeed") == default_spec["seed"]
    assert number(cmds, "/gate/application/setTimeStart", "s") == 0
    assert number(cmds, "/gate/application/setTimeStop", "s") == 0.1
    order = [c for c, _ in cmds]
    assert order.index("/gate/run/initialize") < order.index("/gate/source/addSource")
    assert order[-1] == "/gate/application/startDAQ"


def test_phantom_placement_matches_the_image_frame(offset_phantom, default_spec, tmp_path):
    cmds = parse_macros(render_gate9_macros(default_spec, offset_phantom, tmp_path / "out"))
    # Image (z, y, x) = (5, 6, 8) voxels of (2, 1.5, 1) mm, voxel (0, 0, 0) centred at
    # (z, y, x) = (-1, 10.25, -7.5): centre = origin + (n - 1) / 2 * voxel.
    np.testing.assert_allclose(vector(cmds, "/gate/phantom/placement/setTranslation", "mm"),
                               [-7.5 + 3.5, 10.25 + 3.75, -1 + 4])
    np.testing.assert_allclose(vector(cmds, "/gate/source/phantom_source/setPosition", "mm"),
                               [-8.0, 9.5, -2.0])
    table = Path(args_of(cmds, "/gate/phantom/geometry/setRangeToMaterialFile")[0])
    lines = table.read_text().split("\n")
    assert lines[0] == "3" and "1 1 Water" in lines and "2 2 Aluminium" in lines


# ---------------------------------------------------------------------- other configs
def test_values_follow_a_non_default_config(stage_phantom, tmp_path):
    overrides = {
        "scanner": {"coincidence_window_ns": 6.0, "multiples_policy": "TakeWinnerOfGoods",
                    "energy_window_kev": [400.0, 600.0], "time_resolution_ps": 200.0,
                    "energy_resolution": 0.12, "min_sector_difference": 3,
                    "delayed_window_offset_ns": 300.0, "module_gap_mm": 1.0,
                    "axial_module_gap_mm": 2.0},
        "simulation": {"acolinearity_fwhm_deg": 0.0, "energy_cut_kev": 5.0},
        "acquisitions": {"short": {"activity_bq": 1.0e5, "duration_s": 2.5}},
    }
    cfg = small_tube_config(overrides)
    spec = simulate_spec(cfg, "tubes", "tube_0000", "short")
    cmds = parse_macros(render_gate9_macros(spec, stage_phantom, tmp_path, "run_7.root"))
    s = Scanner.from_config(cfg["scanner"])
    for sorter, offset in (("Coincidences", 0.0), ("delay", 300.0)):
        assert number(cmds, f"{SORTER}{sorter}/setWindow", "ns") == 6
        assert number(cmds, f"{SORTER}{sorter}/setOffset", "ns") == offset
        assert number(cmds, f"{SORTER}{sorter}/minSectorDifference") == 3
        assert args_of(cmds, f"{SORTER}{sorter}/MultiplesPolicy") == ["takeWinnerOfGoods"]
    assert number(cmds, DIGI + "energyFraming/setMin", "keV") == 400
    assert number(cmds, DIGI + "energyFraming/setMax", "keV") == 600
    assert number(cmds, DIGI + "timeResolution/fwhm", "ps") == 200
    assert number(cmds, DIGI + "energyResolution/fwhm") == 0.12
    assert args_of(cmds, "/gate/source/phantom_source/setAccolinearityFlag") == ["false"]
    assert args_of(cmds, "/gate/physics/SetMinKineticEnergyInRegion") == ["world", "5", "keV"]
    assert number(cmds, "/gate/application/setTimeStop", "s") == 2.5
    activity = read_mhd(f"{stage_phantom.with_suffix('')}_activity.mhd")[0]
    scale = number(cmds, "/gate/source/phantom_source/imageReader/linearTranslator/setScale",
                   "Bq")
    assert scale * activity.sum(dtype=np.float64) == pytest.approx(1.0e5, rel=1e-9)
    # Gaps move the modules: radius from the gap, axial pitch 32 + 2 mm.
    assert vector(cmds, "/gate/rsector/placement/setTranslation", "mm")[0] == pytest.approx(
        s.inner_radius_mm + 10.0, abs=1e-6)
    assert s.inner_radius_mm > Scanner().inner_radius_mm
    np.testing.assert_allclose(vector(cmds, "/gate/module/cubicArray/setRepeatVector", "mm"),
                               [0, 0, 34])
    assert number(cmds, "/gate/rsector/geometry/setZLength", "mm") == 8 * 32 + 7 * 2
    assert args_of(cmds, "/gate/output/root/setFileName") == [str(tmp_path / "run_7")]


@pytest.mark.parametrize("gaps", [{}, {"module_gap_mm": 1.5, "axial_module_gap_mm": 3.0}])
def test_crystal_centres_from_the_rendered_geometry(gaps, stage_phantom, tmp_path):
    """Compose GATE's placements as GATE does and compare with Scanner.crystal_centres_mm."""
    cfg = small_tube_config({"scanner": gaps})
    spec = simulate_spec(cfg, "tubes", "tube_0000", "short")
    cmds = parse_macros(render_gate9_macros(spec, stage_phantom, tmp_path))
    scanner = Scanner.from_config(cfg["scanner"])

    def array_offsets(volume: str) -> np.ndarray:
        """GateArrayRepeater, auto-centred: copy i + nx * (j + ny * k) (x fastest)."""
        n = [int(number(cmds, f"/gate/{volume}/cubicArray/setRepeatNumber{a}")) for a in "XYZ"]
        step = vector(cmds, f"/gate/{volume}/cubicArray/setRepeatVector", "mm")
        assert args_of(cmds, f"/gate/{volume}/cubicArray/autoCenter") == ["true"]
        k, j, i = np.meshgrid(*(np.arange(m) for m in n[::-1]), indexing="ij")
        index = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1)
        return (index - (np.array(n) - 1) / 2.0) * step

    crystal = vector(cmds, "/gate/crystal/placement/setTranslation", "mm") + array_offsets(
        "crystal")
    module = vector(cmds, "/gate/module/placement/setTranslation", "mm") + array_offsets("module")
    rsector = vector(cmds, "/gate/rsector/placement/setTranslation", "mm")
    n_ring = int(number(cmds, "/gate/rsector/ring/setRepeatNumber"))
    first = math.radians(number(cmds, "/gate/rsector/ring/setFirstAngle", "deg"))
    angles = first + 2 * math.pi / n_ring * np.arange(n_ring)  # 360 deg span, about +z

    ids = np.arange(scanner.n_crystals)
    r, m, c = scanner.gate_ids(ids)
    local = rsector + module[m] + crystal[c]  # in the rsector frame, before the ring turn
    cos, sin = np.cos(angles[r]), np.sin(angles[r])
    gate_xyz = np.stack([cos * local[:, 0] - sin * local[:, 1],
                         sin * local[:, 0] + cos * local[:, 1], local[:, 2]], axis=1)
    np.testing.assert_allclose(gate_xyz, scanner.crystal_centres_mm(ids), atol=1e-3)
    # Crystal 0 sits on +x, and every copy fits inside its mother volume.
    assert abs(gate_xyz[0, 1]) < 1e-3 and gate_xyz[0, 0] > 0
    size = {v: np.array([number(cmds, f"/gate/{v}/geometry/set{a}Length", "mm") for a in "XYZ"])
            for v in ("rsector", "module", "crystal")}
    assert np.all(np.abs(crystal) + size["crystal"] / 2 <= size["module"] / 2 + 1e-9)
    assert np.all(np.abs(module) + size["module"] / 2 <= size["rsector"] / 2 + 1e-9)


# ---------------------------------------------------------------------- bad input
def test_unknown_placeholder_names_template_and_placeholder(default_spec, stage_phantom,
                                                            tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "main.mac").write_text("/control/execute {{macro_dir}}/extra.mac\n")
    (templates / "extra.mac").write_text("/gate/run/initialize\n/gate/x/set {{no_such_value}} mm\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"extra\.mac.*no_such_value"):
        render_gate9_macros(default_spec, stage_phantom, out, templates_dir=templates)
    assert not out.exists() or not list(out.iterdir())  # nothing written, not even main.mac


def test_malformed_placeholder_is_an_error(default_spec, stage_phantom, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "main.mac").write_text("/gate/world/setMaterial {{air_material}\n")
    with pytest.raises(ValueError, match=r"main\.mac: line 1: malformed placeholder"):
        render_gate9_macros(default_spec, stage_phantom, tmp_path / "out",
                            templates_dir=templates)


def test_missing_main_template(default_spec, stage_phantom, tmp_path):
    with pytest.raises(FileNotFoundError, match="main.mac"):
        render_gate9_macros(default_spec, stage_phantom, tmp_path / "out",
                            templates_dir=tmp_path)


def test_missing_phantom_copy_names_the_file(default_spec, offset_phantom, tmp_path):
    (offset_phantom.parent / "box_0000_materials.txt").unlink()
    with pytest.raises(FileNotFoundError, match="box_0000_materials.txt"):
        macro_values(default_spec, offset_phantom, tmp_path / "out")


def test_range_table_must_cover_the_image(default_spec, offset_phantom, tmp_path):
    table = offset_phantom.parent / "box_0000_materials.txt"
    table.write_text("2\n0 0 G4_AIR\n1 1 Water\n")  # aluminium (id 2) left out
    with pytest.raises(ValueError, match="material id 2"):
        macro_values(default_spec, offset_phantom, tmp_path / "out")


def test_phantom_outside_the_bore(default_spec, tmp_path):
    ids = np.zeros((2, 2, 2), np.uint8)
    for suffix, array in (("materials", ids), ("activity", np.ones((2, 2, 2), np.float32))):
        write_mhd(tmp_path / f"big_0000_{suffix}.mhd", array, (1.0, 100.0, 100.0),
                  (0.0, -50.0, -50.0))
    (tmp_path / "big_0000_materials.txt").write_text(gate_range_table(material_table(ids)))
    with pytest.raises(ValueError, match="bore"):
        macro_values(default_spec, tmp_path / "big_0000.h5", tmp_path / "out")


def test_policy_without_gate9_equivalent(default_spec, stage_phantom, tmp_path):
    spec = copy.deepcopy(default_spec)
    spec["scanner"]["multiples_policy"] = "TakeIfOnlyOneGood"
    with pytest.raises(ValueError, match="scanner.multiples_policy"):
        macro_values(spec, stage_phantom, tmp_path)
    spec["scanner"]["multiples_policy"] = "RemoveMultiples"
    assert macro_values(spec, stage_phantom, tmp_path)["multiples_policy"] == "killAll"


def test_missing_spec_field_is_named(default_spec, stage_phantom, tmp_path):
    spec = copy.deepcopy(default_spec)
    del spec["scanner"]["delayed_window_offset_ns"]
    with pytest.raises(ValueError, match="scanner.delayed_window_offset_ns"):
        macro_values(spec, stage_phantom, tmp_path)


def test_paths_with_spaces_are_refused(default_spec, stage_phantom, tmp_path):
    with pytest.raises(ValueError, match="spaces"):
        macro_values(default_spec, stage_phantom, tmp_path / "with space")


def test_existing_macros_are_kept_unless_overwrite(default_spec, stage_phantom, tmp_path):
    main = render_gate9_macros(default_spec, stage_phantom, tmp_path)
    main.write_text("edited\n")
    with pytest.raises(FileExistsError, match="main.mac"):
        render_gate9_macros(default_spec, stage_phantom, tmp_path)
    assert main.read_text() == "edited\n"
    render_gate9_macros(default_spec, stage_phantom, tmp_path, overwrite=True)
    assert main.read_text().startswith("# GATE 9")


def test_seed_reduction():
    assert gate_seed(3413889421) == 3413889421
    assert gate_seed(2**32 + 5) == 5
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            gate_seed(bad)


def test_gate_command(monkeypatch, tmp_path):
    main = tmp_path / "main.mac"
    main.write_text("/gate/application/startDAQ\n")
    monkeypatch.setattr(gm.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs the GATE 9 `Gate` executable on PATH"):
        gate_command(main)
    monkeypatch.setattr(gm.shutil, "which", lambda name: f"/opt/gate/bin/{name}")
    assert gate_command(main) == ["/opt/gate/bin/Gate", str(main.resolve())]


# ---------------------------------------------------------------------- the real thing
def _material_database() -> Path | None:
    home = os.environ.get("GATEHOME")
    if home and (Path(home) / "GateMaterials.db").is_file():
        return Path(home) / "GateMaterials.db"
    return None


def _gate9_missing() -> str:
    """Why the GATE 9 run cannot happen here ('' when it can)."""
    if shutil.which("Gate") is None:
        return "GATE 9 `Gate` executable not on PATH"
    if _material_database() is None:
        return "GateMaterials.db not found: set GATEHOME to the folder holding it"
    return ""


@pytest.mark.gate9
@pytest.mark.skipif(bool(_gate9_missing()), reason=_gate9_missing() or "GATE 9 available")
def test_gate_runs_the_rendered_macros(default_spec, stage_phantom, tmp_path):
    spec = copy.deepcopy(default_spec)
    spec["acquisition"]["duration_s"] = 1e-3  # about 600 decays
    main = render_gate9_macros(spec, stage_phantom, tmp_path,
                               material_database=_material_database())
    result = subprocess.run(gate_command(main), cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "gate9.root").is_file()
