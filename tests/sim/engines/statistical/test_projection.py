"""Line integrals of the statistical engine against a slow reference: every sampled line
integrated with scipy's trilinear interpolation at 4,000 points, for lines at every axial
tilt, on an image with smooth and sharp parts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from sim.engines.statistical.entry import virtual_ring_z_mm
from sim.engines.statistical.projection import (
    face_centres_xy,
    oblique_integrals,
    plane_profiles,
    tracks_through,
)
from tests.sim.engines.statistical.helpers import SCANNER


def _image(sharp: bool):
    shape = (28, 48, 48)
    voxel = np.array([2.0, 1.5, 1.5])
    origin = -(np.array(shape) - 1) / 2 * voxel + np.array([1.0, 0.3, -0.2])
    zz, yy, xx = np.meshgrid(*[origin[a] + np.arange(shape[a]) * voxel[a] for a in range(3)],
                             indexing="ij")
    if sharp:
        image = ((xx**2 + yy**2 < 25**2) & (np.abs(zz) < 20)).astype(np.float32)
        image[(xx - 8) ** 2 + (yy + 5) ** 2 + (zz - 4) ** 2 < 16] = 3.0
    else:
        image = (np.exp(-(xx**2 + yy**2) / 300 - zz**2 / 400)
                 + np.exp(-((xx - 10) ** 2 + (yy + 5) ** 2 + (zz - 8) ** 2) / 40))
    return image.astype(np.float32), voxel, origin


def _reference(image, voxel, origin, a, b, n=4000):
    u = (np.arange(n) + 0.5) / n
    pts = a + u[:, None] * (b - a)
    coords = np.stack([(pts[:, 2] - origin[0]) / voxel[0], (pts[:, 1] - origin[1]) / voxel[1],
                       (pts[:, 0] - origin[2]) / voxel[2]])
    values = scipy.ndimage.map_coordinates(image, coords, order=1, mode="grid-constant")
    return values.sum() * np.linalg.norm(b - a) / n


@pytest.mark.parametrize("sharp", [False, True])
def test_line_integrals_match_trilinear_sampling(sharp):
    image, voxel, origin = _image(sharp)
    half_xy = (np.array(image.shape[1:]) / 2 * voxel[1:])[::-1]
    centre_xy = (origin[1:] + (np.array(image.shape[1:]) - 1) / 2 * voxel[1:])[::-1]
    tracks = tracks_through(SCANNER, centre_xy - half_xy, centre_xy + half_xy, step_mm=0.7)
    z = virtual_ring_z_mm(SCANNER, np.arange(-2, SCANNER.rings + 2))
    z1, z2 = (a.ravel() for a in np.meshgrid(z, z, indexing="ij"))
    result = oblique_integrals(plane_profiles(image, voxel, origin, tracks), origin[0],
                               voxel[0], tracks, (z1 + z2) / 2, z2 - z1)
    rng = np.random.default_rng(2)
    # Lines the result says cross the image, and lines anywhere (most miss it).
    crossing = np.argwhere(result > 1.0)
    pick = crossing[rng.integers(len(crossing), size=120)]
    p = np.r_[pick[:, 0], rng.integers(tracks.i.size, size=40)]
    r = np.r_[pick[:, 1], rng.integers(z1.size, size=40)]
    expected = np.array([
        _reference(image, voxel, origin, np.r_[tracks.start_xy[a], z1[b]],
                   np.r_[tracks.end_xy[a], z2[b]]) for a, b in zip(p, r, strict=True)])
    assert (expected > 0.9).sum() >= 120
    tolerance = 0.01 if sharp else 1e-3  # sharp edges: 0.5 mm samples against 4,000
    np.testing.assert_allclose(result[p, r], expected, rtol=tolerance,
                               atol=tolerance * expected.max())


def test_tracks_are_the_column_pairs_that_cross_the_circle():
    lo, hi = np.array([-30.0, -30.0]), np.array([30.0, 30.0])
    tracks = tracks_through(SCANNER, lo, hi)
    centres = face_centres_xy(SCANNER)
    # The faces' centres are on the polygon: at the apothem along their module's normal.
    assert np.allclose(np.linalg.norm(centres, axis=1).min(), SCANNER.inner_radius_mm,
                       atol=SCANNER.crystal_pitch_mm)
    # Brute force over all pairs: a pair is kept exactly when a point of its segment lies
    # within the circle through the box corners.
    i, j = np.triu_indices(SCANNER.crystals_per_ring, k=1)
    u = np.linspace(0, 1, 2001)
    pts = centres[i][:, None] + u[None, :, None] * (centres[j] - centres[i])[:, None]
    near = np.linalg.norm(pts, axis=2).min(axis=1) < np.hypot(30, 30) - 0.05
    kept = set(zip(tracks.i.tolist(), tracks.j.tolist(), strict=True))
    assert {(a, b) for a, b, n in zip(i, j, near, strict=True) if n} <= kept
    # The sample fractions cover the box on every kept track: the box part of each track,
    # found by dense sampling of the whole segment, is within the sampled range.
    du = tracks.u[1] - tracks.u[0]
    a, b = tracks.start_xy, tracks.end_xy
    pts = a[:, None] + u[None, :, None] * (b - a)[:, None]
    inside = np.all(np.abs(pts) <= 30.0, axis=2)
    assert inside.any(axis=1).mean() > 0.6
    in_box_u = np.where(inside, u[None, :], np.nan)
    assert np.nanmin(in_box_u) >= tracks.u[0] - du / 2
    assert np.nanmax(in_box_u) <= tracks.u[-1] + du / 2
    assert du * tracks.length_xy_mm.max() <= 1.0 + 1e-9


def test_nearest_profiles_read_the_voxel_holding_each_point_and_zero_outside():
    """``nearest``: the value of the voxel whose cell holds the sample point (index by
    rounding, per point, in a plain loop), zero where the point is off the grid."""
    image, voxel, origin = _image(sharp=True)
    image = image + np.arange(image.size, dtype=np.float32).reshape(image.shape) * 1e-4
    tracks = tracks_through(SCANNER, np.array([-60.0, -60.0]), np.array([60.0, 60.0]))
    tracks = tracks.subset(np.random.default_rng(5).choice(tracks.i.size, 60, replace=False))
    result = plane_profiles(image, voxel, origin, tracks, nearest=True)
    pts = tracks.points_xy()
    expected = np.zeros_like(result)
    outside = 0
    for p in range(pts.shape[0]):
        for k in range(pts.shape[1]):
            ix = int(np.floor((pts[p, k, 0] - origin[2]) / voxel[2] + 0.5))
            iy = int(np.floor((pts[p, k, 1] - origin[1]) / voxel[1] + 0.5))
            if 0 <= ix < image.shape[2] and 0 <= iy < image.shape[1]:
                expected[:, p, k] = image[:, iy, ix]
            else:
                outside += 1
    assert outside > 100 and outside < pts.shape[0] * pts.shape[1] - 100
    np.testing.assert_array_equal(result, expected)
