"""Phantoms from the user's parts: volumes against the meshes, the named cavity's solution,
defects on the walls (checked with trimesh's own distance queries), placement, bad meshes."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import trimesh

from pipeline.config import REPO_ROOT, ConfigError, load_config, validate_config
from sim.phantoms.families import draw_phantom
from sim.phantoms.parts.layout import PartSettings, load_part
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import draw_and_voxelise

PARTS = REPO_ROOT / "examples" / "parts"
SECTIONS = 64  # polygon sections of the example channels (examples/parts/make_parts.py)
WALL_ONLY = {"crack": 1.0, "hole": 1.0, "pit": 1.0, "inclusion": 0.0, "bubble": 0.0}
FLUID_ONLY = {"crack": 0.0, "hole": 0.0, "pit": 0.0, "inclusion": 1.0, "bubble": 1.0}


def _block(fill=("channel_a",), b_material="air", turn=(30.0, 30.0)) -> dict:
    return {
        "family": "part",
        "grid": {"shape": [20, 96, 96], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "partial_volume_subsamples": 4,
        "part": {"volumes": [
            {"name": "body", "mesh": str(PARTS / "drilled_block_body.ply"),
             "material": "aluminium"},
            {"name": "channel_a", "mesh": str(PARTS / "drilled_block_channel_a.obj"),
             "material": "water"},
            {"name": "channel_b", "mesh": str(PARTS / "drilled_block_channel_b.obj"),
             "material": b_material}],
            "fill": list(fill), "rotation_z_deg": list(turn)},
        "defects": {"count": [0, 0]},
    }


def _elbow(defects: dict | None = None) -> dict:
    return {
        "family": "part",
        "grid": {"shape": [16, 112, 112], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "partial_volume_subsamples": 4,
        "part": {"volumes": [
            {"name": "body", "mesh": str(PARTS / "pipe_elbow_body.stl"), "material": "aluminium"},
            {"name": "bore", "mesh": str(PARTS / "pipe_elbow_bore.stl"), "material": "water"}],
            "fill": ["bore"], "rotation_z_deg": [0.0, 360.0]},
        "defects": defects or {"count": [0, 0]},
    }


def _prism_mm3(radius: float, length: float) -> float:
    """Volume of a regular polygon prism of SECTIONS sides inscribed in ``radius``."""
    return 0.5 * SECTIONS * radius**2 * np.sin(2 * np.pi / SECTIONS) * length


@pytest.fixture(scope="module")
def block():
    cfg = load_config()
    cfg["datasets"] = {"t": {**cfg["datasets"]["tubes"], **_block()}}
    spec = phantom_spec(validate_config(cfg), "t", "part_0000")
    return spec, *draw_and_voxelise(spec)


@pytest.mark.slow
def test_block_volumes_match_the_solids(block):
    _, _, vox = block
    channel_a, channel_b = _prism_mm3(6.0, 56.0), _prism_mm3(4.0, 56.0)
    assert vox.material_volume_mm3["aluminium"] == pytest.approx(
        70 * 50 * 30 - channel_a - channel_b, rel=0.01)
    assert vox.material_volume_mm3["water"] == pytest.approx(channel_a, rel=0.01)
    assert vox.solution_volume_mm3 == pytest.approx(channel_a, rel=0.01)


def _channel_frame(points_xyz: np.ndarray, turn_deg: float) -> np.ndarray:
    """Voxel centres turned back into the block's own frame (analytic inverse placement)."""
    c, s = np.cos(np.deg2rad(-turn_deg)), np.sin(np.deg2rad(-turn_deg))
    x, y, z = points_xyz[..., 0], points_xyz[..., 1], points_xyz[..., 2]
    return np.stack([c * x - s * y, s * x + c * y, z], -1)


@pytest.mark.slow
def test_solution_fills_exactly_the_named_channel(block):
    _, model, vox = block
    local = _channel_frame(model.grid.centres_xyz_mm(), 30.0)
    x, y, z = local[..., 0], local[..., 1], local[..., 2]
    m = 1.3  # beyond the voxels' half-diagonal (1.22 mm): voxels no surface cuts
    in_a = (np.abs(x) < 28 - m) & (np.hypot(y + 10.0, z) < 6 * np.cos(np.pi / SECTIONS) - m)
    in_b = (np.abs(x) < 28 - m) & (np.hypot(y - 12.0, z - 4.0) < 4 * np.cos(np.pi / SECTIONS) - m)
    metal = (np.abs(x) < 35 - m) & (np.abs(y) < 25 - m) & (np.abs(z) < 15 - m) & \
        ((np.abs(x) > 28 + m) | ((np.hypot(y + 10.0, z) > 6 + m)
                                 & (np.hypot(y - 12.0, z - 4.0) > 4 + m)))
    full = vox.activity[in_a]
    assert full.min() == pytest.approx(full.max()) and full.min() > 0
    assert np.all(vox.activity[in_b] == 0) and np.all(vox.activity[metal] == 0)
    assert np.all(vox.mu511_per_mm[in_b] < 1e-4)  # the dry channel stays air
    assert np.all(vox.material[metal] == vox.material[metal][0])  # aluminium throughout
    # Every voxel with activity touches channel_a (within a voxel half-diagonal of it).
    near_a = (np.abs(x) < 28 + m) & (np.hypot(y + 10.0, z) < 6 + m)
    assert np.all(vox.activity[~near_a] == 0)


@pytest.mark.slow
def test_filling_the_other_channel_moves_the_solution(make_spec):
    spec = make_spec(_block(fill=("channel_b",), b_material="water"), phantom="part_0000")
    _, vox = draw_and_voxelise(spec)
    assert vox.solution_volume_mm3 == pytest.approx(_prism_mm3(4.0, 56.0), rel=0.01)


@pytest.mark.slow
def test_elbow_volumes_match_the_meshes(make_spec):
    spec = make_spec(_elbow(), phantom="part_0001")
    _, vox = draw_and_voxelise(spec)
    body = trimesh.load(PARTS / "pipe_elbow_body.stl")
    bore = trimesh.load(PARTS / "pipe_elbow_bore.stl")
    assert vox.material_volume_mm3["aluminium"] == pytest.approx(body.volume - bore.volume,
                                                                 rel=0.01)
    assert vox.solution_volume_mm3 == pytest.approx(bore.volume, rel=0.01)


def _placed(model, name):
    return next(layer.shape.mesh for layer in model.layers
                if getattr(layer.shape, "name", None) == name)


@pytest.mark.slow
def test_wall_defects_sit_on_the_wetted_wall(make_spec):
    spec = make_spec(_elbow({"count": [6, 6], "types": WALL_ONLY,
                             "crack": {"length_mm": [6.0, 10.0], "width_mm": [1.0, 2.0]},
                             "pit": {"diameter_mm": [3.0, 5.0]}}), phantom="part_0002")
    model, vox = draw_and_voxelise(spec)
    body, bore = _placed(model, "body"), _placed(model, "bore")
    points = np.array([d["surface_point_mm"] for d in model.defects])
    normals = np.array([d["normal"] for d in model.defects])
    closest, distance, face = trimesh.proximity.closest_point(bore, points)
    assert distance.max() < 1e-6  # on the bore's surface
    assert np.all(np.einsum("ij,ij->i", normals, bore.face_normals[face]) > 0.999)
    beyond = points + 0.5 * normals
    assert np.all(body.contains(beyond)) and not np.any(bore.contains(beyond))
    centres = model.grid.centres_xyz_mm()
    for d in model.defects:
        mask = vox.labels == d["label"]
        assert mask.any(), d["type"]
        # The defect replaced metal only: its voxels sit in the wall (or astride its surface).
        in_wall = body.contains(centres[mask]) & ~bore.contains(centres[mask])
        assert in_wall.mean() > 0.5, (d["type"], in_wall.mean())
        # Its solution is no more than the shape's volume, all of it taken from the wall.
        assert 0 < vox.label_volume_mm3[d["label"]] <= _shape_volume(d["shape"]) * 1.05
        assert d["local_wall_mm"] == pytest.approx(3.0, abs=0.3)  # the elbow's 3 mm wall


def _shape_volume(shape: dict) -> float:
    if shape["shape"] == "Sphere":
        return 4 / 3 * np.pi * shape["radius_mm"] ** 3
    if shape["shape"] == "Cylinder":
        return np.pi * shape["radius_mm"] ** 2 * 2 * shape["half_length_mm"]
    return 8 * float(np.prod(shape["half_sizes_mm"]))


def test_fluid_defects_are_clear_of_every_wall(make_spec):
    spec = make_spec(_elbow({"count": [4, 4], "types": FLUID_ONLY,
                             "inclusion": {"diameter_mm": [4.0, 6.0]},
                             "bubble": {"diameter_mm": [4.0, 6.0]}}), phantom="part_0000")
    model = draw_phantom(spec)
    bore = _placed(model, "bore")
    centres = np.array([d["shape"]["centre_mm"] for d in model.defects])
    radii = np.array([d["shape"]["radius_mm"] for d in model.defects])
    depth = trimesh.proximity.signed_distance(bore, centres)  # positive inside
    assert np.all(depth >= radii + 1.0 - 1e-6)
    assert {d["material"] for d in model.defects} <= {"steel", "air"}


def test_placement_centres_rotates_scales_and_shifts():
    settings = PartSettings.from_config({
        "volumes": [{"name": "body", "mesh": str(PARTS / "drilled_block_body.ply"),
                     "material": "aluminium"}],
        "fill": ["body"], "unit_mm": 0.5, "centre": True, "rotation_deg": [0.0, 0.0, 90.0],
        "rotation_z_deg": [0.0, 0.0], "translation_mm": [5.0, -3.0, 2.0]})
    (body,) = load_part(settings, turn_z_deg=0.0)
    lo, hi = body.solid.bounds_mm()
    # 70 x 50 x 30 mm at half scale, turned by 90 degrees about z: 25 x 35 x 15, then shifted.
    np.testing.assert_allclose(lo, [-12.5 + 5.0, -17.5 - 3.0, -7.5 + 2.0], atol=1e-9)
    np.testing.assert_allclose(hi, [12.5 + 5.0, 17.5 - 3.0, 7.5 + 2.0], atol=1e-9)
    assert body.solid.volume_mm3 == pytest.approx(70 * 50 * 30 / 8)


def test_phantom_draws_are_deterministic_and_independent_of_the_set_size(make_spec):
    spec = make_spec({**_elbow({"count": [2, 3]}), "n_phantoms": 3}, phantom="part_0001")
    again = make_spec({**_elbow({"count": [2, 3]}), "n_phantoms": 7}, phantom="part_0001")
    a, b = draw_phantom(spec), draw_phantom(again)
    assert a.defects == b.defects
    assert a.description["rotation_z_drawn_deg"] == b.description["rotation_z_drawn_deg"]


def test_example_parts_are_what_the_script_makes(tmp_path):
    loader = importlib.util.spec_from_file_location("make_parts", PARTS / "make_parts.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    for path in module.write_parts(tmp_path):
        made, shipped = trimesh.load(path), trimesh.load(PARTS / path.name)
        np.testing.assert_allclose(made.vertices, shipped.vertices, atol=1e-6)
        np.testing.assert_array_equal(made.faces, shipped.faces)
        assert made.is_watertight and made.volume > 0


# ---------------------------------------------------------------------- bad input
def _config_with(default_config, dataset: dict) -> dict:
    cfg = copy.deepcopy(default_config)
    cfg["datasets"] = {"mine": dataset}
    return cfg


def _refused(default_config, dataset: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(_config_with(default_config, dataset))
    message = str(err.value)
    assert "\n" not in message
    return message


def _with_mesh(path) -> dict:
    ds = _block()
    ds["part"]["volumes"][0]["mesh"] = str(path)
    return ds


def _open(mesh):
    return trimesh.Trimesh(mesh.vertices, mesh.faces[1:], process=False)


def _inverted(mesh):
    return trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)


def _one_face_flipped(mesh):
    faces = mesh.faces.copy()
    faces[0] = faces[0, ::-1]
    return trimesh.Trimesh(mesh.vertices, faces, process=False)


@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply"])
@pytest.mark.parametrize("damage, expected", [
    (_open, "not closed"),
    (_inverted, "normals point inward"),
    (_one_face_flipped, "not consistently oriented"),
])
def test_damaged_meshes_are_refused_naming_the_file(default_config, tmp_path, suffix,
                                                    damage, expected):
    path = tmp_path / f"part{suffix}"
    damage(trimesh.creation.box(extents=[40.0, 30.0, 20.0])).export(path)
    message = _refused(default_config, _with_mesh(path))
    assert str(path) in message and expected in message and "datasets.mine.part" in message


@pytest.mark.parametrize("name, content, expected", [
    ("garbage.stl", b"\x00\x01 this is not a mesh", "not a valid STL file"),
    ("truncated.stl", b"\0" * 80 + (100).to_bytes(4, "little") + b"\1" * 120, "no triangles"),
    ("broken.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n",
     "cannot be read"),
    ("empty.obj", b"", "holds no triangles"),
    ("nan.obj", b"v 0 0 0\nv 1 0 0\nv 0 nan 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n",
     "NaN or infinity"),
    ("part.step", b"ISO-10303-21;", "unsupported file type"),
])
def test_unreadable_meshes_are_refused_naming_the_file(default_config, tmp_path, name,
                                                       content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    message = _refused(default_config, _with_mesh(path))
    assert str(path) in message and expected in message


def test_a_missing_mesh_is_refused(default_config, tmp_path):
    message = _refused(default_config, _with_mesh(tmp_path / "absent.stl"))
    assert "absent.stl" in message and "no such file" in message


@pytest.mark.parametrize("change, expected", [
    ({"unit_mm": 1.5}, "does not fit the voxel grid"),
    ({"translation_mm": [0.0, 0.0, 15.0]}, "does not fit the voxel grid"),
])
def test_a_part_that_does_not_fit_is_refused(default_config, change, expected):
    ds = _block(turn=(0.0, 0.0))
    ds["part"].update(change)
    message = _refused(default_config, ds)
    assert expected in message and "drilled_block_body.ply" in message


def test_a_grid_large_enough_for_a_part_beyond_the_bore_is_refused(default_config):
    """A part reaching past the crystals needs a voxel box whose corners do too."""
    ds = _block(turn=(0.0, 0.0))
    ds["part"]["unit_mm"] = 3.0
    ds["grid"] = {"shape": [40, 200, 200], "voxel_size_mm": [1.0, 1.0, 1.0]}
    message = _refused(default_config, ds)
    # 200 mm square box: corners at 100 * sqrt(2) mm, beyond the 116.4 mm crystal faces.
    assert "datasets.mine.grid" in message and f"{100 * 2 ** 0.5:.1f} mm" in message
    assert "beyond the scanner bore" in message


def test_random_turns_need_the_grid_inscribed_circle(default_config):
    ds = _elbow()
    ds["grid"] = {"shape": [16, 96, 96], "voxel_size_mm": [2.0, 1.0, 1.0]}
    ds["part"]["rotation_z_deg"] = [0.0, 0.0]
    validate_config(_config_with(default_config, ds))  # 74 mm across fits 96 mm unturned
    ds["part"]["rotation_z_deg"] = [0.0, 360.0]  # turned, it reaches 52 mm from the axis
    assert "does not fit the voxel grid" in _refused(default_config, ds)


@pytest.mark.parametrize("change, key, expected", [
    (lambda p: p.update(fill=["channel_c"]), "part.fill", "'channel_c' is not a volume"),
    (lambda p: p["volumes"][2].update(name="channel_a"), "part.volumes",
     "channel_a used twice"),
    (lambda p: p.update(fill=["channel_b"]), "part.fill", "is of air"),
    (lambda p: p.pop("fill"), "part.fill", "should be non-empty"),
])
def test_inconsistent_part_sections_are_refused(default_config, change, key, expected):
    ds = _block()
    change(ds["part"])
    message = _refused(default_config, ds)
    assert f"datasets.mine.{key}" in message and expected in message


def test_wall_defects_need_a_solid_volume(default_config):
    ds = _block()
    ds["part"]["volumes"] = ds["part"]["volumes"][1:2]
    ds["defects"] = {"count": [1, 1], "types": WALL_ONLY}
    assert "no volume is a solid one" in _refused(default_config, ds)
    ds["defects"]["types"] = FLUID_ONLY
    validate_config(_config_with(default_config, ds))


def test_a_part_family_without_its_section_is_refused(default_config):
    ds = _block()
    del ds["part"]
    assert "datasets.mine.part" in _refused(default_config, ds)


def _one_box(path, extents, unit_mm: float = 1.0) -> dict:
    """A part of one water-filled box mesh of ``extents`` (file units), no defects."""
    trimesh.creation.box(extents=extents).export(path)
    ds = _block()
    ds["part"].update(volumes=[{"name": "body", "mesh": str(path), "material": "water"}],
                      fill=["body"], unit_mm=unit_mm)
    return ds


#: The block's grid: 2 x 1 x 1 mm voxels (a part needs at least 4 mm), 96 mm across in a bore
#: of 2 x 116.4 mm (room 233 mm; a part over 466 mm is no near miss).
@pytest.mark.parametrize("extents, unit_mm, size, reason, hint", [
    ([0.04, 0.03, 0.02], 1.0, "0.04 mm across (0.04 x 0.03 x 0.02 mm",
     "less than two voxels of the grid (4 mm): too small to image or to hold a defect",
     "are the files in metres (part.unit_mm: 1000, 40 mm across)?"),
    ([1.5, 1.2, 0.8], 1.0, "1.5 mm across (1.5 x 1.2 x 0.8 mm",
     "less than two voxels of the grid (4 mm)",
     "are the files in centimetres (part.unit_mm: 10, 15 mm across) or inches "
     "(part.unit_mm: 25.4, 38.1 mm across)?"),
    ([40.0, 30.0, 20.0], 25.4, "1016 mm across (1016 x 762 x 508 mm",
     "more than twice the room it must fit in (233 mm, the larger of the grid's extent and the "
     "scanner bore's diameter)",
     "are the files in millimetres (part.unit_mm: 1, 40 mm across)?"),
    ([40000.0, 30000.0, 20000.0], 1.0, "40000 mm across",
     "more than twice the room", "are the files in micrometres (part.unit_mm: 0.001, 40 mm "
                                 "across)?"),
    ([1e-5, 1e-5, 1e-5], 1.0, "1e-05 mm across", "less than two voxels",
     "check the files' units (part.unit_mm) and the grid's voxel_size_mm"),
])
def test_a_part_of_implausible_size_is_refused_with_its_likely_units(
        default_config, tmp_path, extents, unit_mm, size, reason, hint):
    path = tmp_path / "part.stl"
    message = _refused(default_config, _one_box(path, extents, unit_mm))
    assert message.startswith(f"config key datasets.mine.part.unit_mm: mesh {path}: the part "
                              f"measures {size}"), message
    assert f"with part.unit_mm {unit_mm:g}), " in message
    assert reason in message and message.endswith(hint), message


def test_the_phantom_stage_refuses_a_part_in_metres_before_placing_defects(default_config,
                                                                          tmp_path):
    """Through ``python -m sim phantom --spec`` (no config validation on that path): one
    error line naming the mesh, its size and the unit, nothing written."""
    import json
    import subprocess
    import sys

    mm = tmp_path / "part_mm.stl"
    ds = _one_box(mm, [40.0, 30.0, 20.0])
    ds["defects"] = {"count": [2, 2], "types": FLUID_ONLY}
    spec = phantom_spec(validate_config(_config_with(default_config, ds)), "mine", "part_0000")
    metres = tmp_path / "part_m.stl"
    trimesh.creation.box(extents=[0.04, 0.03, 0.02]).export(metres)
    spec["part"]["volumes"][0]["mesh"] = str(metres)  # the same part, drawn in metres
    out = tmp_path / "out" / "part_0000.h5"
    run = subprocess.run([sys.executable, "-m", "sim", "phantom", "--spec", json.dumps(spec),
                          "--out", str(out)], capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0].startswith(f"error: mesh {metres}: the part measures 0.04 mm across")
    assert err[0].endswith("are the files in metres (part.unit_mm: 1000, 40 mm across)?")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
