"""3D sensitivity images: the shift-invariant geometric sensitivity equals the sum over every
ring pair; the attenuated one equals a per-LOR sum written here with box clipping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from recon.geometry import lor_endpoints_mm, scanner_doi_mm
from recon.grid import ImageGrid
from recon.sensitivity import attenuated_sensitivity, geometric_sensitivity
from recon.sinogram import SinogramGeometry
from sim.scanner.geometry import Scanner
from tests.recon.test_projector import clip_length

SMALL = Scanner(crystals_per_ring=24, modules_per_ring=6, rings=4, crystals_per_module_axial=4,
                crystal_pitch_mm=4.0, axial_pitch_mm=4.0)
GEOMETRY = SinogramGeometry(SMALL, scanner_doi_mm(SMALL), min_sector_difference=1)


@pytest.mark.parametrize("max_ring_difference", [0, 2, 3])
def test_shift_invariant_sensitivity_equals_the_sum_over_ring_pairs(max_ring_difference):
    # Rebinning planes 2 mm apart, from ring 0's centre (z = -6 mm) on.
    grid = ImageGrid((5, 6, 6), (2.0, 3.0, 3.0), (-4.0, -7.5, -7.5))
    mu_grid = ImageGrid((1, 1, 1), (40.0, 40.0, 40.0), (0.0, 0.0, 0.0))
    zero_mu = torch.zeros(mu_grid.shape)
    direct = attenuated_sensitivity(GEOMETRY, grid, max_ring_difference, mu_grid, zero_mu)
    shifted = geometric_sensitivity(GEOMETRY, grid, max_ring_difference)
    assert direct.sum() > 0
    np.testing.assert_allclose(shifted.numpy(), direct.numpy(), rtol=1e-5,
                               atol=1e-6 * float(direct.max()))


def test_attenuated_sensitivity_of_one_voxel_against_a_per_lor_sum():
    """One 4 x 3 x 3 mm voxel at the centre inside a 16 x 16 x 12 mm block of water: every
    recordable LOR contributes its length in the voxel times exp(-mu x its length in the
    block), both lengths from box clipping."""
    grid = ImageGrid((1, 1, 1), (2.0, 3.0, 3.0), (0.0, 0.0, 0.0))
    mu_grid = ImageGrid((3, 4, 4), (4.0, 4.0, 4.0), (-4.0, -6.0, -6.0))
    mu_water = 0.0096  # 1/mm
    mu = torch.full(mu_grid.shape, mu_water)
    ours = float(attenuated_sensitivity(GEOMETRY, grid, 3, mu_grid, mu).sum())

    a, b = GEOMETRY.pairs()
    valid = GEOMETRY.valid()
    pairs = list(zip(a[valid], b[valid], strict=True))
    voxel_lo, voxel_hi = grid.lower_mm[::-1], grid.upper_mm[::-1]
    block_lo, block_hi = mu_grid.lower_mm[::-1], mu_grid.upper_mm[::-1]
    expected = 0.0
    for r1, r2 in itertools.product(range(SMALL.rings), repeat=2):
        if r1 > r2:
            continue
        for i, j in pairs:
            orders = [(i, j)] if r1 == r2 else [(i, j), (j, i)]
            for t1, t2 in orders:
                c1, c2 = SMALL.crystal_id(r1, t1), SMALL.crystal_id(r2, t2)
                p1, p2 = lor_endpoints_mm(SMALL, np.array([c1]), np.array([c2]),
                                          GEOMETRY.doi_mm)
                inside = clip_length(p1[0], p2[0], voxel_lo, voxel_hi)
                if inside > 0:
                    chord = clip_length(p1[0], p2[0], block_lo, block_hi)
                    expected += inside * np.exp(-mu_water * chord)
    assert expected > 0
    assert ours == pytest.approx(expected, rel=1e-5)
