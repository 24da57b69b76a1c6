"""Scatter estimation against independent references: the Klein-Nishina kernel against the
textbook total cross section and the Compton formula, the window efficiency against a sampled
energy blur, tail fitting on data of known scale, and the single-scatter sum against a direct
loop over scatter points for one detector pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid, recon_grid
from recon.projector import Projector
from recon.scatter import (
    ScatterSettings,
    coarse_detectors,
    coarse_single_scatter,
    fit_tail_scale,
    klein_nishina,
    klein_nishina_total,
    scatter_points,
    scattered_energy_kev,
    to_rebinned,
    window_efficiency,
)
from recon.sinogram import SinogramGeometry, plane_multiplicity
from sim.scanner.geometry import Scanner

#: Total Klein-Nishina cross section of a free electron at 511 keV, barn (NIST XCOM's
#: incoherent scattering on one electron, 0.2867 b; r_e^2 = 0.07941 b).
SIGMA_KN_511_BARN = 0.2867
R_E2_BARN = 0.079407877


def test_klein_nishina_integrates_to_the_total_cross_section():
    for energy in (100.0, 340.0, 511.0, 1000.0):
        cos_theta = np.linspace(-1.0, 1.0, 200001)
        numeric = 2 * math.pi * np.trapezoid(klein_nishina(cos_theta, energy), cos_theta)
        assert numeric == pytest.approx(float(klein_nishina_total(energy)), rel=1e-6)
    assert float(klein_nishina_total(511.0)) * R_E2_BARN == pytest.approx(SIGMA_KN_511_BARN,
                                                                          rel=2e-3)
    # Thomson limit: forward scattering keeps r_e^2 per steradian.
    assert float(klein_nishina(1.0)) == pytest.approx(1.0)


def test_compton_energies():
    assert scattered_energy_kev(0.0) == pytest.approx(255.5, abs=0.01)  # 90 degrees
    assert scattered_energy_kev(-1.0) == pytest.approx(170.33, abs=0.01)  # back-scatter
    assert scattered_energy_kev(1.0) == pytest.approx(510.99895)


def test_window_efficiency_matches_a_sampled_energy_blur():
    rng = np.random.default_rng(0)
    for energy in (511.0, 400.0, 300.0):
        sigma = 0.15 * math.sqrt(511.0 * energy) / 2.3548200450309493
        deposits = energy + sigma * rng.standard_normal(400_000)
        sampled = np.mean((deposits >= 350.0) & (deposits <= 650.0))
        assert float(window_efficiency(energy, (350.0, 650.0), 0.15)) == pytest.approx(
            sampled, abs=3e-3)


def test_tail_fit_recovers_a_known_scale():
    rng = np.random.default_rng(1)
    shape = (5000, 12)
    scatter = rng.uniform(0.2, 1.0, shape)
    randoms = np.full(shape, 0.3)
    tails = rng.random(shape) < 0.4
    for scale in (0.0, 2.5, 40.0):
        prompts = rng.poisson(scale * scatter + randoms).astype(float)
        fitted = fit_tail_scale(prompts, randoms, scatter, tails)
        expected_sd = math.sqrt((scale * scatter + randoms)[tails].sum()) / scatter[tails].sum()
        assert fitted == pytest.approx(scale, abs=4 * expected_sd + 1e-12)
    assert fit_tail_scale(prompts, randoms, np.zeros(shape), tails) == 0.0


SCANNER = Scanner(crystals_per_ring=48, modules_per_ring=12, rings=8,
                  crystals_per_module_axial=4, crystal_pitch_mm=4.0, axial_pitch_mm=4.0)
GEOMETRY = SinogramGeometry(SCANNER, scanner_doi_mm(SCANNER), min_sector_difference=1)


def test_single_scatter_equals_a_direct_sum_over_scatter_points():
    """One coarse detector pair, every term of Watson's formula written out here with its own
    line integrals (3D Siddon through the fine grid), against the module's estimate."""
    grid = recon_grid(ImageGrid((16, 20, 20), (2.0, 1.0, 1.0), (-15.0, -9.5, -9.5)), SCANNER,
                      2.0)
    z, y, x = np.meshgrid(*(grid.centres_mm(a) for a in range(3)), indexing="ij")
    inside = x**2 + y**2 <= 8.0**2
    mu = np.where(inside, 0.0096, 0.0)
    activity = np.where(inside & (np.abs(z) < 6), 1.0 + 0.05 * x, 0.0)
    settings = ScatterSettings(scatter_step_mm=4.0, coarse_voxel_mm=2.0, crystal_step=4,
                               ring_step=2)
    window, resolution = (350.0, 650.0), 0.15
    per_lor = coarse_single_scatter(GEOMETRY, grid, activity, mu, 2, window, resolution,
                                    settings)
    det = coarse_detectors(GEOMETRY, settings)
    # Coarse pair: crystal groups 0 and 6 in ring group 1 with itself (coarse plane m = 2).
    points, mu_s, volume = scatter_points(mu, grid, settings.scatter_step_mm,
                                          settings.mu_threshold_per_mm)
    siddon = Projector(grid, dtype=torch.float64)
    a_pos, b_pos = det.position_mm[0, 1], det.position_mm[6, 1]
    n_a, n_b = det.normal[0], det.normal[6]
    e511 = float(window_efficiency(511.0, window, resolution))
    total = 0.0
    for p, m in zip(points, mu_s, strict=True):
        to_a, to_b = a_pos - p, b_pos - p
        ra, rb = np.linalg.norm(to_a), np.linalg.norm(to_b)
        cos_theta = -float(to_a @ to_b) / (ra * rb)
        e_prime = float(scattered_energy_kev(cos_theta))
        f = float(klein_nishina_total(e_prime) / klein_nishina_total(511.0))
        i_a = float(siddon.forward(mu, p[None], a_pos[None])[0])
        i_b = float(siddon.forward(mu, p[None], b_pos[None])[0])
        l_a = float(siddon.forward(activity, p[None], a_pos[None])[0])
        l_b = float(siddon.forward(activity, p[None], b_pos[None])[0])
        geometric = abs(to_a @ n_a) / ra**3 * abs(to_b @ n_b) / rb**3
        total += (volume * m / float(klein_nishina_total(511.0)) * float(klein_nishina(cos_theta))
                  * geometric * e511 * float(window_efficiency(e_prime, window, resolution))
                  * (math.exp(-i_a - f * i_b) * l_a + math.exp(-f * i_a - i_b) * l_b))
    assert per_lor[0, 6, 2] == pytest.approx(total, rel=1e-6)
    assert per_lor[6, 0, 2] == pytest.approx(total, rel=1e-6)  # A and B swapped


def test_rebinned_interpolation_is_exact_for_a_linear_estimate():
    settings = ScatterSettings(crystal_step=4, ring_step=2)
    det = coarse_detectors(GEOMETRY, settings)
    n_t, n_r = det.position_mm.shape[:2]
    m = np.arange(2 * n_r - 1, dtype=float)
    coarse = np.broadcast_to(3.0 + 0.5 * m, (n_t, n_t, m.size)).copy()  # linear in z only
    planes = np.arange(2 * SCANNER.rings - 1)
    rebinned = to_rebinned(coarse, det, GEOMETRY, planes, 2)
    lors = plane_multiplicity(SCANNER.rings, 2)
    z_plane = SCANNER.ring_z_mm[0] + planes * SCANNER.axial_pitch_mm / 2
    m_of_plane = (z_plane - det.position_mm[0, 0, 2]) / (settings.ring_step
                                                          * SCANNER.axial_pitch_mm / 2)
    expected = (3.0 + 0.5 * np.clip(m_of_plane, 0, m.size - 1)) * lors
    valid = GEOMETRY.valid().ravel()
    np.testing.assert_allclose(rebinned[valid], np.broadcast_to(expected, rebinned[valid].shape))
    assert not rebinned[~valid].any()
