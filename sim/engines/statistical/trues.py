"""Expected true coincidences on every line between two face cells of the ring.

For face cells ``i`` (column, virtual ring) and ``j`` of areas ``A`` (crystal pitch times
axial pitch) joined by a line of length ``L`` that meets their faces at angles
``theta_i``, ``theta_j`` to the normals, the decays whose two photons cross both cells are,
for cells small against ``L``, ``D / (2 pi) G int rho dl`` with the pair's etendue
``G = A cos(theta_i) A cos(theta_j) / L^2``, ``rho`` the decay density (the activity map
normalised to integrate to one, 1/mm^3) and ``D`` the expected decays of the frame: a
decay at a point sends its photon axis through both cells with probability
``Omega / (2 pi)``, and the solid angle ``Omega`` integrated over the line's cross-section
is ``G``. Those photons escape the phantom with probability ``exp(-int mu dl)`` (both
photons together see the whole line) and each is detected with the probability its cell
and incidence angles have in the calibrated response (:mod:`.response`). The sum over
cells is the expected number of true coincidences; line integrals are
:mod:`.projection`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engines.statistical.entry import Entry, virtual_ring_z_mm
from sim.engines.statistical.projection import (
    Tracks,
    oblique_integrals,
    plane_profiles,
    tracks_through,
)
from sim.engines.statistical.response import OUTSIDE_RINGS, DetectorResponse, fold
from sim.scanner.geometry import Scanner


@dataclass(frozen=True)
class ExpectedTrues:
    """Expected true coincidences per line with a non-zero expectation.

    Attributes
    ----------
    tracks : Tracks
    track : numpy.ndarray of int32, shape (n,)
        Track (column pair) of each line.
    ring1, ring2 : numpy.ndarray of int16, shape (n,)
        Virtual rings of the cells of columns ``tracks.i`` and ``tracks.j``.
    expected : numpy.ndarray of float64, shape (n,)
        Expected detected trues per expected decay of the frame.
    """

    tracks: Tracks
    track: np.ndarray
    ring1: np.ndarray
    ring2: np.ndarray
    expected: np.ndarray

    @property
    def per_decay(self) -> float:
        """Expected detected trues per decay."""
        return float(self.expected.sum())


def support_box(image_zyx: np.ndarray, voxel_size_mm: np.ndarray, origin_mm: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Corners (x, y, z) of the box around the non-zero voxels of an image, mm."""
    nonzero = np.argwhere(image_zyx != 0)
    if nonzero.size == 0:
        raise ValueError("the image is zero everywhere")
    lo = origin_mm + (nonzero.min(axis=0) - 0.5) * voxel_size_mm
    hi = origin_mm + (nonzero.max(axis=0) + 0.5) * voxel_size_mm
    return lo[::-1], hi[::-1]


def expected_trues(activity_zyx: np.ndarray, mu_per_mm_zyx: np.ndarray,
                   voxel_size_mm: np.ndarray, origin_mm: np.ndarray,
                   response: DetectorResponse, tracks_per_batch: int = 512) -> ExpectedTrues:
    """Expected detected trues per decay on every line between face cells.

    Parameters
    ----------
    activity_zyx : numpy.ndarray
        Activity map, any non-negative scale, shape (nz, ny, nx).
    mu_per_mm_zyx : numpy.ndarray
        Attenuation at 511 keV, 1/mm, same shape.
    voxel_size_mm, origin_mm : numpy.ndarray
        (z, y, x); ``origin_mm`` is the centre of voxel (0, 0, 0).
    response : DetectorResponse
    tracks_per_batch : int
        Column pairs processed together (memory).
    """
    scanner = response.scanner
    voxel_size_mm = np.asarray(voxel_size_mm, float)
    origin_mm = np.asarray(origin_mm, float)
    activity = np.asarray(activity_zyx, np.float64)
    density = activity / (activity.sum() * np.prod(voxel_size_mm))
    lo, hi = support_box(activity, voxel_size_mm, origin_mm)
    mu_lo, mu_hi = (lo, hi) if not np.any(mu_per_mm_zyx) else support_box(
        np.asarray(mu_per_mm_zyx), voxel_size_mm, origin_mm)
    # Lines cross the activity; their samples cover the attenuating material too.
    tracks = tracks_through(scanner, lo[:2], hi[:2], cover_lo_xy_mm=np.minimum(lo, mu_lo)[:2],
                            cover_hi_xy_mm=np.maximum(hi, mu_hi)[:2])
    rings = np.arange(-OUTSIDE_RINGS, scanner.rings + OUTSIDE_RINGS)
    z = virtual_ring_z_mm(scanner, rings)
    r1, r2 = (a.ravel() for a in np.meshgrid(rings, rings, indexing="ij"))
    z1, z2 = (a.ravel() for a in np.meshgrid(z, z, indexing="ij"))
    keep_pairs = _axially_possible(z1, z2, tracks, lo[2], hi[2])  # the activity's z extent
    r1, r2, z1, z2 = r1[keep_pairs], r2[keep_pairs], z1[keep_pairs], z2[keep_pairs]
    parts = []
    for first in range(0, tracks.i.size, tracks_per_batch):
        sub = Tracks(*(getattr(tracks, f)[first:first + tracks_per_batch]
                       for f in ("i", "j", "start_xy", "end_xy")), tracks.u)
        emission = oblique_integrals(
            plane_profiles(density.astype(np.float32), voxel_size_mm, origin_mm, sub),
            origin_mm[0], voxel_size_mm[0], sub, (z1 + z2) / 2, z2 - z1)
        track, pair = np.nonzero(emission > 0)
        if track.size == 0:
            continue
        attenuation = oblique_integrals(
            plane_profiles(np.asarray(mu_per_mm_zyx, np.float32), voxel_size_mm, origin_mm,
                           sub), origin_mm[0], voxel_size_mm[0], sub, (z1 + z2) / 2,
            z2 - z1)[track, pair]
        value = (emission[track, pair] * np.exp(-attenuation)
                 * _etendue_and_detection(scanner, response, sub, track, r1[pair], r2[pair],
                                          z1[pair], z2[pair]) / (2.0 * np.pi))
        parts.append((track + first, r1[pair], r2[pair], value))
    if not parts:
        raise ValueError("no line between two face cells crosses the activity")
    track, ring1, ring2, value = (np.concatenate(x) for x in zip(*parts, strict=True))
    return ExpectedTrues(tracks, track.astype(np.int32), ring1.astype(np.int16),
                         ring2.astype(np.int16), value)


def _axially_possible(z1: np.ndarray, z2: np.ndarray, tracks: Tracks, z_lo: float,
                      z_hi: float) -> np.ndarray:
    """Ring pairs whose lines can pass the axial extent ``[z_lo, z_hi]`` on the tracks'
    sampled stretch."""
    u0, u1 = tracks.u[0], tracks.u[-1]
    za, zb = z1 + (z2 - z1) * u0, z1 + (z2 - z1) * u1
    return (np.maximum(za, zb) >= z_lo) & (np.minimum(za, zb) <= z_hi)


def _etendue_and_detection(scanner: Scanner, response: DetectorResponse, tracks: Tracks,
                           track: np.ndarray, ring1: np.ndarray, ring2: np.ndarray,
                           z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """``G p_i p_j`` of each line (mm^2)."""
    a = np.concatenate([tracks.start_xy[track], z1[:, None]], axis=1)
    b = np.concatenate([tracks.end_xy[track], z2[:, None]], axis=1)
    d = b - a
    length = np.linalg.norm(d, axis=1)
    d /= length[:, None]
    area = scanner.crystal_pitch_mm * scanner.axial_pitch_mm
    cpm = scanner.crystals_per_module
    etendue = np.ones(track.size) * area**2 / length**2
    for column, ring, point, towards in ((tracks.i[track], ring1, a, -d),
                                         (tracks.j[track], ring2, b, d)):
        module, within = np.divmod(column, cpm)
        phi = scanner.module_angles_rad[module]
        normal = np.stack([np.cos(phi), np.sin(phi)], axis=1)
        tangent = np.stack([-normal[:, 1], normal[:, 0]], axis=1)
        along_normal = np.einsum("ij,ij->i", towards[:, :2], normal)
        along_tangent = np.einsum("ij,ij->i", towards[:, :2], tangent)
        etendue *= np.abs(along_normal)
        entry = Entry(module, within, ring.astype(np.int64), point, np.zeros(track.size),
                      np.arctan2(along_tangent, along_normal),
                      np.arcsin(np.clip(towards[:, 2], -1.0, 1.0)))
        etendue *= response.probability(fold(scanner, response.bins, entry))
    return etendue
