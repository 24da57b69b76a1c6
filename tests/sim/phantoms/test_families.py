"""Phantoms: voxelised volumes against analytic volumes, activity, labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from sim.phantoms.families import draw_phantom
from sim.phantoms.stage import draw_and_voxelise
from sim.phantoms.voxelise import Grid

# A shorter tube than the default keeps each voxelisation to a couple of seconds.
SHORT = {"grid": {"shape": [36, 96, 96], "voxel_size_mm": [2.0, 1.0, 1.0]},
         "tube": {"length_mm": [60.0, 60.0], "outer_radius_mm": [40.0, 40.0],
                  "wall_thickness_mm": [5.0, 5.0], "anisotropic_probability": 0.0}}
NO_DEFECTS = {"count": [0, 0]}


def _only(kind: str, **params) -> dict:
    types = {k: 0.0 for k in ("crack", "hole", "pit", "inclusion", "bubble")}
    types[kind] = 1.0
    return {"count": [1, 1], "types": types, kind: params}


def _segment_area(radius: float, half_width: float) -> float:
    """Integral of sqrt(r^2 - y^2) dy over [-w, w] (closed form)."""
    w = half_width
    return w * np.sqrt(radius**2 - w**2) + radius**2 * np.arcsin(w / radius)


@pytest.mark.parametrize("anisotropic", [False, True])
def test_tube_wall_and_solution_volumes(make_spec, anisotropic):
    tube = {**SHORT["tube"], "anisotropic_probability": 1.0 if anisotropic else 0.0,
            "eccentricity_mm": [2.0, 2.0], "ellipticity": [0.06, 0.06]}
    spec = make_spec({**SHORT, "tube": tube, "defects": NO_DEFECTS})
    model, vox = draw_and_voxelise(spec)
    d = model.description
    a, b = d["bore_semi_axes_mm"]
    bore_length = d["length_mm"] - 2 * d["end_cap_mm"]
    wall = np.pi * d["outer_radius_mm"] ** 2 * d["length_mm"] - np.pi * a * b * bore_length
    solution = np.pi * a * b * bore_length
    assert vox.material_volume_mm3["aluminium"] == pytest.approx(wall, rel=0.01)
    assert vox.material_volume_mm3["water"] == pytest.approx(solution, rel=0.01)
    assert vox.solution_volume_mm3 == pytest.approx(solution, rel=0.01)
    if anisotropic:
        assert b == pytest.approx(0.94 * a)
        assert np.hypot(*d["bore_centre_xy_mm"]) == pytest.approx(2.0)


def test_activity_confined_to_solution_and_normalised(make_spec):
    spec = make_spec({**SHORT, "defects": NO_DEFECTS})
    model, vox = draw_and_voxelise(spec)
    assert vox.activity.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    assert vox.activity.min() >= 0
    # Voxel centres, and a voxel's reach (half-diagonal), computed here independently.
    z, y, x = np.meshgrid(*(model.grid.axis_centres_mm(i) for i in range(3)), indexing="ij")
    reach = 0.5 * np.linalg.norm(model.grid.voxel_size_mm)
    r = np.hypot(x, y)
    a = 35.0
    half_bore = 30.0 - 5.0
    outside = (r > a + reach) | (np.abs(z) > half_bore + reach)
    inside = (r < a - reach) & (np.abs(z) < half_bore - reach)
    assert np.all(vox.activity[outside] == 0)
    # Uniform concentration: every voxel fully in the solution holds the same activity,
    # which is the voxel volume over the bore volume.
    expected = model.grid.voxel_volume_mm3 / (np.pi * a**2 * 2 * half_bore)
    np.testing.assert_allclose(vox.activity[inside], expected, rtol=0.01)
    assert np.ptp(vox.activity[inside]) == 0
    water_mu = vox.mu511_per_mm[inside]
    np.testing.assert_allclose(water_mu, 0.00960, rtol=2e-3)


def test_bubble_and_inclusion_volumes(make_spec):
    for kind, material in (("bubble", "air"), ("inclusion", "steel")):
        defects = _only(kind, diameter_mm=[6.0, 6.0])
        model, vox = draw_and_voxelise(make_spec({**SHORT, "defects": defects}))
        (defect,) = model.defects
        assert defect["type"] == kind and defect["material"] == material
        sphere = 4 / 3 * np.pi * 3.0**3
        assert vox.label_volume_mm3[1] == pytest.approx(sphere, rel=0.01)
        # The sphere displaces exactly its volume of solution from the bore (r 35 mm, 50 mm).
        bore = np.pi * 35.0**2 * 50.0
        assert vox.material_volume_mm3["water"] == pytest.approx(bore - sphere, rel=1e-3)
        assert vox.solution_volume_mm3 == pytest.approx(bore - sphere, rel=1e-3)
        if material == "steel":
            assert vox.material_volume_mm3["steel"] == pytest.approx(sphere, rel=0.01)
        # No activity where the sphere is (voxels whose centre is deep inside it).
        centre = np.array(defect["shape"]["centre_mm"])
        z, y, x = np.meshgrid(*(model.grid.axis_centres_mm(i) for i in range(3)), indexing="ij")
        deep = np.linalg.norm(np.stack([x, y, z], -1) - centre, axis=-1) < 3.0 - 1.3
        assert deep.sum() > 5 and np.all(vox.activity[deep] == 0)


def test_through_wall_crack_volume_and_sub_voxel_width(make_spec):
    width, length = 0.5, 20.0
    defects = _only("crack", length_mm=[length, length], width_mm=[width, width],
                    depth_fraction=[1.0, 1.0], tilt_deg=[0.0, 0.0])
    model, vox = draw_and_voxelise(make_spec({**SHORT, "defects": defects}))
    # Axial slot through the wall: cross-section of the annulus 35 < r < 40 within |y| < w/2.
    area = _segment_area(40.0, width / 2) - _segment_area(35.0, width / 2)
    assert vox.label_volume_mm3[1] == pytest.approx(area * length, rel=0.01)
    # A 0.5 mm crack in 1 mm voxels: the solution it holds is kept as partial activity.
    labelled = vox.labels == 1
    assert labelled.sum() > 0
    assert 0 < vox.activity[labelled].max() < vox.activity.max()


def test_hole_volume(make_spec):
    diameter = 3.0
    model, vox = draw_and_voxelise(
        make_spec({**SHORT, "defects": _only("hole", diameter_mm=[3.0, 3.0])}))
    rho = diameter / 2
    # Radial cylinder through the annulus: chord length between the two circles, over the disc.
    volume, _ = integrate.quad(
        lambda t: 2 * np.sqrt(rho**2 - t**2) * (np.sqrt(40.0**2 - t**2) - np.sqrt(35.0**2 - t**2)),
        -rho, rho)
    assert vox.label_volume_mm3[1] == pytest.approx(volume, rel=0.01)


def test_pit_volume_against_monte_carlo(make_spec):
    model, vox = draw_and_voxelise(make_spec({**SHORT, "defects": _only(
        "pit", diameter_mm=[6.0, 6.0], depth_fraction=[0.4, 0.4])}))
    (pit,) = model.defects
    assert pit["depth_mm"] == pytest.approx(2.0)
    centre = np.array(pit["shape"]["centre_mm"])
    radius = pit["shape"]["radius_mm"]
    # Independent reference: uniform points in the sphere's bounding cube, kept where they are in
    # the sphere and in the wall (35 < r < 40).
    rng = np.random.default_rng(0)
    n = 4_000_000
    pts = centre + (rng.random((n, 3)) - 0.5) * 2 * radius
    in_sphere = np.linalg.norm(pts - centre, axis=1) < radius
    r = np.hypot(pts[:, 0], pts[:, 1])
    volume = np.mean(in_sphere & (r > 35.0) & (r < 40.0)) * (2 * radius) ** 3
    assert vox.label_volume_mm3[1] == pytest.approx(volume, rel=0.01)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_drawn_defect_is_in_the_label_map(make_spec, seed):
    defects = {"count": [5, 5], "crack": {"width_mm": [0.2, 0.3]}}
    spec = make_spec({**SHORT, "seed": seed, "defects": defects,
                      "tube": {**SHORT["tube"], "anisotropic_probability": 0.5}})
    model, vox = draw_and_voxelise(spec)
    assert len(model.defects) == 5
    assert set(np.unique(vox.labels)) - {0} == {1, 2, 3, 4, 5}
    for defect in model.defects:
        assert vox.label_volume_mm3[defect["label"]] > 0


def test_determinism(make_spec):
    spec = make_spec({**SHORT, "seed": 7})
    _, first = draw_and_voxelise(spec)
    _, again = draw_and_voxelise(spec)
    for name in ("material", "activity", "mu511_per_mm", "labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other_model, other = draw_and_voxelise(make_spec({**SHORT, "seed": 8}))
    assert not np.array_equal(first.activity, other.activity)
    # Phantom i is the same whatever the set size (its stream is (seed, i)).
    assert draw_phantom(make_spec({"n_phantoms": 9}, phantom="tube_0002")).defects == \
        draw_phantom(make_spec({"n_phantoms": 3}, phantom="tube_0002")).defects


@pytest.mark.parametrize("position", [[3.5, -2.5, 1.5], [3.0, -3.0, 1.0]])
def test_point_source_centroid(make_spec, position):
    """A sphere centred on a voxel centre or a voxel corner voxelises symmetrically, so the
    activity centroid (taken at voxel centres) is exactly its centre."""
    spec = make_spec({"family": "point", "grid": {"shape": [16, 32, 32],
                                                  "voxel_size_mm": [1.0, 1.0, 1.0]},
                      "partial_volume_subsamples": 16,
                      "point": {"position_mm": position, "diameter_mm": 1.0}},
                     name="p")
    model, vox = draw_and_voxelise(spec)
    z, y, x = np.meshgrid(*(model.grid.axis_centres_mm(i) for i in range(3)), indexing="ij")
    centroid = [float(np.sum(vox.activity * c)) for c in (x, y, z)]
    np.testing.assert_allclose(centroid, position, atol=0.02)
    assert vox.solution_volume_mm3 == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.03)


def test_nema_phantom(make_spec):
    # A 160 mm box: its corners (113 mm from the axis) stay inside the crystals.
    spec = make_spec({"family": "nema", "grid": {"shape": [50, 40, 40],
                                                 "voxel_size_mm": [4.0, 4.0, 4.0]},
                      "nema": {"diameter_mm": 150.0, "length_mm": 200.0, "line_offset_mm": 46.0,
                               "line_diameter_mm": 3.2}}, name="n")
    model, vox = draw_and_voxelise(spec)
    z, y, x = np.meshgrid(*(model.grid.axis_centres_mm(i) for i in range(3)), indexing="ij")
    # Activity only in the line at (0, 46 mm), a row of voxel centres (so the voxelised
    # centroid is exact by symmetry); cold water cylinder around it.
    assert float(np.sum(vox.activity * y)) == pytest.approx(46.0, abs=0.02)
    assert float(np.sum(vox.activity * x)) == pytest.approx(0.0, abs=0.02)
    assert np.all(vox.activity[np.hypot(x, y - 46.0) > 1.6 + 2.9] == 0)
    assert vox.solution_volume_mm3 == pytest.approx(np.pi * 1.6**2 * 200.0, rel=0.01)
    assert vox.material_volume_mm3["water"] == pytest.approx(np.pi * 75.0**2 * 200.0, rel=0.01)


def test_grid_convention():
    grid = Grid((3, 4, 5), (2.0, 1.0, 0.5))
    np.testing.assert_allclose(grid.origin_mm, [-2.0, -1.5, -1.0])
    np.testing.assert_allclose(grid.axis_centres_mm(2), [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert grid.centres_xyz_mm()[0, 0, 4].tolist() == [1.0, -1.5, -2.0]
