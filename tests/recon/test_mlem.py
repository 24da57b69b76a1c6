"""MLEM/OSEM against a dense-matrix reference written here, EM invariants on noise-free data,
list-mode against sinogram MLEM, and attenuation correction of a water-filled aluminium tube
against analytic line integrals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.attenuation import plane_attenuation
from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid
from recon.mlem import osem_sinogram, view_subsets
from recon.recon2d import (
    EMSettings,
    plane_weights,
    reconstruct_2d,
    sinogram_stack,
    uniform_randoms,
)
from recon.recon3d import reconstruct_3d, select_events
from recon.sensitivity import geometric_sensitivity
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix
from sim.scanner.geometry import Scanner
from tests.recon.test_projector import clip_length

SMALL = Scanner(crystals_per_ring=24, modules_per_ring=6, rings=1, crystals_per_module_axial=1,
                crystal_pitch_mm=4.0, axial_pitch_mm=4.0, crystal_axial_width_mm=4.0)


def small_problem():
    geometry = SinogramGeometry(SMALL, scanner_doi_mm(SMALL), min_sector_difference=1)
    grid = ImageGrid((1, 6, 6), (2.0, 3.0, 3.0), (0.0, -7.5, -7.5))
    return geometry, grid


def dense_reference_matrix(geometry: SinogramGeometry, grid: ImageGrid) -> np.ndarray:
    """(bins, pixels) by clipping each bin's LOR against each pixel box; invalid bins zero."""
    p1, p2 = geometry.endpoints_mm(0.0)
    valid = geometry.valid().ravel()
    out = np.zeros((geometry.n_bins, grid.n_voxels))
    ny, nx = grid.shape[1:]
    for i in np.flatnonzero(valid):
        for j in range(grid.n_voxels):
            iy, ix = divmod(j, nx)
            lower = np.array([grid.lower_mm[2] + ix * grid.voxel_size_mm[2],
                              grid.lower_mm[1] + iy * grid.voxel_size_mm[1], -1.0])
            upper = lower + np.array([grid.voxel_size_mm[2], grid.voxel_size_mm[1], 2.0])
            out[i, j] = clip_length(p1[i], p2[i], lower, upper)
    return out


def reference_osem(a: np.ndarray, w: np.ndarray, y: np.ndarray, iterations: int,
                   subsets: list[np.ndarray], b: np.ndarray | None = None) -> np.ndarray:
    """Textbook OSEM on dense arrays:
    x <- x / (A_S^T w_S) A_S^T (w_S y_S / (w_S A_S x + b_S))."""
    x = np.ones(a.shape[1])
    b = np.zeros_like(y) if b is None else b
    for _ in range(iterations):
        for rows in subsets:
            a_s, w_s, y_s = a[rows], w[rows], y[rows]
            ybar = w_s * (a_s @ x) + b[rows]
            ratio = np.divide(y_s, ybar, out=np.zeros_like(y_s), where=ybar > 0)
            sens = a_s.T @ w_s
            x = np.divide(x * (a_s.T @ (w_s * ratio)), sens, out=np.zeros_like(x),
                          where=sens > 0)
    return x


@pytest.mark.parametrize("n_subsets, with_background", [(1, False), (3, False), (3, True)])
def test_osem_equals_dense_reference(n_subsets, with_background):
    geometry, grid = small_problem()
    assert grid.fov_mask(geometry.fov_radius_mm()).all()
    a = dense_reference_matrix(geometry, grid)
    rng = np.random.default_rng(5)
    w = rng.uniform(0.3, 1.0, geometry.n_bins) * geometry.valid().ravel()
    y = rng.poisson(50.0 * w * (a @ rng.uniform(0.5, 2.0, grid.n_voxels))).astype(float)
    b = rng.uniform(0.5, 3.0, geometry.n_bins) * geometry.valid().ravel() if with_background \
        else None
    subsets = view_subsets(geometry.shape, n_subsets)
    expected = reference_osem(a, w, y, 8, subsets, b)
    system = build_system_matrix(geometry, grid)
    ours = osem_sinogram(torch.as_tensor(y[:, None], dtype=torch.float64), system.matrix,
                         torch.as_tensor(w[:, None]), torch.ones(grid.n_voxels, 1, dtype=bool),
                         8, subsets, None if b is None else torch.as_tensor(b[:, None]))
    np.testing.assert_allclose(ours.image[:, 0].numpy(), expected, rtol=2e-5)


def test_noise_free_mlem_invariants():
    """Log-likelihood never decreases; after every iteration the expected counts sum to the
    measured counts (sensitivity A^T w over the same bins)."""
    geometry, grid = small_problem()
    system = build_system_matrix(geometry, grid)
    a = system.matrix.toarray().astype(np.float64)
    rng = np.random.default_rng(6)
    truth = rng.uniform(0.2, 3.0, grid.n_voxels)
    w = rng.uniform(0.3, 1.0, geometry.n_bins) * geometry.valid().ravel()
    y = w * (a @ truth)
    sums = []

    def check(_, image):
        sums.append(float((w * (a @ image[:, 0].numpy())).sum()))

    result = osem_sinogram(torch.as_tensor(y[:, None]), system.matrix,
                           torch.as_tensor(w[:, None]), torch.ones(grid.n_voxels, 1, dtype=bool),
                           30, view_subsets(geometry.shape, 1), callback=check)
    np.testing.assert_allclose(sums, y.sum(), rtol=1e-10)
    assert np.all(np.diff(result.loglik) >= -1e-9 * abs(result.loglik[-1]))
    assert result.loglik[-1] > result.loglik[0]
    assert len(result.loglik) == 30


def test_listmode_equals_sinogram_mlem_on_the_same_events():
    scanner = Scanner(rings=1, crystals_per_module_axial=1)
    geometry = SinogramGeometry(scanner, scanner_doi_mm(scanner))
    grid = ImageGrid((1, 24, 24), (2.0, 4.0, 4.0), (0.0, -46.0, -46.0))
    rng = np.random.default_rng(7)
    a, b = rng.integers(0, 184, (2, 6000))
    columns = {"crystal1": a.astype(np.int32), "crystal2": b.astype(np.int32),
               "time1_ns": np.zeros(6000), "time2_ns": np.zeros(6000)}
    ok = a != b
    columns = {k: v[ok] for k, v in columns.items()}
    counts = sinogram_stack(columns["crystal1"], columns["crystal2"], geometry, grid, 0)
    weights = plane_weights(geometry, grid, 0, None)
    system = build_system_matrix(geometry, grid)
    sino = reconstruct_2d(counts, weights, system, geometry, grid, EMSettings(6, 1))
    events = select_events(columns, geometry, 0)
    assert len(events.p1) == counts.sum() > 3000
    sens = geometric_sensitivity(geometry, grid, 0)
    listmode = reconstruct_3d(events, sens, geometry, grid, 6, 1)
    np.testing.assert_allclose(listmode.image.numpy(), sino.image.numpy(), rtol=2e-3,
                               atol=2e-5 * float(sino.image.max()))
    np.testing.assert_allclose(listmode.loglik, sino.loglik, rtol=1e-4)


def tube_mu_map(r_water_mm: float, r_tube_mm: float, mu_water: float, mu_al: float,
                n: int = 200, pixel_mm: float = 0.5, subsamples: int = 4) -> np.ndarray:
    """Water disk in an aluminium ring, area-weighted on a fine grid, (1, n, n) 1/mm."""
    c = (np.arange(n * subsamples) + 0.5) / subsamples * pixel_mm - n * pixel_mm / 2
    r = np.hypot(*np.meshgrid(c, c, indexing="ij"))
    mu = np.where(r < r_water_mm, mu_water, np.where(r < r_tube_mm, mu_al, 0.0))
    return mu.reshape(n, subsamples, n, subsamples).mean(axis=(1, 3))[None]


def test_attenuation_correction_flattens_a_water_filled_aluminium_tube():
    """Noise-free data from analytic chords: activity = water disk (r 35 mm), attenuation of
    water (0.0960 /cm) and an aluminium wall 35-40 mm (0.2258 /cm, DESIGN.md)."""
    scanner = Scanner(rings=1, crystals_per_module_axial=1)
    geometry = SinogramGeometry(scanner, scanner_doi_mm(scanner))
    r_w, r_al, mu_w, mu_al = 35.0, 40.0, 0.00960, 0.02258
    p1, p2 = geometry.endpoints_mm(0.0)
    d = p2[:, :2] - p1[:, :2]
    s = np.abs(p1[:, 0] * d[:, 1] - p1[:, 1] * d[:, 0]) / np.maximum(np.linalg.norm(d, axis=1),
                                                                    1e-9)
    chord_w = 2 * np.sqrt(np.clip(r_w**2 - s**2, 0, None))
    chord_al = 2 * np.sqrt(np.clip(r_al**2 - s**2, 0, None)) - chord_w
    valid = geometry.valid().ravel()
    y = (1000.0 * chord_w * np.exp(-mu_w * chord_w - mu_al * chord_al) * valid)[:, None]

    grid = ImageGrid((1, 48, 48), (2.0, 2.0, 2.0), (0.0, -47.0, -47.0))
    mu_grid = ImageGrid((1, 200, 200), (2.0, 0.5, 0.5), (0.0, -49.75, -49.75))
    attenuation = plane_attenuation(geometry, tube_mu_map(r_w, r_al, mu_w, mu_al), mu_grid,
                                    np.array([0.0]))
    system = build_system_matrix(geometry, grid)
    centres = grid.centres_mm(1)
    radius = np.hypot(*np.meshgrid(centres, centres, indexing="ij"))
    interior = radius < 25.0
    images = {}
    for corrected in (True, False):
        w = plane_weights(geometry, grid, 0, attenuation if corrected else None)
        result = reconstruct_2d(y, w, system, geometry, grid, EMSettings(20, 1))
        images[corrected] = result.image[0].numpy()
    flat = images[True][interior]
    assert np.abs(flat / flat.mean() - 1).max() < 0.05  # every interior pixel
    profile = [images[True][(radius >= r) & (radius < r + 5)].mean() for r in range(0, 25, 5)]
    assert np.ptp(profile) < 0.01 * flat.mean()  # annulus means: flat within 1 %
    cupped = images[False]
    centre, rim = cupped[radius < 8].mean(), cupped[(radius > 22) & (radius < 27)].mean()
    assert centre < 0.85 * rim  # uncorrected: visibly cupped
    outside = radius > r_al + 4
    assert images[True][outside].max() < 0.05 * flat.mean()


def test_randoms_from_the_delayed_window():
    """uniform_randoms keeps each plane's delayed total on its valid bins; modelling the
    randoms background removes the activity they would otherwise add, and lowers
    a cold region."""
    geometry, grid = small_problem()
    valid = geometry.valid().ravel()
    delayed = np.zeros((geometry.n_bins, 2))
    delayed[np.flatnonzero(valid)[:5], 0] = 3.0
    randoms = uniform_randoms(delayed, geometry)
    np.testing.assert_allclose(randoms.sum(axis=0), [15.0, 0.0])
    assert (randoms[~valid] == 0).all() and np.ptp(randoms[valid, 0]) == 0

    system = build_system_matrix(geometry, grid)
    a = system.matrix.toarray().astype(np.float64)
    truth = np.ones(grid.n_voxels)
    truth[[14, 15, 20, 21]] = 0.0  # a cold 2 x 2 block in the middle
    w = valid.astype(float)
    r = 0.5 * (w * (a @ truth)).mean() * w  # randoms: half the mean true counts per bin
    y = w * (a @ truth) + r
    images = {}
    for modelled in (True, False):
        result = osem_sinogram(torch.as_tensor(y[:, None]), system.matrix,
                               torch.as_tensor(w[:, None]),
                               torch.ones(grid.n_voxels, 1, dtype=bool), 200,
                               view_subsets(geometry.shape, 1),
                               torch.as_tensor(r[:, None]) if modelled else None)
        images[modelled] = result.image[:, 0].numpy()
    cold = [14, 15, 20, 21]
    warm = np.setdiff1d(np.arange(grid.n_voxels), cold)
    seen = a.sum(axis=1) > 0  # bins whose LOR crosses the image
    # Near convergence the expected trues sum to the measured counts minus the randoms.
    assert (w * (a @ images[True])).sum() == pytest.approx((y - r)[seen].sum(), rel=1e-3)
    assert images[True][warm].mean() == pytest.approx(1.0, abs=0.02)
    # Unmodelled, the randoms become activity: every measured count is explained by x.
    assert (w * (a @ images[False])).sum() == pytest.approx(y[seen].sum(), rel=1e-6)
    assert y[seen].sum() > 1.15 * (w * (a @ truth)).sum()
    assert (images[False][cold] > 2 * images[True][cold]).all()


def test_em_ratio_stays_finite_where_the_model_expects_next_to_nothing():
    """EM's counts / ybar against float64 division, with what a cold region produces in
    float32: a denormal expectation (2.2e-40, whose reciprocal overflows to infinity) and
    zeros. Those give 0, every other entry the plain quotient."""
    from recon.mlem import EXPECTED_FLOOR, measured_over_expected

    ybar = torch.tensor([3.0, 0.5, 2.2e-40, 0.0, 1e-9, 4e-3], dtype=torch.float32)
    counts = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float32)
    assert not torch.isfinite(1.0 / ybar[2])  # the overflow the guard exists for
    ratio = measured_over_expected(counts, ybar)
    y64, c64 = ybar.double().numpy(), counts.double().numpy()
    expected = np.where(y64 > EXPECTED_FLOOR * y64.max(), c64 / np.where(y64 > 0, y64, 1), 0.0)
    np.testing.assert_allclose(ratio.numpy(), expected, rtol=1e-6)
    assert ratio[2] == 0 and ratio[3] == 0 and ratio[4] > 0  # 1e-9 is 3e-10 of the largest
    assert torch.isfinite(measured_over_expected(1.0, ybar)).all()
    assert measured_over_expected(1.0, torch.zeros(0)).numel() == 0
