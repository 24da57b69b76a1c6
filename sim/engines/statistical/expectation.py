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
from sim.engines.statistical.response import DetectorResponse, Folded, fold_angles
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
                            chunk_lines: int = 2_000_000) -> np.ndarray:
    """Probability that both photons of each line are detected, from the calibrated
    response at the central line's entry into each cell, float64 (n_lines,)."""
    out = np.empty(expected.track.size)
    for first in range(0, expected.track.size, chunk_lines):
        part = slice(first, first + chunk_lines)
        one, two = central_folds(expected, response, part)
        out[part] = response.probability(one) * response.probability(two)
    return out


def detected_per_decay(expected: ExpectedTrues, response: DetectorResponse) -> np.ndarray:
    """Expected detected trues of each line per decay (before the sorter's sector cut),
    float64 (n_lines,)."""
    return expected.pairs * detection_probabilities(expected, response)
