"""Where true coincidences can come from: every line between two face cells of the ring
whose tube can hold activity, with an upper bound of its expected trues.

For face cells ``i`` (column, virtual ring) and ``j`` of areas ``A`` (crystal pitch times
axial pitch) joined by a line of length ``L`` that meets their faces at angles
``theta_i``, ``theta_j`` to the normals, the decays whose two photons cross both cells are,
for cells small against ``L``, ``D / (2 pi) G <int rho dl>`` with the pair's etendue
``G = A cos(theta_i) A cos(theta_j) / L^2``, ``rho`` the decay density (the activity map
normalised to integrate to one, 1/mm^3), ``D`` the expected decays of the frame and
``<int rho dl>`` the line integral averaged over the pair's tube of lines: a decay at a
point sends its photon axis through both cells with probability ``Omega / (2 pi)``, and the
solid angle ``Omega`` integrated over the line's cross-section is ``G``. Those photons
escape the phantom with probability ``exp(-int mu dl)`` (both photons together see the whole
line) and each is detected with the probability its cell and incidence angles have in the
calibrated response (:mod:`.response`).

The expected pairs of each line (:attr:`ExpectedTrues.pairs`, per decay, before detection)
take the tube average over the lines joining points spread uniformly over the two cells:
across the line, a product Gauss-Legendre rule over the two ends' positions along their
faces (:func:`cell_nodes`, five nodes each), every node an exact line through the voxelised
density (read at the voxel holding each point, which is exact for the Monte Carlo's
voxelised source); along z, the density blurred by the axial section half-way
(:func:`tube_kernel`, a triangle of half-width half the axial pitch). The rule follows the
tube's cross-section wherever along the line a source lies (a triangle half-way, a
trapezoid nearer a cell). Against the exact average (candidates drawn from the envelopes
and kept by the activity) the lines grouped by their distance from a 3.2 mm line source on
a 2 mm grid agree within about 1 %; a density blurred by the cross-section and read on the
voxel grid, used before, spread such a source over neighbouring lines (the groups holding
most counts off by up to 8 %, the outermost several-fold). Along z the blur on the voxel
grid remains: a source shorter than a few axial pitches is spread the same way. The rates
of :mod:`.expectation` use it; the events are placed within the tube by the activity
itself (below, and :mod:`.line_trues`).

An upper bound of the line integral is kept as well: bounding ``int rho dl`` by ``rho_max
Lambda`` (``Lambda`` the length of the line's own stretch that can meet activity: the part
of its track over the activity's footprint seen along z, cut to the activity's axial
extent, both grown by a cell's half width and a voxel, so that any line of the pair's tube
meets activity only there) and
leaving the detection out gives each line an *envelope* ``D / (2 pi) G exp(-int mu dl)
rho_max Lambda``. Drawing a Poisson number of candidates from the envelopes, each with its
axis through uniform points of the two cells and a point uniform on the stretch, and keeping
a candidate with probability ``rho(x) / rho_max`` and then each photon with its detection
probability thins that Poisson process into exactly the trues (:mod:`.events`), whatever
the size of the structures in the image: the tube average is made by the sampling itself.
Only the attenuation (a smooth factor) is taken on the central line, and lines whose tube
cannot hold activity (the central line more than a cell's half width and a voxel from
every active voxel) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from sim.engines.statistical.entry import virtual_ring_z_mm
from sim.engines.statistical.projection import (
    Tracks,
    oblique_integrals,
    plane_profiles,
    tracks_through,
)
from sim.engines.statistical.response import OUTSIDE_RINGS
from sim.scanner.geometry import Scanner

#: Nodes over each face cell's width in a line's tube average (:func:`cell_nodes`).
CELL_NODES = 5


@dataclass(frozen=True)
class ExpectedTrues:
    """Candidate lines of true coincidences and their envelopes.

    Attributes
    ----------
    tracks : Tracks
    track : numpy.ndarray of int32, shape (n,)
        Track (column pair) of each line.
    ring1, ring2 : numpy.ndarray of int16, shape (n,)
        Virtual rings of the cells of columns ``tracks.i`` and ``tracks.j``.
    envelope : numpy.ndarray of float64, shape (n,)
        Upper bound of the expected trues reaching the two cells per expected decay of the
        frame (before detection).
    pairs : numpy.ndarray of float64, shape (n,)
        Expected photon pairs crossing both cells per decay (before detection): the tube
        average of the density's line integral (:func:`_tube_integrals`), attenuated.
    density_max : float
        Largest decay density, 1/mm^3 (what a candidate's density is compared with).
    track_lo, track_hi : numpy.ndarray of float64, shape (P,)
        Stretch of each track (fractions of the way from cell i to cell j) over the
        activity's footprint, grown (:func:`_reach`).
    z_lo_mm, z_hi_mm : float
        Axial extent of the grown activity, mm.
    """

    tracks: Tracks
    track: np.ndarray
    ring1: np.ndarray
    ring2: np.ndarray
    envelope: np.ndarray
    pairs: np.ndarray
    density_max: float
    track_lo: np.ndarray
    track_hi: np.ndarray
    z_lo_mm: float
    z_hi_mm: float

    def stretch(self, line: np.ndarray, scanner: Scanner) -> tuple[np.ndarray, np.ndarray]:
        """Where on lines ``line`` the candidates' points are drawn: fractions (lo, hi) of
        the way from cell i to cell j (:func:`line_stretch`)."""
        track = self.track[line]
        return line_stretch(self.track_lo[track], self.track_hi[track],
                            virtual_ring_z_mm(scanner, self.ring1[line]),
                            virtual_ring_z_mm(scanner, self.ring2[line]),
                            self.z_lo_mm, self.z_hi_mm)


def line_stretch(track_lo: np.ndarray, track_hi: np.ndarray, z1_mm: np.ndarray,
                 z2_mm: np.ndarray, z_lo_mm: float, z_hi_mm: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The part of each line's track stretch ``[track_lo, track_hi]`` (fractions of the way
    from its end at ``z1_mm`` to its end at ``z2_mm``) whose z lies in ``[z_lo, z_hi]``;
    empty where ``hi <= lo``."""
    dz = np.asarray(z2_mm, float) - z1_mm
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (z_lo_mm - z1_mm) / dz
        b = (z_hi_mm - z1_mm) / dz
    flat = dz == 0
    inside = (z1_mm >= z_lo_mm) & (z1_mm <= z_hi_mm)
    lo = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(a, b))
    hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(a, b))
    return np.maximum(track_lo, lo), np.minimum(track_hi, hi)


def tube_kernel(width_mm: float, voxel_mm: float) -> np.ndarray:
    """Distribution over voxels of ``voxel_mm`` (centred, odd length) of the offset
    ``(p + q) / 2`` of a line half-way between two cells, ``p`` and ``q`` uniform over the
    cell width ``width_mm``: a triangle of half-width ``h = width_mm / 2``, integrated
    exactly over each voxel with its distribution function."""
    h = width_mm / 2
    n = int(np.ceil(h / voxel_mm + 0.5))

    def cdf(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, -h, h)
        return np.where(x < 0, (x + h) ** 2 / (2 * h * h), 1 - (h - x) ** 2 / (2 * h * h))

    centres = np.arange(-n, n + 1) * voxel_mm
    return cdf(centres + voxel_mm / 2) - cdf(centres - voxel_mm / 2)


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
                   voxel_size_mm: np.ndarray, origin_mm: np.ndarray, scanner: Scanner,
                   tracks_per_batch: int = 512) -> ExpectedTrues:
    """Candidate lines of true coincidences and their envelopes per decay.

    Parameters
    ----------
    activity_zyx : numpy.ndarray
        Activity map, any non-negative scale, shape (nz, ny, nx).
    mu_per_mm_zyx : numpy.ndarray
        Attenuation at 511 keV, 1/mm, same shape.
    voxel_size_mm, origin_mm : numpy.ndarray
        (z, y, x); ``origin_mm`` is the centre of voxel (0, 0, 0).
    scanner : Scanner
    tracks_per_batch : int
        Column pairs processed together (memory).
    """
    voxel_size_mm = np.asarray(voxel_size_mm, float)
    origin_mm = np.asarray(origin_mm, float)
    activity = np.asarray(activity_zyx, np.float64)
    if not np.all(np.isfinite(activity)) or np.any(activity < 0) or activity.sum() <= 0:
        raise ValueError("activity map must be finite, non-negative and not all zero")
    density = activity / (activity.sum() * np.prod(voxel_size_mm))
    # The tube's axial cross-section as a blur along z (on the planes the lines cross), on
    # the grid grown by the kernel's reach: activity in an end plane is blurred beyond the
    # grid, and cutting that off lost up to a quarter of the plane's pairs.
    kernel = tube_kernel(scanner.axial_pitch_mm, voxel_size_mm[0])
    grow_z = kernel.size // 2
    along_z = scipy.ndimage.convolve1d(
        np.pad(density, [(grow_z, grow_z), (0, 0), (0, 0)]), kernel, axis=0,
        mode="constant").astype(np.float32)
    along_z_origin_mm = origin_mm - np.array([grow_z * voxel_size_mm[0], 0.0, 0.0])
    mu = np.asarray(mu_per_mm_zyx, np.float32)
    reach, reach_origin_mm = _reach(activity > 0, scanner, voxel_size_mm, origin_mm)
    lo, hi = support_box(reach, voxel_size_mm, reach_origin_mm)
    mu_lo, mu_hi = (lo, hi) if not np.any(mu) else support_box(mu, voxel_size_mm, origin_mm)
    # Lines cross the activity; their stretch covers the attenuating material too.
    tracks = tracks_through(scanner, lo[:2], hi[:2], cover_lo_xy_mm=np.minimum(lo, mu_lo)[:2],
                            cover_hi_xy_mm=np.maximum(hi, mu_hi)[:2])
    du = tracks.u[1] - tracks.u[0] if tracks.u.size > 1 else 0.0
    # Each track's stretch over the grown activity's footprint (its maximum along z).
    footprint = plane_profiles(reach.max(axis=0, keepdims=True), voxel_size_mm,
                               reach_origin_mm, tracks, nearest=True)[0] > 0  # (P, K)
    crosses = footprint.any(axis=1)
    tracks = tracks.subset(crosses)
    footprint = footprint[crosses]
    k = np.arange(tracks.u.size)
    track_lo = tracks.u[np.where(footprint, k, k.size).min(axis=1)] - du / 2
    track_hi = tracks.u[np.where(footprint, k, -1).max(axis=1)] + du / 2
    rings = np.arange(-OUTSIDE_RINGS, scanner.rings + OUTSIDE_RINGS)
    z = virtual_ring_z_mm(scanner, rings)
    r1, r2 = (a.ravel() for a in np.meshgrid(rings, rings, indexing="ij"))
    z1, z2 = (a.ravel() for a in np.meshgrid(z, z, indexing="ij"))
    keep_pairs = _axially_possible(z1, z2, tracks, lo[2], hi[2])
    r1, r2, z1, z2 = r1[keep_pairs], r2[keep_pairs], z1[keep_pairs], z2[keep_pairs]
    zc, dz = (z1 + z2) / 2, z2 - z1
    parts = []
    for first in range(0, tracks.i.size, tracks_per_batch):
        sub = tracks.subset(slice(first, first + tracks_per_batch))
        near = oblique_integrals(
            plane_profiles(reach, voxel_size_mm, reach_origin_mm, sub, nearest=True),
            reach_origin_mm[0], voxel_size_mm[0], sub, zc, dz)
        track, pair = np.nonzero(near > 0)
        if track.size == 0:
            continue
        lo_u, hi_u = line_stretch(track_lo[first + track], track_hi[first + track],
                                  z1[pair], z2[pair], lo[2], hi[2])
        useful = hi_u > lo_u
        track, pair, lo_u, hi_u = track[useful], pair[useful], lo_u[useful], hi_u[useful]
        attenuation = oblique_integrals(
            plane_profiles(mu, voxel_size_mm, origin_mm, sub, nearest=True),
            origin_mm[0], voxel_size_mm[0], sub, zc, dz)[track, pair]
        integral = _tube_integrals(along_z, voxel_size_mm, along_z_origin_mm, sub, scanner,
                                   zc, dz)[track, pair]
        length = np.sqrt(sub.length_xy_mm[track] ** 2 + dz[pair] ** 2)
        geometric = (np.exp(-attenuation) * etendue(sub, track, z1[pair], z2[pair], scanner)
                     / (2.0 * np.pi))
        parts.append((track + first, r1[pair], r2[pair],
                      geometric * density.max() * (hi_u - lo_u) * length,
                      geometric * np.maximum(integral, 0.0)))
    if not parts:
        raise ValueError("no line between two face cells crosses the activity")
    track, ring1, ring2, value, pairs = (np.concatenate(x) for x in zip(*parts, strict=True))
    return ExpectedTrues(tracks, track.astype(np.int32), ring1.astype(np.int16),
                         ring2.astype(np.int16), value, pairs, float(density.max()), track_lo,
                         track_hi, float(lo[2]), float(hi[2]))


def cell_nodes(n: int = CELL_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes over a face cell's width (fractions of the crystal pitch, in
    ``[-1/2, 1/2]``) and their weights (summing to one), (n,) each."""
    x, w = np.polynomial.legendre.leggauss(n)
    return x / 2.0, w / w.sum()


def _tube_integrals(along_z: np.ndarray, voxel_size_mm: np.ndarray, origin_mm: np.ndarray,
                    tracks: Tracks, scanner: Scanner, zc_mm: np.ndarray, dz_mm: np.ndarray
                    ) -> np.ndarray:
    """Line integrals of the density averaged over each line's tube, (P, R).

    The tube's lines join points spread uniformly over the two face cells, so the average
    is the product Gauss-Legendre rule (:func:`cell_nodes`) over the two ends' positions
    along their faces, each node an exact line between its two points, read at the voxel
    holding each point of the density already blurred by the tube's axial section
    (``along_z``). The voxelised density is exact at any point, and the rule holds for
    every point of the line, wherever the tube's cross-section is (a triangle half-way
    between the cells, a trapezoid nearer one of them). The node lines share their sample
    fractions and the z of each fraction, so the integral is linear in their profiles: the
    profiles are summed with the nodes' weights (times each node line's transaxial length
    over the central one's) and integrated once.
    """
    phi_i, phi_j = (scanner.module_angles_rad[c // scanner.crystals_per_module]
                    for c in (tracks.i, tracks.j))
    tangent_i = np.stack([-np.sin(phi_i), np.cos(phi_i)], axis=1) * scanner.crystal_pitch_mm
    tangent_j = np.stack([-np.sin(phi_j), np.cos(phi_j)], axis=1) * scanner.crystal_pitch_mm
    nodes, weights = cell_nodes()
    central_mm = tracks.length_xy_mm
    profiles = None
    for p, wp in zip(nodes, weights, strict=True):
        for q, wq in zip(nodes, weights, strict=True):
            moved = Tracks(tracks.i, tracks.j, tracks.start_xy + p * tangent_i,
                           tracks.end_xy + q * tangent_j, tracks.u)
            weight = (wp * wq * moved.length_xy_mm / central_mm).astype(np.float32)
            part = plane_profiles(along_z, voxel_size_mm, origin_mm, moved, nearest=True)
            part *= weight[None, :, None]
            profiles = part if profiles is None else profiles + part
    return oblique_integrals(profiles, origin_mm[0], voxel_size_mm[0], tracks, zc_mm, dz_mm)


def _reach(active: np.ndarray, scanner: Scanner, voxel_size_mm: np.ndarray,
           origin_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The active voxels grown by a cell's half width and one voxel each way (on a grid
    padded as much, whose origin is returned with it): a line whose cells' tube holds
    activity has its central line in here."""
    grow = np.array([int(np.ceil(half / size)) + 1 for half, size in zip(
        (scanner.axial_pitch_mm / 2, scanner.crystal_pitch_mm / 2,
         scanner.crystal_pitch_mm / 2), voxel_size_mm, strict=True)])
    structure = np.ones(2 * grow + 1, bool)
    grown = scipy.ndimage.binary_dilation(np.pad(active, [(g, g) for g in grow]), structure)
    return grown.astype(np.float32), origin_mm - grow * voxel_size_mm


def _axially_possible(z1: np.ndarray, z2: np.ndarray, tracks: Tracks, z_lo: float,
                      z_hi: float) -> np.ndarray:
    """Ring pairs whose lines can pass the axial extent ``[z_lo, z_hi]`` on the tracks'
    sampled stretch."""
    u0, u1 = tracks.u[0], tracks.u[-1]
    za, zb = z1 + (z2 - z1) * u0, z1 + (z2 - z1) * u1
    return (np.maximum(za, zb) >= z_lo) & (np.minimum(za, zb) <= z_hi)


def etendue(tracks: Tracks, track: np.ndarray, z1: np.ndarray, z2: np.ndarray,
             scanner: Scanner) -> np.ndarray:
    """``G`` of each line, mm^2: ``A^2 |d . n_i| |d . n_j| / L^4`` with ``d`` the line's
    vector (its transaxial part, hence the products with the faces' normals, is the
    track's) and ``L`` its length."""
    d_xy = tracks.end_xy - tracks.start_xy
    across = np.ones(tracks.i.size)
    for column in (tracks.i, tracks.j):
        phi = scanner.module_angles_rad[column // scanner.crystals_per_module]
        across *= np.abs(d_xy[:, 0] * np.cos(phi) + d_xy[:, 1] * np.sin(phi))
    length_sq = np.einsum("ij,ij->i", d_xy, d_xy)[track] + (z2 - z1) ** 2
    area = scanner.crystal_pitch_mm * scanner.axial_pitch_mm
    return area**2 * across[track] / length_sq**2
