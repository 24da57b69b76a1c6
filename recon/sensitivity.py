"""Sensitivity images of fully 3D list-mode reconstruction: the back projection of every LOR
the scanner can record, with its attenuation factor when attenuation is corrected.

LORs: every pair of crystals in rings ``r1 <= r2`` with ``r2 - r1 <= max_ring_difference``
whose transaxial indices form a valid sinogram bin (:mod:`recon.sinogram`); within one
ring each unordered pair once, across two rings each ordered pair (``a`` in ``r1``, ``b`` in
``r2`` and the reverse are different LORs). LORs that miss the image box are skipped.

Two ways to compute it:

* :func:`geometric_sensitivity` (no attenuation) uses the axial shift invariance of the
  scanner: the LORs of rings ``(r, r + d)`` are those of ``(0, d)`` moved by ``r`` ring
  pitches, which is a whole number of planes when the image planes are the rebinning planes
  (half a ring pitch, :func:`recon.grid.recon_grid`). It back-projects the ``max_ring_difference
  + 1`` ring pairs ``(0, d)`` once onto planes covering the whole scanner and sums shifted
  copies: exact, and ``rings`` times cheaper than going through every ring pair. It depends
  only on the scanner and the grid, so the stage caches it under ``results/``.
* :func:`attenuated_sensitivity` goes through every ring pair, because attenuation breaks the
  shift invariance: each LOR's ``exp(-int mu)`` is projected through the phantom's mu map and
  back-projected with the LOR. No approximation; its cost is one forward projection on the mu
  grid and one back projection per LOR crossing the image: 78 s on 2 CPU cores for the
  default tube grid with ``max_ring_difference`` 16 (the geometric one: 1.5 s), once per
  phantom.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from recon.geometry import lor_endpoints_mm
from recon.grid import ImageGrid, box_chord_mm
from recon.projector import Projector
from recon.sinogram import SinogramGeometry

log = logging.getLogger(__name__)


def transaxial_pairs(geometry: SinogramGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid transaxial crystal pairs: ``(a, b, unordered)``, each pair in both orders, with
    ``unordered`` True for the ``a < b`` half (the pairs of one ring)."""
    a, b = geometry.pairs()
    valid = geometry.valid()
    a, b = a[valid], b[valid]
    both_a, both_b = np.concatenate([a, b]), np.concatenate([b, a])
    return both_a, both_b, both_a < both_b


def box_hit(p1: np.ndarray, p2: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """True for segments p1-p2 (x, y, z) that pass through the grid box."""
    return box_chord_mm(p1, p2, grid) > 0


def ring_pair_lors(geometry: SinogramGeometry, ring1: int, ring2: int, grid: ImageGrid
                   ) -> tuple[np.ndarray, np.ndarray]:
    """End points (x, y, z) of the recordable LORs between two rings that cross the grid box."""
    scanner = geometry.scanner
    a, b, unordered = transaxial_pairs(geometry)
    if ring1 == ring2:
        a, b = a[unordered], b[unordered]
    c1 = scanner.crystal_id(np.full_like(a, ring1), a)
    c2 = scanner.crystal_id(np.full_like(b, ring2), b)
    p1, p2 = lor_endpoints_mm(scanner, c1, c2, geometry.doi_mm)
    hit = box_hit(p1, p2, grid)
    return p1[hit], p2[hit]


def _ring_pairs(rings: int, max_ring_difference: int) -> Iterator[tuple[int, int]]:
    for r1 in range(rings):
        for r2 in range(r1, min(rings, r1 + max_ring_difference + 1)):
            yield r1, r2


def geometric_sensitivity(geometry: SinogramGeometry, grid: ImageGrid, max_ring_difference: int,
                          device: torch.device | str = "cpu", chunk: int = 20000
                          ) -> torch.Tensor:
    """Sensitivity without attenuation by axial shifts (module docstring), (z, y, x).

    Raises
    ------
    ValueError
        When the grid's planes are not rebinning planes (z voxel of half a ring pitch, planes
        on ring centres and half-way between).
    """
    scanner = geometry.scanner
    half_pitch = scanner.axial_pitch_mm / 2.0
    z0 = float(scanner.ring_z_mm[0])
    offset = (grid.origin_mm[0] - z0) / half_pitch
    if (scanner.axial_module_gap_mm or abs(grid.voxel_size_mm[0] - half_pitch) > 1e-9
            or abs(offset - round(offset)) > 1e-6 or round(offset) < 0
            or round(offset) + grid.shape[0] > 2 * scanner.rings - 1):
        raise ValueError("the shift-invariant sensitivity needs image planes on the rebinning "
                         f"planes (dz = {half_pitch} mm starting on a ring centre or half-way)")
    n_full = 2 * scanner.rings - 1
    full = grid.with_planes(n_full, half_pitch, z0)
    projector = Projector(full, device=device, chunk=chunk)
    total = torch.zeros(full.shape, device=device, dtype=torch.float64)
    for d in tqdm(range(min(max_ring_difference, scanner.rings - 1) + 1), desc="sensitivity",
                  disable=None, leave=False):
        p1, p2 = ring_pair_lors(geometry, 0, d, full)
        block = projector.back(torch.ones(len(p1)), p1, p2).double()
        # Rings (r, r + d) are (0, d) moved by r pitches = 2 r planes; (0, d) fills planes
        # 0 .. 2 d only, so each shifted copy is added on that slab.
        slab = block[: 2 * d + 1]
        for r in range(scanner.rings - d):
            total[2 * r : 2 * r + 2 * d + 1] += slab
    start = int(round(offset))
    return total[start : start + grid.shape[0]].to(torch.float32)


def attenuated_sensitivity(geometry: SinogramGeometry, grid: ImageGrid,
                           max_ring_difference: int, mu_grid: ImageGrid,
                           mu_per_mm: torch.Tensor, device: torch.device | str = "cpu",
                           chunk: int = 20000) -> torch.Tensor:
    """Sensitivity with each LOR weighted by its attenuation factor, (z, y, x)."""
    scanner = geometry.scanner
    back = Projector(grid, device=device, chunk=chunk)
    through_mu = Projector(mu_grid, device=device, chunk=chunk)
    total = torch.zeros(grid.shape, device=device, dtype=torch.float64)
    z_lo, z_hi = grid.lower_mm[0], grid.upper_mm[0]
    ring_z = scanner.ring_z_mm
    pairs = [(r1, r2) for r1, r2 in _ring_pairs(scanner.rings, max_ring_difference)
             if not (max(ring_z[r1], ring_z[r2]) < z_lo or min(ring_z[r1], ring_z[r2]) > z_hi)]
    for r1, r2 in tqdm(pairs, desc="attenuated sensitivity", disable=None, leave=False):
        p1, p2 = ring_pair_lors(geometry, r1, r2, grid)
        if len(p1) == 0:
            continue
        factor = torch.exp(-through_mu.forward(mu_per_mm, p1, p2))
        total += back.back(factor, p1, p2).double()
    return total.to(torch.float32)
