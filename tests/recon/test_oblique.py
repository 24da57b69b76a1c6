"""The oblique SSRB model against independent references: 3D Siddon line integrals of the
physical LORs, the SSRB multiplicity, the analytic attenuation of a uniform cylinder, the
adjoint identity, and the monotone likelihood of MLEM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.attenuation import rebinned_attenuation
from recon.geometry import lor_endpoints_mm, scanner_doi_mm
from recon.grid import ImageGrid, recon_grid
from recon.mlem import view_subsets
from recon.oblique import ObliqueGeometry, ObliqueModel, osem_oblique
from recon.projector import Projector
from recon.recon2d import plane_indices
from recon.sinogram import SinogramGeometry, plane_multiplicity
from recon.system_matrix import build_system_matrix
from sim.scanner.geometry import Scanner

SCANNER = Scanner(crystals_per_ring=48, modules_per_ring=12, rings=10,
                  crystals_per_module_axial=5, crystal_pitch_mm=4.0, axial_pitch_mm=4.0)
GEOMETRY = SinogramGeometry(SCANNER, scanner_doi_mm(SCANNER), min_sector_difference=1)
D_MAX = 4


@pytest.fixture(scope="module")
def setup():
    phantom_box = ImageGrid((20, 24, 24), (2.0, 1.0, 1.0), (-19.0, -11.5, -11.5))
    grid = recon_grid(phantom_box, SCANNER, 2.0)
    system = build_system_matrix(GEOMETRY, grid)
    oblique = ObliqueGeometry.build(GEOMETRY, system, grid, plane_indices(GEOMETRY, grid))
    return grid, system, oblique


def _zyx(grid: ImageGrid):
    return np.meshgrid(*(grid.centres_mm(a) for a in range(3)), indexing="ij")


def test_line_integrals_match_3d_siddon_through_the_physical_lors(setup):
    grid, _, oblique = setup
    z, y, x = _zyx(grid)
    blob = np.exp(-((x - 3) ** 2 + (y + 2) ** 2) / 60.0 - (z - 1.0) ** 2 / 80.0)
    siddon = Projector(grid, dtype=torch.float64)
    a, b = GEOMETRY.pairs()
    bins = np.flatnonzero(GEOMETRY.valid().ravel())
    ours, reference = [], []
    for d, planes in oblique.ring_differences(D_MAX):
        ours.append((oblique.integrals(blob, d, planes)
                     * oblique.secant(d)[:, None])[bins].T.ravel())
        for k in planes:
            r1 = (oblique.plane_index[k] - d) // 2
            c1 = SCANNER.crystal_id(np.full(bins.size, r1), a.ravel()[bins])
            c2 = SCANNER.crystal_id(np.full(bins.size, r1 + d), b.ravel()[bins])
            p1, p2 = lor_endpoints_mm(SCANNER, c1, c2, GEOMETRY.doi_mm)
            reference.append(siddon.forward(blob, p1, p2).numpy())
    ours, reference = np.concatenate(ours), np.concatenate(reference)
    checked = reference.size
    # Linear interpolation in z against Siddon's piecewise-constant voxels: the two
    # discretisations of one smooth blob agree to 2 % of its largest integral.
    np.testing.assert_allclose(ours, reference, atol=0.02 * reference.max())
    assert np.corrcoef(ours, reference)[0, 1] > 0.999
    assert checked > 5000


def test_without_attenuation_the_factors_count_the_ring_pairs(setup):
    grid, _, oblique = setup
    total = rebinned_attenuation(oblique, np.zeros(grid.shape), D_MAX)
    expected = plane_multiplicity(SCANNER.rings, D_MAX)[oblique.plane_index]
    np.testing.assert_allclose(total, np.broadcast_to(expected, total.shape))


def test_attenuation_of_a_long_uniform_cylinder_is_analytic(setup):
    grid, _, oblique = setup
    radius_mm, mu = 9.0, 0.02
    z, y, x = _zyx(grid)
    # Sub-sampled area fraction of each pixel inside the circle (the map's partial volume).
    offsets = (np.arange(8) + 0.5) / 8 - 0.5
    yy = y[..., None, None] + 2.0 * offsets[:, None]
    xx = x[..., None, None] + 2.0 * offsets[None, :]
    mu_map = mu * ((xx**2 + yy**2) <= radius_mm**2).mean(axis=(-1, -2))
    ours = rebinned_attenuation(oblique, mu_map, D_MAX)
    p1, p2 = GEOMETRY.endpoints_mm()
    d_xy = (p2 - p1)[:, :2]
    norm = np.maximum(np.linalg.norm(d_xy, axis=1), 1e-9)  # empty bins have no LOR
    s = np.abs(p1[:, 0] * d_xy[:, 1] - p1[:, 1] * d_xy[:, 0]) / norm
    chord = 2 * np.sqrt(np.clip(radius_mm**2 - s**2, 0, None))
    # Away from the rim, where the 2 mm pixels' partial volume decides grazing chords.
    valid = GEOMETRY.valid().ravel() & (np.abs(s - radius_mm) > 2.0)
    # Central planes: every LOR of |d| <= D_MAX stays inside the map axially there.
    centre = np.argsort(np.abs(grid.centres_mm(0)))[:2]
    for k in centre:
        expected = sum(np.exp(-mu * chord * oblique.secant(d))
                       for d, planes in oblique.ring_differences(D_MAX) if k in planes)
        np.testing.assert_allclose(ours[valid, k], expected[valid], rtol=0.02)
        assert np.mean(ours[valid, k] / expected[valid]) == pytest.approx(1.0, abs=3e-3)


def test_forward_and_back_projection_are_adjoint(setup):
    grid, _, oblique = setup
    rng = np.random.default_rng(0)
    mu_map = rng.uniform(0, 0.02, grid.shape)
    subsets = view_subsets(GEOMETRY.shape, 3)
    model = ObliqueModel(oblique, D_MAX, subsets, GEOMETRY.valid().ravel(), grid.shape[0],
                         mu_map)
    x = torch.as_tensor(rng.random((oblique.n_pixels, grid.shape[0])), dtype=torch.float64)
    for q, bins in enumerate(subsets):
        y = torch.as_tensor(rng.random((len(bins), grid.shape[0])), dtype=torch.float64)
        lhs = float((model.forward(x.float(), q).double() * y).sum())
        rhs = float((x * model.back(y.float(), q).double()).sum())
        assert lhs == pytest.approx(rhs, rel=1e-5)


def test_mlem_likelihood_increases_and_recovers_a_cold_sphere_in_noise_free_data(setup):
    grid, _, oblique = setup
    z, y, x = _zyx(grid)
    activity = ((x**2 + y**2) <= 10.0**2).astype(float)
    activity[(x - 4) ** 2 + y**2 + z**2 <= 4.0**2] = 0.0
    mu_map = 0.0096 * ((x**2 + y**2) <= 10.0**2)
    valid = GEOMETRY.valid().ravel()
    truth = ObliqueModel(oblique, D_MAX, [np.arange(GEOMETRY.n_bins)], valid, grid.shape[0],
                         mu_map)
    columns = torch.as_tensor(activity.reshape(grid.shape[0], -1).T.copy(), dtype=torch.float32)
    counts = truth.forward(columns, 0) * 50.0
    mask = torch.as_tensor(grid.fov_mask(GEOMETRY.fov_radius_mm()).ravel())
    result = osem_oblique(counts, truth, mask, 30)
    assert np.all(np.diff(result.loglik) >= -1e-6 * abs(result.loglik[-1]))
    image = result.image.T.reshape(grid.shape).numpy()
    cold = image[(x - 4) ** 2 + y**2 + z**2 <= 2.0**2].mean()
    warm = image[((x + 4) ** 2 + y**2 <= 3.0**2) & (np.abs(z) <= 4)].mean()
    assert cold < 0.3 * warm

