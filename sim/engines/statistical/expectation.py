"""Expected true coincidences of every line between two face cells, before detection: the
first step of a simulation whose time does not grow with the counts (expected counts of
every crystal pair, then Poisson counts, instead of drawing every event).

For the line between face cells ``i`` and ``j`` (:mod:`.trues`), the photon pairs of one
decay that cross both cells are, for cells small against the line,
``G / (2 pi) exp(-int mu dl) <int rho dl>`` with ``G`` the pair's etendue, ``rho`` the decay
density (1/mm^3, integrating to one) and ``<int rho dl>`` the line integral of the density
averaged over the tube of lines joining the two cells. The attenuation is taken on the
central line (smooth on the scale of a cell); the tube average is the central line's
integral of the density convolved with the tube's cross-section: a line with ends uniform
over the two cells (width ``w`` transaxially, the axial pitch axially) is offset from the
central line by ``(p + q) / 2`` half-way (``p``, ``q`` uniform over the cell), a triangle
of half-width ``w / 2`` (:func:`tube_kernel`), applied along x, y and z. The cross-section
is the one half-way along the line, where a phantom in the middle of the ring is; nearer a
face the tube narrows towards the cell's own width.

The lines are those of :func:`.trues.expected_trues` (the candidates of the event
drawing), so the two share their geometry; the event drawing, which makes the tube
average exactly by sampling, is this module's reference in the tests.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

from sim.engines.statistical.entry import ring_entry, virtual_ring_z_mm
from sim.engines.statistical.projection import (
    face_centres_xy,
    oblique_integrals,
    plane_profiles,
)
from sim.engines.statistical.response import DetectorResponse, fold
from sim.engines.statistical.trues import ExpectedTrues, etendue
from sim.scanner.geometry import Scanner


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


def line_expectations(expected: ExpectedTrues, activity_zyx: np.ndarray,
                      mu_per_mm_zyx: np.ndarray, voxel_size_mm: np.ndarray,
                      origin_mm: np.ndarray, scanner: Scanner,
                      tracks_per_batch: int = 512) -> np.ndarray:
    """Expected photon pairs crossing both face cells of every line, per decay, before
    detection.

    Parameters
    ----------
    expected : ExpectedTrues
        The lines (:func:`.trues.expected_trues` of the same images).
    activity_zyx, mu_per_mm_zyx : numpy.ndarray
        Activity map (any scale) and attenuation at 511 keV (1/mm), shape (nz, ny, nx).
    voxel_size_mm, origin_mm : numpy.ndarray
        (z, y, x); ``origin_mm`` is the centre of voxel (0, 0, 0).
    scanner : Scanner
    tracks_per_batch : int
        Tracks processed together (memory).

    Returns
    -------
    numpy.ndarray
        float64, shape (n_lines,), in the order of ``expected.track``.
    """
    voxel_size_mm = np.asarray(voxel_size_mm, float)
    origin_mm = np.asarray(origin_mm, float)
    activity = np.asarray(activity_zyx, np.float64)
    density = activity / (activity.sum() * np.prod(voxel_size_mm))
    widths = (scanner.axial_pitch_mm, scanner.crystal_pitch_mm, scanner.crystal_pitch_mm)
    for axis, (width, voxel) in enumerate(zip(widths, voxel_size_mm, strict=True)):
        density = scipy.ndimage.convolve1d(density, tube_kernel(width, voxel), axis=axis,
                                           mode="constant")
    density = density.astype(np.float32)
    mu = np.asarray(mu_per_mm_zyx, np.float32)
    out = np.zeros(expected.track.size)
    order = np.argsort(expected.track, kind="stable")
    bounds = np.searchsorted(expected.track[order], np.arange(expected.tracks.i.size + 1))
    z1_all = virtual_ring_z_mm(scanner, expected.ring1)
    z2_all = virtual_ring_z_mm(scanner, expected.ring2)
    for first in range(0, expected.tracks.i.size, tracks_per_batch):
        last = min(first + tracks_per_batch, expected.tracks.i.size)
        lines = order[bounds[first]:bounds[last]]
        if lines.size == 0:
            continue
        tracks = expected.tracks.subset(slice(first, last))
        local = expected.track[lines] - first
        # Each line is one (track, ring pair) cell of a (tracks, ring pairs) table.
        pairs, pair_of = np.unique(np.stack([expected.ring1[lines], expected.ring2[lines]],
                                            axis=1), axis=0, return_inverse=True)
        pair_of = pair_of.ravel()
        z1 = virtual_ring_z_mm(scanner, pairs[:, 0])
        z2 = virtual_ring_z_mm(scanner, pairs[:, 1])
        zc, dz = (z1 + z2) / 2, z2 - z1
        attenuation = oblique_integrals(
            plane_profiles(mu, voxel_size_mm, origin_mm, tracks, nearest=True),
            origin_mm[0], voxel_size_mm[0], tracks, zc, dz)[local, pair_of]
        integral = oblique_integrals(
            plane_profiles(density, voxel_size_mm, origin_mm, tracks),
            origin_mm[0], voxel_size_mm[0], tracks, zc, dz)[local, pair_of]
        g = etendue(tracks, local, z1_all[lines], z2_all[lines], scanner)
        out[lines] = (g / (2.0 * np.pi) * np.exp(-attenuation)
                      * np.maximum(integral, 0.0))
    return out


def detection_probabilities(expected: ExpectedTrues, response: DetectorResponse,
                            chunk_lines: int = 1_000_000) -> np.ndarray:
    """Probability that both photons of each line are detected (in-window singles), from the
    calibrated response at the central line's entry into each cell (its angles of
    incidence; :meth:`.response.DetectorResponse.probability`), float64 (n_lines,).

    The event drawing evaluates it at each photon's own entry (a point of the cell, the
    acolinear direction); the central line's stands for the cell's mean.
    """
    scanner = response.scanner
    centres = face_centres_xy(scanner)
    out = np.empty(expected.track.size)
    for first in range(0, expected.track.size, chunk_lines):
        part = slice(first, first + chunk_lines)
        track = expected.track[part]
        ends = []
        for column, ring in ((expected.tracks.i[track], expected.ring1[part]),
                             (expected.tracks.j[track], expected.ring2[part])):
            ends.append(np.concatenate([centres[column],
                                        virtual_ring_z_mm(scanner, ring)[:, None]], axis=1))
        middle = (ends[0] + ends[1]) / 2
        d = ends[1] - ends[0]
        d /= np.linalg.norm(d, axis=1)[:, None]
        both = np.ones(track.size)
        for direction in (-d, d):
            entry = ring_entry(scanner, middle, direction)
            both *= response.probability(fold(scanner, response.bins, entry))
        out[part] = both
    return out
