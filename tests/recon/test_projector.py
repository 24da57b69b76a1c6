"""Siddon projector: exact intersection lengths (clipping each voxel box in the test), the
adjoint identity, chord lengths through the grid box, and the TOF kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.grid import ImageGrid
from recon.projector import HALF_C_MM_PER_PS, Projector, TOFKernel


def clip_length(p1: np.ndarray, p2: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Length of the segment p1-p2 inside the box [lower, upper] (Liang-Barsky), mm."""
    d = p2 - p1
    t0, t1 = 0.0, 1.0
    for a in range(3):
        if d[a] == 0:
            if not lower[a] <= p1[a] <= upper[a]:
                return 0.0
            continue
        ta, tb = sorted(((lower[a] - p1[a]) / d[a], (upper[a] - p1[a]) / d[a]))
        t0, t1 = max(t0, ta), min(t1, tb)
    return max(t1 - t0, 0.0) * float(np.linalg.norm(d))


def dense_matrix(p1: np.ndarray, p2: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """System matrix by clipping every LOR against every voxel box (x, y, z points)."""
    nz, ny, nx = grid.shape
    vz, vy, vx = grid.voxel_size_mm
    out = np.zeros((len(p1), grid.n_voxels))
    for i in range(len(p1)):
        for flat in range(grid.n_voxels):
            iz, iy, ix = np.unravel_index(flat, grid.shape)
            lower_zyx = grid.lower_mm + np.array([iz * vz, iy * vy, ix * vx])
            upper_zyx = lower_zyx + np.array([vz, vy, vx])
            out[i, flat] = clip_length(p1[i], p2[i], lower_zyx[::-1], upper_zyx[::-1])
    return out


def random_lors(rng: np.random.Generator, n: int, radius: float, half_z: float):
    """Chords between random points of a cylinder surface (x, y, z), mm."""
    phi = rng.uniform(0, 2 * np.pi, (2, n))
    z = rng.uniform(-half_z, half_z, (2, n))
    pts = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=-1)
    return pts[0], pts[1]


GRID = ImageGrid((3, 5, 4), (2.0, 1.5, 1.0), (-1.7, -3.1, -1.2))


def test_matrix_equals_voxel_clipping():
    rng = np.random.default_rng(1)
    p1, p2 = random_lors(rng, 40, 8.0, 4.0)
    # Axis-parallel LORs, and a diagonal one through voxel corners.
    extra1 = np.array([[-9.0, -3.1, -1.7], [-9.0, -3.5, 0.3], [-9.0, -9.0 - 1.7 + 0.3, -0.7]])
    extra2 = np.array([[9.0, -3.1, -1.7], [9.0, -3.5, 0.3], [9.0, 9.0 - 1.7 + 0.3, -0.7]])
    p1, p2 = np.vstack([p1, extra1]), np.vstack([p2, extra2])
    reference = dense_matrix(p1, p2, GRID)
    row, col, val = Projector(GRID, dtype=torch.float64, chunk=7).matrix_entries(p1, p2)
    ours = np.zeros_like(reference)
    np.add.at(ours, (row, col), val)
    np.testing.assert_allclose(ours, reference, atol=1e-9)
    assert reference[-3:].sum() > 0  # the special LORs do cross the grid


def test_adjoint_identity_float32():
    grid = ImageGrid((6, 9, 8), (2.0, 1.0, 1.2), (-5.0, -4.0, -4.2))
    rng = np.random.default_rng(2)
    p1, p2 = random_lors(rng, 3000, 15.0, 8.0)
    tof = rng.normal(0.0, 5.0, 3000)
    x = torch.rand(grid.shape, generator=torch.Generator().manual_seed(0))
    y = torch.rand(3000, generator=torch.Generator().manual_seed(1))
    projector = Projector(grid, chunk=1000)
    for kernel in (None, TOFKernel(sigma_mm=6.0, bin_mm=3.0)):
        ax = projector.forward(x, p1, p2, tof, kernel)
        aty = projector.back(y, p1, p2, tof, kernel)
        lhs, rhs = float((ax.double() * y.double()).sum()), float((x.double() * aty.double()).sum())
        assert lhs == pytest.approx(rhs, rel=2e-6)


def test_uniform_image_projects_to_the_chord_length():
    grid = ImageGrid((20, 30, 25), (2.0, 1.0, 1.5), (-19.0, -14.0, -17.0))
    rng = np.random.default_rng(3)
    p1, p2 = random_lors(rng, 5000, 60.0, 40.0)
    ones = torch.ones(grid.shape, dtype=torch.float64)
    ours = Projector(grid, dtype=torch.float64).forward(ones, p1, p2).numpy()
    lower, upper = grid.lower_mm[::-1], grid.upper_mm[::-1]
    expected = np.array([clip_length(a, b, lower, upper) for a, b in zip(p1, p2, strict=True)])
    assert (expected > 0).mean() > 0.1 and (expected == 0).any()
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_tof_projection_summed_over_bins_is_the_non_tof_projection():
    grid = ImageGrid((6, 16, 16), (2.0, 2.0, 2.0), (-5.0, -15.0, -15.0))
    rng = np.random.default_rng(4)
    p1, p2 = random_lors(rng, 200, 40.0, 6.0)
    image = torch.rand(grid.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    projector = Projector(grid, dtype=torch.float64)
    plain = projector.forward(image, p1, p2).numpy()
    bin_mm, kernel = 4.0, TOFKernel(sigma_mm=7.0, bin_mm=4.0)
    half_length = np.linalg.norm(p2 - p1, axis=1).max() / 2 + 8 * kernel.sigma_mm
    centres = np.arange(-half_length, half_length + bin_mm, bin_mm)
    total = np.zeros(len(p1))
    for c in centres:  # bins tiling the whole LOR
        total += bin_mm * projector.forward(image, p1, p2, np.full(len(p1), c), kernel).numpy()
    np.testing.assert_allclose(total, plain, rtol=1e-10, atol=1e-12)


def test_tof_kernel_width_and_sign():
    """A point-like voxel on a LOR: the TOF profile over positions peaks where the voxel is,
    on the p2 side for a voxel nearer p2, with the FWHM of the time resolution."""
    grid = ImageGrid((1, 1, 1), (1.0, 1.0, 0.5), (0.0, 0.0, 30.0))  # voxel at x = +30 mm
    image = torch.ones(grid.shape, dtype=torch.float64)
    p1, p2 = np.array([[-100.0, 0.0, 0.0]]), np.array([[100.0, 0.0, 0.0]])
    kernel = TOFKernel.from_fwhm_ps(300.0)
    assert kernel.sigma_mm * 2.3548 == pytest.approx(300 * HALF_C_MM_PER_PS, rel=1e-4)
    positions = np.linspace(-100, 100, 4001)
    profile = np.array([float(Projector(grid, dtype=torch.float64).forward(
        image, p1, p2, np.array([s]), kernel)[0]) for s in positions])
    assert positions[profile.argmax()] == pytest.approx(30.0, abs=0.1)
    above = positions[profile >= profile.max() / 2]
    assert above.max() - above.min() == pytest.approx(44.97, abs=0.2)  # 300 ps FWHM in mm


def test_bad_shapes_are_refused():
    projector = Projector(GRID)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        projector.forward(torch.zeros(GRID.shape), np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="voxels"):
        projector.forward(torch.zeros(5), np.zeros((2, 3)), np.ones((2, 3)))
