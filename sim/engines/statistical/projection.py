"""Line integrals of a voxel image along every line between two crystal-face cells of the
ring: the expected-value core of the statistical simulation.

The lines are those between the centres of two *face cells* (a crystal column's share of a
module's front face, in one virtual ring, :mod:`sim.engines.statistical.entry`): a
transaxial pair of columns ``(i, j)`` and a ring pair ``(r1, r2)``. Only the transaxial
pairs whose line passes the phantom's bounding circle are kept.

Every line of a transaxial pair has the same transaxial track; it is sampled at fixed
fractions ``u_k`` of the way from column i's face to column j's (the same fractions for
every pair, covering the phantom's box). The image is first resampled on those tracks, plane
by plane (bilinear in x, y): ``L[z, p, k]``. A line between rings at ``z1`` and ``z2`` meets
sample ``k`` at ``z = zc + dz (u_k - 1/2)`` with ``zc = (z1 + z2) / 2`` and ``dz = z2 - z1``,
so for one ``dz`` the integrals over all ``zc`` are sums over ``k`` of the plane profiles
shifted by ``dz (u_k - 1/2)``. A shift with linear interpolation between planes is, along
the plane axis, a circular convolution, which the discrete Fourier transform turns into a
product: ``I_hat[w, p] = sum_k L_hat[w, p, k] H[w, k]`` with
``H = exp(-i w n_k) ((1 - f_k) + f_k exp(-i w))`` for the shift ``n_k + f_k`` planes; for all
``dz`` at once this is one batched matrix product. The planes are padded so that no shift
wraps. The result equals trilinear interpolation of the image sampled along each line, at
a cost of a few matrix products instead of one gather per sample and line (tens of millions
of lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from sim.scanner.geometry import Scanner

#: Spacing of the samples along the longest track, mm.
STEP_MM = 1.0
#: Axial differences transformed together (memory: frequencies x tracks x this x 8 bytes).
SHIFTS_PER_PRODUCT = 16


@dataclass(frozen=True)
class Tracks:
    """Transaxial tracks of the column pairs that cross the phantom.

    Attributes
    ----------
    i, j : numpy.ndarray of int64, shape (P,)
        Columns (transaxial crystal indices, i < j).
    start_xy, end_xy : numpy.ndarray, shape (P, 2)
        Face-cell centres of columns i and j, mm.
    u : numpy.ndarray, shape (K,)
        Fractions of the way from i to j where the tracks are sampled.
    """

    i: np.ndarray
    j: np.ndarray
    start_xy: np.ndarray
    end_xy: np.ndarray
    u: np.ndarray

    @property
    def length_xy_mm(self) -> np.ndarray:
        return np.linalg.norm(self.end_xy - self.start_xy, axis=1)

    def shifted(self, offset_mm: float | np.ndarray) -> Tracks:
        """The tracks moved sideways by ``offset_mm`` (to the left of i -> j; one value, or
        one per track), same fractions."""
        d = self.end_xy - self.start_xy
        side = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.linalg.norm(d, axis=1)[:, None]
        offset = np.asarray(offset_mm, float).reshape(-1, 1)
        return Tracks(self.i, self.j, self.start_xy + offset * side,
                      self.end_xy + offset * side, self.u)

    def subset(self, keep: slice | np.ndarray) -> Tracks:
        """The tracks selected by ``keep``, same fractions."""
        return Tracks(self.i[keep], self.j[keep], self.start_xy[keep], self.end_xy[keep],
                      self.u)

    def points_xy(self) -> np.ndarray:
        """Sample points, mm, shape (P, K, 2)."""
        return (self.start_xy[:, None, :]
                + self.u[None, :, None] * (self.end_xy - self.start_xy)[:, None, :])


def face_centres_xy(scanner: Scanner) -> np.ndarray:
    """Centre of every column's face cell (x, y), mm, shape (crystals_per_ring, 2)."""
    column = np.arange(scanner.crystals_per_ring)
    module, within = np.divmod(column, scanner.crystals_per_module)
    phi = scanner.module_angles_rad[module]
    tau = (within - (scanner.crystals_per_module - 1) / 2.0) * scanner.crystal_pitch_mm
    return np.stack([scanner.inner_radius_mm * np.cos(phi) - tau * np.sin(phi),
                     scanner.inner_radius_mm * np.sin(phi) + tau * np.cos(phi)], axis=1)


def _circle(lo_xy_mm: np.ndarray, hi_xy_mm: np.ndarray) -> tuple[np.ndarray, float]:
    mid = (np.asarray(lo_xy_mm, float) + np.asarray(hi_xy_mm, float)) / 2.0
    return mid, float(np.linalg.norm(np.asarray(hi_xy_mm, float) - mid))


def _distance_to_line(point: np.ndarray, a: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.abs((a[:, 0] - point[0]) * d[:, 1] - (a[:, 1] - point[1]) * d[:, 0]) / np.linalg.norm(
        d, axis=1)


def tracks_through(scanner: Scanner, lo_xy_mm: np.ndarray, hi_xy_mm: np.ndarray,
                   step_mm: float = STEP_MM, cover_lo_xy_mm: np.ndarray | None = None,
                   cover_hi_xy_mm: np.ndarray | None = None) -> Tracks:
    """Column pairs whose track passes the circle around the box ``[lo, hi]`` (x, y), with
    sample fractions at most ``step_mm`` apart covering, on every kept track, the circle
    around the box ``[cover_lo, cover_hi]`` (default: the same box; an attenuation map can
    reach beyond the activity)."""
    centres = face_centres_xy(scanner)
    i, j = np.triu_indices(scanner.crystals_per_ring, k=1)
    a, b = centres[i], centres[j]
    mid, radius = _circle(lo_xy_mm, hi_xy_mm)
    keep = _distance_to_line(mid, a, b - a) < radius
    i, j, a, b = i[keep], j[keep], a[keep], b[keep]
    d = b - a
    length = np.linalg.norm(d, axis=1)
    if cover_lo_xy_mm is not None:
        mid, radius = _circle(cover_lo_xy_mm, cover_hi_xy_mm)
    distance = _distance_to_line(mid, a, d)
    # Fraction of the way to the foot of the perpendicular from the centre, and the circle's
    # half chord: every kept track is inside the circle for u in [c - h, c + h] at most.
    c = np.einsum("ij,ij->i", mid - a, d) / length**2
    h = np.sqrt(np.maximum(radius**2 - distance**2, 0.0)) / length
    crossing = distance < radius
    u_lo, u_hi = float((c - h)[crossing].min()), float((c + h)[crossing].max())
    n = int(np.ceil((u_hi - u_lo) * length.max() / step_mm))
    u = u_lo + (np.arange(n) + 0.5) * (u_hi - u_lo) / n
    return Tracks(i.astype(np.int64), j.astype(np.int64), a, b, u)


def plane_profiles(image_zyx: np.ndarray, voxel_size_mm: np.ndarray, origin_mm: np.ndarray,
                   tracks: Tracks, nearest: bool = False) -> np.ndarray:
    """The image on every track, plane by plane (bilinear in x, y, or the value of the
    voxel holding the point with ``nearest``; zero outside the grid).

    Returns
    -------
    numpy.ndarray
        float32, shape (nz, P, K).
    """
    nz, ny, nx = image_zyx.shape
    pts = tracks.points_xy()
    fx = (pts[..., 0] - origin_mm[2]) / voxel_size_mm[2]
    fy = (pts[..., 1] - origin_mm[1]) / voxel_size_mm[1]
    padded = np.zeros((nz, ny + 2, nx + 2), np.float32)
    padded[:, 1:-1, 1:-1] = image_zyx
    if nearest:  # one gather from the flattened planes (the bilinear weights would be 0, 1)
        xx = np.clip(np.floor(fx + 0.5).astype(np.int64) + 1, 0, nx + 1)
        yy = np.clip(np.floor(fy + 0.5).astype(np.int64) + 1, 0, ny + 1)
        return np.take(padded.reshape(nz, -1), yy * (nx + 2) + xx, axis=1)
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    wx, wy = (fx - x0).astype(np.float32), (fy - y0).astype(np.float32)
    out = np.zeros((nz,) + pts.shape[:2], np.float32)
    for dy, dx, w in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                      (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy = np.clip(y0 + dy + 1, 0, ny + 1)
        xx = np.clip(x0 + dx + 1, 0, nx + 1)
        out += padded[:, yy, xx] * w
    return out


def oblique_integrals(profiles: np.ndarray, plane0_mm: float, plane_step_mm: float,
                      tracks: Tracks, zc_mm: np.ndarray, dz_mm: np.ndarray) -> np.ndarray:
    """Integrals of the image along the lines of every track and axial pair.

    Parameters
    ----------
    profiles : numpy.ndarray
        :func:`plane_profiles`, shape (nz, P, K).
    plane0_mm, plane_step_mm : float
        z of plane 0 and the spacing of the planes, mm.
    tracks : Tracks
    zc_mm, dz_mm : numpy.ndarray
        Axial centre ``(z1 + z2) / 2`` and difference ``z2 - z1`` of each line's ends, mm,
        shape (R,). Lines with the same ``dz`` share one transform.

    Returns
    -------
    numpy.ndarray
        Line integrals (image units times mm), float64, shape (P, R).
    """
    nz, n_tracks, n_samples = profiles.shape
    h = tracks.u - 0.5
    # Each line is evaluated at the whole plane below its centre, the rest of the centre's
    # offset going into the shifts, so that one linear interpolation is made, not two.
    zc_planes = (np.asarray(zc_mm, float) - plane0_mm) / plane_step_mm
    q_int = np.floor(zc_planes + 1e-9).astype(np.int64)
    q_frac = np.round(zc_planes - q_int, 9)
    keys, key_of = np.unique(np.stack([np.asarray(dz_mm, float), q_frac], axis=1), axis=0,
                             return_inverse=True)
    key_of = key_of.ravel()
    shift_planes = (keys[:, :1] * h[None, :] / plane_step_mm + keys[:, 1:])  # (D, K)
    reach = int(np.ceil(np.abs(shift_planes).max())) + 2
    lo = int(min(q_int.min(), 0)) - reach
    hi = int(max(q_int.max(), nz)) + reach
    n_fft = scipy.fft.next_fast_len(hi - lo + 1)
    padded = np.zeros((n_fft, n_tracks, n_samples), np.float32)
    padded[-lo:-lo + nz] = profiles  # plane q of the padded axis is image plane q + lo
    spectrum = scipy.fft.rfft(padded, axis=0)  # (W, P, K)
    w = 2.0 * np.pi * np.arange(spectrum.shape[0]) / n_fft
    # value(q) = L(q + s) with s = n + f: (1 - f) L(q + n) + f L(q + n + 1).
    n_int = np.floor(shift_planes)
    frac = shift_planes - n_int
    out = np.zeros((n_tracks, zc_planes.size))
    length_xy = tracks.length_xy_mm
    du = tracks.u[1] - tracks.u[0] if tracks.u.size > 1 else 1.0
    for first in range(0, keys.shape[0], SHIFTS_PER_PRODUCT):
        part = slice(first, min(first + SHIFTS_PER_PRODUCT, keys.shape[0]))
        # H[w, k, d] for the shifts of this part; one matrix product per frequency.
        kernel = (np.exp(1j * w[:, None, None] * n_int[part].T[None])
                  * ((1 - frac[part]).T[None] + frac[part].T[None]
                     * np.exp(1j * w)[:, None, None])).astype(np.complex64)
        summed = np.matmul(spectrum, kernel)  # (W, P, D)
        along = scipy.fft.irfft(summed, n=n_fft, axis=0)  # (n_fft, P, D): value at plane q
        for d in range(part.start, part.stop):
            cols = np.flatnonzero(key_of == d)
            length_3d = np.sqrt(length_xy**2 + keys[d, 0] ** 2)
            out[:, cols] = (along[q_int[cols] - lo, :, d - part.start].T
                            * (du * length_3d)[:, None])
    return out
