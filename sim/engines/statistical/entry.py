"""Where a photon line enters the crystal ring: the module face it crosses, the crystal of
that face it would reach first, and its angles of incidence.

A photon leaving a point inside the ring along ``d`` leaves the polygon of the modules'
front faces through the face ``m`` with the smallest positive distance
``t_m = (R_in - p . n_m) / (d . n_m)`` over the faces it heads for (``d . n_m > 0``); the
polygon is convex, so that face is the one crossed. On that face the entry point has a
tangential offset ``tau`` (along the direction of growing crystal index) and an axial
position ``z``. The *entry crystal* is the face's crystal column under ``tau`` (clipped to
the module: a point in the gap between two modules belongs to the nearer edge crystal) and
the *virtual ring* under ``z`` (rings counted on beyond the axial ends, so that a photon
entering just past the last ring has ring ``rings`` and can still be detected by a
crystal's end face). The incidence angles are measured in the module's frame: ``alpha``
between the line's transaxial projection and the face normal (positive towards growing
crystal index) and ``beta`` between the line and the transaxial plane (positive towards +z).

This is the coordinate system of :mod:`sim.engines.statistical.response`: the Monte Carlo
calibration and the statistical engine both describe photons by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scanner.geometry import Scanner


@dataclass(frozen=True)
class Entry:
    """Entry of n photon lines into the ring (arrays of shape (n,)).

    Attributes
    ----------
    module : numpy.ndarray of int64
        Module (face) crossed.
    within : numpy.ndarray of int64
        Crystal column of that module under the entry point, 0 .. crystals_per_module - 1.
    ring : numpy.ndarray of int64
        Virtual ring under the entry point (may be < 0 or >= rings beyond the axial ends).
    point_mm : numpy.ndarray
        Entry point (x, y, z), mm, shape (n, 3).
    distance_mm : numpy.ndarray
        Distance from the start point to the entry point, mm.
    alpha_rad, beta_rad : numpy.ndarray
        Transaxial and axial incidence angles, rad.
    """

    module: np.ndarray
    within: np.ndarray
    ring: np.ndarray
    point_mm: np.ndarray
    distance_mm: np.ndarray
    alpha_rad: np.ndarray
    beta_rad: np.ndarray

    def index(self, scanner: Scanner) -> np.ndarray:
        """Transaxial index of the entry crystal, int64."""
        return self.module * scanner.crystals_per_module + self.within

    def subset(self, keep: np.ndarray) -> Entry:
        """The photons selected by ``keep`` (mask or indices)."""
        return Entry(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def virtual_ring(scanner: Scanner, z_mm: np.ndarray) -> np.ndarray:
    """Ring under each axial position, counted on past both ends, int64.

    Inside the axial extent it is the ring whose cell holds ``z`` (an axial gap between
    modules belongs to the ring below it); beyond the ends rings continue at the axial pitch.
    """
    z_rel = np.asarray(z_mm, dtype=float) + scanner.axial_length_mm / 2.0
    cma = scanner.crystals_per_module_axial
    module_mm = cma * scanner.axial_pitch_mm + scanner.axial_module_gap_mm
    module = np.floor(z_rel / module_mm).astype(np.int64)
    row = np.minimum(np.floor((z_rel - module * module_mm) / scanner.axial_pitch_mm), cma - 1)
    inside = module * cma + row.astype(np.int64)
    below = np.floor(z_rel / scanner.axial_pitch_mm).astype(np.int64)
    above = scanner.rings + np.floor((z_rel - scanner.axial_length_mm)
                                     / scanner.axial_pitch_mm).astype(np.int64)
    return np.where(z_rel < 0, below, np.where(z_rel >= scanner.axial_length_mm, above, inside))


def virtual_ring_z_mm(scanner: Scanner, ring: np.ndarray) -> np.ndarray:
    """Axial centre of (virtual) rings, mm: a ring's own centre inside the axial extent,
    continuing at the axial pitch beyond the ends (the inverse of :func:`virtual_ring`)."""
    ring = np.asarray(ring)
    inside = scanner.ring_z_mm[np.clip(ring, 0, scanner.rings - 1)]
    half = scanner.axial_length_mm / 2.0
    below = -half + (ring + 0.5) * scanner.axial_pitch_mm
    above = half + (ring - scanner.rings + 0.5) * scanner.axial_pitch_mm
    return np.where(ring < 0, below, np.where(ring >= scanner.rings, above, inside))


def ring_entry(scanner: Scanner, start_mm: np.ndarray, direction: np.ndarray) -> Entry:
    """Entry of the lines ``start_mm + t direction`` (t > 0) into the ring.

    Parameters
    ----------
    scanner : Scanner
    start_mm : numpy.ndarray
        Start points inside the polygon of the front faces, mm, shape (n, 3).
    direction : numpy.ndarray
        Unit directions, shape (n, 3).
    """
    module, distance = _exit_face(scanner, start_mm, direction)
    normals = _normals(scanner)
    point = start_mm + distance[:, None] * direction
    normal = normals[module]
    tangent = np.stack([-normal[:, 1], normal[:, 0]], axis=1)
    tau = np.einsum("ij,ij->i", point[:, :2], tangent)
    n = scanner.crystals_per_module
    within = np.clip(np.floor(tau / scanner.crystal_pitch_mm + n / 2.0), 0, n - 1)
    along_normal = np.einsum("ij,ij->i", direction[:, :2], normal)
    along_tangent = np.einsum("ij,ij->i", direction[:, :2], tangent)
    return Entry(module.astype(np.int64), within.astype(np.int64),
                 virtual_ring(scanner, point[:, 2]), point, distance,
                 np.arctan2(along_tangent, along_normal),
                 np.arcsin(np.clip(direction[:, 2], -1.0, 1.0)))


def _normals(scanner: Scanner) -> np.ndarray:
    angles = scanner.module_angles_rad
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (M, 2)


def _face_distances(scanner: Scanner, start_xy: np.ndarray, direction_xy: np.ndarray,
                    normals: np.ndarray) -> np.ndarray:
    """Distance along each line to the plane of each of its faces ``normals`` (n, k, 2);
    inf where the line does not head for it."""
    towards = np.einsum("nj,nkj->nk", direction_xy, normals)
    gap = scanner.inner_radius_mm - np.einsum("nj,nkj->nk", start_xy, normals)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(towards > 1e-12, gap / towards, np.inf)


def _exit_face(scanner: Scanner, start_mm: np.ndarray, direction: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Face crossed by each line and the distance to it.

    The exit face is the one with the smallest distance over all faces heading away; it is
    looked for among the three faces around the polar angle where the line leaves the
    polygon's inscribed circle (or passes closest to it, if it misses it). Why three are
    enough: between the circle and the polygon lie one piece per corner, each touching the
    circle only where its two faces do; the part of the line beyond that point up to the
    exit never enters the disk, so it stays in one corner's piece, whose two faces are
    the nearest face to that polar angle and one of its neighbours.
    """
    normals = _normals(scanner)
    m = scanner.modules_per_ring
    xy, d = start_mm[:, :2], direction[:, :2]
    # Leaving the circle of radius R (the faces' apothem): |xy + t d| = R, larger root.
    a = np.einsum("ij,ij->i", d, d)
    b = np.einsum("ij,ij->i", xy, d)
    c = np.einsum("ij,ij->i", xy, xy) - scanner.inner_radius_mm**2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_circle = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
    t_circle = np.where(a > 0, t_circle, 0.0)
    out = xy + t_circle[:, None] * d
    step = 2.0 * np.pi / m
    nearest = np.round((np.arctan2(out[:, 1], out[:, 0]) - scanner.first_module_angle_rad)
                       / step).astype(np.int64)
    candidates = np.mod(nearest[:, None] + np.array([-1, 0, 1])[None, :], m)  # (n, 3)
    t = _face_distances(scanner, xy, d, normals[candidates])
    pick = np.argmin(t, axis=1)
    rows = np.arange(len(xy))
    return candidates[rows, pick], t[rows, pick]


def direction_from_angles(scanner: Scanner, module: np.ndarray, alpha_rad: np.ndarray,
                          beta_rad: np.ndarray) -> np.ndarray:
    """Unit directions with incidence angles ``alpha``, ``beta`` on face ``module``,
    shape (n, 3) (the inverse of :func:`ring_entry`'s angles)."""
    phi = scanner.module_angles_rad[module]
    normal = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    tangent = np.stack([-normal[:, 1], normal[:, 0]], axis=1)
    transaxial = (np.cos(alpha_rad)[:, None] * normal + np.sin(alpha_rad)[:, None] * tangent)
    return np.concatenate([np.cos(beta_rad)[:, None] * transaxial,
                           np.sin(beta_rad)[:, None]], axis=1)


def face_point_mm(scanner: Scanner, module: np.ndarray, tau_mm: np.ndarray,
                  z_mm: np.ndarray) -> np.ndarray:
    """Points on the front face of ``module`` at tangential offset ``tau_mm`` and axial
    position ``z_mm``, mm, shape (n, 3)."""
    phi = scanner.module_angles_rad[module]
    normal = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    tangent = np.stack([-normal[:, 1], normal[:, 0]], axis=1)
    xy = scanner.inner_radius_mm * normal + tau_mm[:, None] * tangent
    return np.concatenate([xy, np.asarray(z_mm, float)[:, None]], axis=1)
