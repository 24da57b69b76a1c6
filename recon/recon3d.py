"""Fully 3D list-mode reconstruction: every coincidence projected along its own LOR (crystal
axes at the mean depth of interaction), optional TOF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon.geometry import lor_endpoints_mm
from recon.grid import ImageGrid, box_chord_mm
from recon.kernel import ImageModel
from recon.mlem import EMResult, osem_listmode
from recon.projector import HALF_C_MM_PER_NS, Projector, TOFKernel
from recon.sinogram import SinogramGeometry


@dataclass(frozen=True)
class ListModeEvents:
    """LORs of the events kept for reconstruction.

    Attributes
    ----------
    p1, p2 : numpy.ndarray
        End points (x, y, z), mm, (n, 3).
    tof_mm : numpy.ndarray
        ``(time1 - time2) * c / 2``: position from the LOR midpoint towards ``p2``, mm, (n,).
    """

    p1: np.ndarray
    p2: np.ndarray
    tof_mm: np.ndarray


def select_events(columns: dict[str, np.ndarray], geometry: SinogramGeometry,
                  max_ring_difference: int, keep_mask: bool = False
                  ) -> ListModeEvents | np.ndarray:
    """Events the scanner model of the reconstruction knows: a valid transaxial pair and a
    ring difference within ``max_ring_difference`` (the same LORs as the sensitivity). With
    ``keep_mask`` the boolean mask of those events instead."""
    c1, c2 = columns["crystal1"], columns["crystal2"]
    scanner = geometry.scanner
    if len(c1) == 0:
        if keep_mask:
            return np.zeros(0, bool)
        empty = np.zeros((0, 3))
        return ListModeEvents(empty, empty, np.zeros(0))
    r1, _ = scanner.ring_and_index(c1)
    r2, _ = scanner.ring_and_index(c2)
    keep = ((np.abs(r1.astype(np.int64) - r2) <= max_ring_difference)
            & geometry.valid().ravel()[geometry.bin_index(c1, c2)])
    if keep_mask:
        return keep
    p1, p2 = lor_endpoints_mm(scanner, c1[keep], c2[keep], geometry.doi_mm)
    tof = (columns["time1_ns"][keep] - columns["time2_ns"][keep]) * HALF_C_MM_PER_NS
    return ListModeEvents(p1, p2, tof)


def reconstruct_3d(events: ListModeEvents, sensitivity: torch.Tensor, geometry: SinogramGeometry,
                   grid: ImageGrid, iterations: int, subsets: int,
                   kernel: TOFKernel | None = None, device: torch.device | str = "cpu",
                   chunk: int = 20000, background: np.ndarray | None = None,
                   image_model: ImageModel | None = None) -> EMResult:
    """List-mode OSEM on ``grid``; TOF when ``kernel`` is given; ``background`` per event as
    in :func:`recon.mlem.osem_listmode`; kernel method and resolution model with
    ``image_model`` (:mod:`recon.kernel`). Returns ``image`` (z, y, x)."""
    projector = Projector(grid, device=device, chunk=chunk)
    mask = torch.as_tensor(grid.fov_mask(geometry.fov_radius_mm()), device=device)
    mask = mask[None].expand(grid.shape)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return osem_listmode(projector, as_t(events.p1), as_t(events.p2), sensitivity.to(device),
                         mask, iterations, subsets,
                         as_t(events.tof_mm) if kernel is not None else None, kernel,
                         None if background is None else as_t(background), image_model)


def lor_count(geometry: SinogramGeometry, max_ring_difference: int) -> int:
    """Number of LORs the sensitivity image sums over (:mod:`recon.sensitivity`): within a
    ring each valid unordered pair once, across rings each ordered pair."""
    rings = geometry.scanner.rings
    unordered = int(geometry.valid().sum())
    d = np.arange(1, min(max_ring_difference, rings - 1) + 1)
    return unordered * (rings + 2 * int((rings - d).sum()))


def event_background(events: ListModeEvents, attenuation: np.ndarray, randoms_per_lor: float,
                     scatter: np.ndarray | None, grid: ImageGrid, tof: bool) -> np.ndarray:
    """Per-event background for :func:`reconstruct_3d`: (randoms + scatter) expected counts on
    the event's LOR over its attenuation factor; with TOF spread evenly along the LOR's chord
    through the image box (a density per mm like the TOF projection)."""
    b = randoms_per_lor + (0.0 if scatter is None else scatter)
    b = np.broadcast_to(b, attenuation.shape) / np.maximum(attenuation, 1e-12)
    if tof:
        b = b / np.maximum(box_chord_mm(events.p1, events.p2, grid), 1.0)
    return b
