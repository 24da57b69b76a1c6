"""Expected detected trues of every line between two face cells, per decay: what a
simulation whose time does not grow with the counts would draw from (not used by the engine,
whose trues are drawn by exact thinning, :mod:`.events`).

A line's expected photon pairs crossing both cells (:attr:`.trues.ExpectedTrues.pairs`)
times the probability that both photons make an in-window single. That probability is the
calibrated response's (:meth:`.response.DetectorResponse.probability`) at the *central*
line's entry into each cell: the entry crystal is the cell's own column and ring, and the
incidence angles are the central line's, so no ray needs tracing. The photons of a line
enter anywhere on its cells and (photon 2) at the acolinearity angle; their angles differ
from the central line's by about a cell's width over the line's length (about 1 degree
against the response's 5-degree bins), so the central line's probability stands for the
line's mean (within 0.5 % in total against each photon's own detection, in the tests).

Measured limit: drawing the engine's trues line by line from these expectations (commit
1191e53) failed the engine validation on the NEMA-like cylinder's 3.2 mm line source (ROI
mean 7.8 % low, voxel noise 12.7 % high): the expected pairs take the tube average from a
density blurred by the tube's cross-section and the bilinear sampling of the plane
profiles, which spreads a source thinner than a cell over neighbouring lines.
"""

from __future__ import annotations

import numpy as np

from sim.engines.statistical.entry import virtual_ring_z_mm
from sim.engines.statistical.response import DetectorResponse, Folded, fold_angles
from sim.engines.statistical.trues import ExpectedTrues
from sim.scanner.geometry import Scanner


def central_folds(expected: ExpectedTrues, response: DetectorResponse, lines: slice
                  ) -> tuple[Folded, Folded]:
    """The response cells of the photons of central lines ``lines`` entering the cells of
    columns ``tracks.i`` (ring ``ring1``) and ``tracks.j`` (ring ``ring2``)."""
    scanner: Scanner = response.scanner
    track = expected.track[lines]
    tracks = expected.tracks
    d_xy = tracks.end_xy - tracks.start_xy  # from cell i towards cell j, per track
    length_xy = np.linalg.norm(d_xy, axis=1)
    dz = (virtual_ring_z_mm(scanner, expected.ring2[lines])
          - virtual_ring_z_mm(scanner, expected.ring1[lines]))
    length = np.sqrt(length_xy[track] ** 2 + dz**2)
    folds = []
    # The photon entering cell i travels along -d, the one entering cell j along +d.
    for column, ring, sign in ((tracks.i, expected.ring1[lines], -1.0),
                               (tracks.j, expected.ring2[lines], 1.0)):
        module, within = np.divmod(column, scanner.crystals_per_module)
        phi = scanner.module_angles_rad[module]
        along_normal = sign * (d_xy[:, 0] * np.cos(phi) + d_xy[:, 1] * np.sin(phi))
        along_tangent = sign * (-d_xy[:, 0] * np.sin(phi) + d_xy[:, 1] * np.cos(phi))
        alpha = np.arctan2(along_tangent, along_normal)  # per track
        beta = np.arcsin(np.clip(sign * dz / length, -1.0, 1.0))
        folds.append(fold_angles(scanner, response.bins, within[track].astype(np.int64),
                                 ring.astype(np.int64), alpha[track], beta))
    return folds[0], folds[1]


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
