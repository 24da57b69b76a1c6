"""An off-centre point source, with coincidences generated here from straight rays and the
crystal that contains each ray's mid-depth point (``Scanner.crystal_id_at``), reconstructs at
its place in 2D (rebinned) and 3D list mode; TOF puts it at the right place along the LORs.

Together these check the TOF sign, the x/y order of the image, the angle of crystal 0, the
direction of rotation and the z order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid
from recon.projector import HALF_C_MM_PER_NS, Projector, TOFKernel
from recon.recon2d import EMSettings, plane_weights, reconstruct_2d, sinogram_stack
from recon.recon3d import reconstruct_3d, select_events
from recon.sensitivity import geometric_sensitivity
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix
from sim.scanner.geometry import Scanner

SOURCE_MM = np.array([21.0, -9.0, 14.0])  # x, y, z: every coordinate distinct and off-centre
C_MM_PER_NS = 2 * HALF_C_MM_PER_NS


def point_source_events(scanner: Scanner, n: int, rng: np.random.Generator,
                        max_angle_to_x_deg: float | None = None) -> dict[str, np.ndarray]:
    """Coincidences of back-to-back photons from SOURCE_MM: each photon is detected in the
    crystal that contains its ray at the crystals' mid-depth radius, and its time is the
    distance from the source to that crystal's mean-depth-of-interaction point over c (no
    blur)."""
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    if max_angle_to_x_deg is not None:
        keep = np.abs(u[:, 0]) > np.cos(np.radians(max_angle_to_x_deg))
        u = u[keep] * np.sign(u[keep, 0])[:, None]  # photon 1 towards +x
    mid_radius = scanner.inner_radius_mm + scanner.crystal_depth_mm / 2
    hits, times = [], []
    for sign in (1.0, -1.0):
        d = sign * u
        # Distance along the ray to the cylinder of mid-depth radius.
        b = SOURCE_MM[0] * d[:, 0] + SOURCE_MM[1] * d[:, 1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        c = SOURCE_MM[0] ** 2 + SOURCE_MM[1] ** 2 - mid_radius**2
        t = (-b + np.sqrt(b * b - a * c)) / a
        point = SOURCE_MM + t[:, None] * d
        hit = scanner.crystal_id_at(point)
        where = scanner.crystal_position_mm(np.maximum(hit, 0), scanner_doi_mm(scanner))
        hits.append(hit)
        times.append(np.linalg.norm(where - SOURCE_MM, axis=1) / C_MM_PER_NS)
    ok = (hits[0] >= 0) & (hits[1] >= 0)
    return {"crystal1": hits[0][ok], "crystal2": hits[1][ok],
            "time1_ns": times[0][ok], "time2_ns": times[1][ok]}


def peak_mm(image: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """(x, y, z) of the brightest voxel."""
    iz, iy, ix = np.unravel_index(np.argmax(image), image.shape)
    return np.array([grid.centres_mm(2)[ix], grid.centres_mm(1)[iy], grid.centres_mm(0)[iz]])


SCANNER = Scanner()
GEOMETRY = SinogramGeometry(SCANNER, scanner_doi_mm(SCANNER))
# Rebinning planes (2 mm) around the source, 2 mm pixels.
GRID = ImageGrid((20, 40, 40), (2.0, 2.0, 2.0), (-6.0, -39.0, -39.0))


@pytest.fixture(scope="module")
def events():
    return point_source_events(SCANNER, 40000, np.random.default_rng(11))


def test_rebinned_2d_reconstruction_finds_the_source(events):
    counts = sinogram_stack(events["crystal1"], events["crystal2"], GEOMETRY, GRID, 8)
    weights = plane_weights(GEOMETRY, GRID, 8, None)
    system = build_system_matrix(GEOMETRY, GRID)
    image = reconstruct_2d(counts, weights, system, GEOMETRY, GRID, EMSettings(10, 4)).image
    np.testing.assert_allclose(peak_mm(image.numpy(), GRID), SOURCE_MM, atol=2.0)


@pytest.mark.slow
def test_listmode_3d_reconstruction_finds_the_source(events):
    sensitivity = geometric_sensitivity(GEOMETRY, GRID, 63)
    selected = select_events(events, GEOMETRY, 63)
    image = reconstruct_3d(selected, sensitivity, GEOMETRY, GRID, 3, 4).image
    np.testing.assert_allclose(peak_mm(image.numpy(), GRID), SOURCE_MM, atol=2.0)


def test_tof_places_the_source_along_nearly_parallel_lors():
    """LORs within 6 degrees of the x axis cannot locate the source along x without TOF;
    with the TOF kernel (and the sign of DESIGN.md) the back projection peaks at the source,
    and with the opposite sign it would peak at the mirror point -x."""
    rng = np.random.default_rng(12)
    events = point_source_events(SCANNER, 400000, rng, max_angle_to_x_deg=6.0)
    # One row of 2 mm along x, 20 mm thick in y and z: it holds every LOR near the source.
    grid = ImageGrid((1, 1, 100), (20.0, 20.0, 2.0), (SOURCE_MM[2], SOURCE_MM[1], -99.0))
    selected = select_events(events, GEOMETRY, 63)
    assert len(selected.p1) > 500
    kernel = TOFKernel.from_fwhm_ps(200.0)
    projector = Projector(grid)
    ones = torch.ones(len(selected.p1))
    profile_tof = projector.back(ones, selected.p1, selected.p2, selected.tof_mm, kernel)[0, 0]
    profile_flat = projector.back(ones, selected.p1, selected.p2)[0, 0]
    x = grid.centres_mm(2)
    assert x[int(torch.argmax(profile_tof))] == pytest.approx(SOURCE_MM[0], abs=2.0)
    # Without TOF the profile is flat along x across the source (within the bore).
    near = np.abs(x) < 60
    flat = profile_flat.numpy()[near]
    assert flat.min() > 0.8 * flat.max()
    flipped = projector.back(ones, selected.p1, selected.p2, -selected.tof_mm, kernel)[0, 0]
    assert x[int(torch.argmax(flipped))] == pytest.approx(-SOURCE_MM[0], abs=2.0)
