"""Expected detected trues of every line between two face cells, per decay: the rates the
engine's ``trues: lines`` draws its counts from (:mod:`.line_trues`).

A line's expected photon pairs crossing both cells (:attr:`.trues.ExpectedTrues.pairs`)
times the probability that both photons make an in-window single. That probability is the
calibrated response's (:meth:`.response.DetectorResponse.probability`) at the *central*
line's entry into each cell: the entry crystal is the cell's own column and ring, and the
incidence angles are the central line's, so no ray needs tracing. The photons of a line
enter anywhere on its cells and (photon 2) at the acolinearity angle; their angles differ
from the central line's by about a cell's width over the line's length (about 1 degree
against the response's 5-degree bins), so the central line's probability stands for the
line's mean (within 0.5 % in total against each photon's own detection, in the tests).

Measured limit: drawing every true's crystals from these expectations alone, without the
activity's distribution within the line's tube (commit 1191e53), failed the engine
validation on the NEMA-like cylinder's 3.2 mm line source (ROI mean 7.8 % low, voxel noise
12.7 % high) and widens the tube's edge (the entries within a cell that an activity edge
cuts are not uniform, and an oblique photon's crystal depends on them): hence
:mod:`.line_trues` draws the axis within the tube by the activity.
"""

from __future__ import annotations

import numpy as np

from sim.engines.statistical.entry import virtual_ring_z_mm
from sim.engines.statistical.response import (
    END_RINGS,
    OUTSIDE_RINGS,
    DetectorResponse,
    Folded,
    axial_classes,
    fold_angles,
)
from sim.engines.statistical.trues import ExpectedTrues
from sim.scanner.geometry import Scanner


def central_folds(expected: ExpectedTrues, response: DetectorResponse,
                  lines: slice | np.ndarray) -> tuple[Folded, Folded]:
    """The response cells of the photons of central lines ``lines`` (a slice or indices)
    entering the cells of columns ``tracks.i`` (ring ``ring1``) and ``tracks.j``
    (ring ``ring2``)."""
    scanner: Scanner = response.scanner
    track = expected.track[lines]
    tracks = expected.tracks
    d_xy = (tracks.end_xy - tracks.start_xy)[track]  # from cell i towards cell j
    dz = (virtual_ring_z_mm(scanner, expected.ring2[lines])
          - virtual_ring_z_mm(scanner, expected.ring1[lines]))
    # The photon entering cell i travels along -d, the one entering cell j along +d.
    return (end_folds(response, tracks.i[track], expected.ring1[lines], -d_xy, -dz),
            end_folds(response, tracks.j[track], expected.ring2[lines], d_xy, dz))


def end_folds(response: DetectorResponse, column: np.ndarray, ring: np.ndarray,
              d_xy: np.ndarray, dz: np.ndarray) -> Folded:
    """The response cells of photons travelling along ``(d_xy, dz)`` (mm, shapes (n, 2)
    and (n,), any length) into face column ``column`` (0 .. crystals_per_ring - 1) of
    virtual ring ``ring``."""
    scanner: Scanner = response.scanner
    module, within = np.divmod(column, scanner.crystals_per_module)
    phi = scanner.module_angles_rad[module]
    along_normal = d_xy[:, 0] * np.cos(phi) + d_xy[:, 1] * np.sin(phi)
    along_tangent = -d_xy[:, 0] * np.sin(phi) + d_xy[:, 1] * np.cos(phi)
    length = np.sqrt(np.einsum("ij,ij->i", d_xy, d_xy) + dz**2)
    alpha = np.arctan2(along_tangent, along_normal)
    beta = np.arcsin(np.clip(dz / length, -1.0, 1.0))
    return fold_angles(scanner, response.bins, within.astype(np.int64),
                       np.asarray(ring).astype(np.int64), alpha, beta)


def detection_probabilities(expected: ExpectedTrues, response: DetectorResponse,
                            chunk_lines: int = 4_000_000) -> np.ndarray:
    """Probability that both photons of each line are detected, from the calibrated
    response at the central line's entry into each cell, float64 (n_lines,).

    The same bilinear interpolation as :meth:`.response.DetectorResponse.probability` of
    :func:`central_folds`, done in two steps because the interpolation is separable: the
    transaxial part (column within the module, mirror, incidence angle ``alpha``) belongs to
    the track, so each track's probabilities are interpolated in ``alpha`` once, as a table
    over axial classes and ``beta`` bins; each line then only looks up its axial class and
    interpolates in ``beta``. About ten times fewer operations per line than folding both
    angles per line (millions of lines per phantom)."""
    out = np.empty(expected.track.size)
    tracks = expected.tracks
    d_xy = tracks.end_xy - tracks.start_xy  # from cell i towards cell j, (P, 2)
    length_xy = np.linalg.norm(d_xy, axis=1)
    tables = [_track_tables(response, tracks.i, -d_xy),  # (P, classes, beta bins) each
              _track_tables(response, tracks.j, d_xy)]
    lowest = int(min(expected.ring1.min(initial=0), expected.ring2.min(initial=0)))
    highest = int(max(expected.ring1.max(initial=0), expected.ring2.max(initial=0)))
    z_of_ring = virtual_ring_z_mm(response.scanner, np.arange(lowest, highest + 1))
    for first in range(0, out.size, chunk_lines):
        part = slice(first, first + chunk_lines)
        track = expected.track[part]
        ring1 = expected.ring1[part].astype(np.int64)
        ring2 = expected.ring2[part].astype(np.int64)
        dz = z_of_ring[ring2 - lowest] - z_of_ring[ring1 - lowest]
        length = length_xy[track]
        out[part] = (_line_probability(response, tables[0], track, ring1, length, -dz)
                     * _line_probability(response, tables[1], track, ring2, length, dz))
    return out


def _track_tables(response: DetectorResponse, column: np.ndarray, d_xy: np.ndarray
                  ) -> np.ndarray:
    """Each track's detection probability at the photon's entry into face column
    ``column`` travelling along ``d_xy`` (P, 2), interpolated in ``alpha``: float64
    (P, axial classes, beta bins); all-zero rows for cells beyond the ends are not needed
    (a line's axial class is looked up per line)."""
    scanner: Scanner = response.scanner
    bins = response.bins
    module, within = np.divmod(column, scanner.crystals_per_module)
    phi = scanner.module_angles_rad[module]
    along_normal = d_xy[:, 0] * np.cos(phi) + d_xy[:, 1] * np.sin(phi)
    along_tangent = -d_xy[:, 0] * np.sin(phi) + d_xy[:, 1] * np.cos(phi)
    alpha = np.arctan2(along_tangent, along_normal)
    # The mirror through the module's mid-plane, as fold_angles makes it.
    within = np.where(alpha < 0, scanner.crystals_per_module - 1 - within, within)
    alpha_x = bins.alpha_coordinate(alpha)
    a0 = np.minimum(np.floor(alpha_x), bins.alpha_bins - 2).astype(np.int64)
    fa = (alpha_x - a0)[:, None, None]
    p = (response.detected / np.maximum(response.sent, 1)).reshape(
        scanner.crystals_per_module, axial_classes(scanner), bins.alpha_bins, bins.beta_bins)
    return (1.0 - fa) * p[within, :, a0, :] + fa * p[within, :, a0 + 1, :]


def _line_probability(response: DetectorResponse, table: np.ndarray, track: np.ndarray,
                      ring: np.ndarray, length_xy_mm: np.ndarray, dz_mm: np.ndarray
                      ) -> np.ndarray:
    """Detection probability of the photons of lines on tracks ``track`` entering virtual
    ring ``ring`` with axial step ``dz_mm`` over transaxial length ``length_xy_mm`` (all
    (n,)): the track's table interpolated in ``beta``, 0 beyond the detectable rings."""
    scanner: Scanner = response.scanner
    bins = response.bins
    beta = np.arctan2(dz_mm, length_xy_mm)
    upper = ring > (scanner.rings - 1) / 2.0  # the mirror through the scanner's mid-plane
    ring = np.where(upper, scanner.rings - 1 - ring, ring)
    beta = np.where(upper, -beta, beta)
    axial = np.where(ring < END_RINGS, ring + OUTSIDE_RINGS,
                     OUTSIDE_RINGS + END_RINGS + np.mod(ring, scanner.crystals_per_module_axial))
    axial = np.clip(axial, 0, table.shape[1] - 1)
    beta_x = bins.beta_coordinate(beta)
    b0 = np.minimum(np.floor(beta_x), bins.beta_bins - 2).astype(np.int64)
    fb = beta_x - b0
    flat = (track * table.shape[1] + axial) * table.shape[2] + b0
    low, high = np.take(table, flat), np.take(table, flat + 1)
    p = low + fb * (high - low)
    return np.where(ring < -OUTSIDE_RINGS, 0.0, p)


def detected_per_decay(expected: ExpectedTrues, response: DetectorResponse) -> np.ndarray:
    """Expected detected trues of each line per decay (before the sorter's sector cut),
    float64 (n_lines,)."""
    return expected.pairs * detection_probabilities(expected, response)
