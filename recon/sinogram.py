"""2D sinograms of the scanner: bin geometry, validity, field of view and single-slice
rebinning (SSRB) of list-mode coincidences to direct planes.

Bins follow :class:`recon.geometry.RingSinogram` (views x radial, 92 x 184 for 184
crystals). A bin is *valid* when it holds a crystal pair that the coincidence sorter can
record: two different crystals at least ``min_sector_difference`` modules apart (GATE's
minSectorDifference). Invalid bins (the structurally empty bin of each view, pairs in
neighbouring modules) get zero sensitivity.

SSRB puts a coincidence between rings ``r1`` and ``r2`` into plane ``k = r1 + r2``, at
``z = (z_r1 + z_r2) / 2`` (``2 rings - 1`` planes half a ring pitch apart), when
``|r1 - r2| <= max_ring_difference``. Plane ``k`` then gathers ``m_k`` physical LORs per bin
(:func:`plane_multiplicity`), which scales its sensitivity. Oblique LORs are treated as the
direct LOR of their plane: attenuation and geometry are those of the direct LOR (the usual
SSRB approximation; its axial blur grows with the distance from the axis and with
``max_ring_difference``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recon.geometry import RingSinogram, lor_endpoints_mm
from sim.scanner.geometry import Scanner


@dataclass(frozen=True)
class SinogramGeometry:
    """LORs of the sinogram bins of one ring, in the transaxial plane.

    Attributes
    ----------
    scanner : Scanner
    doi_mm : float
        Depth of interaction of the LOR end points below the crystal front face, mm.
    min_sector_difference : int
    """

    scanner: Scanner
    doi_mm: float
    min_sector_difference: int = 2

    @property
    def ring(self) -> RingSinogram:
        return RingSinogram(self.scanner.crystals_per_ring)

    @property
    def shape(self) -> tuple[int, int]:
        """(views, radial bins)."""
        return self.ring.shape

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.shape))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Transaxial crystal indices ``(a, b)`` of each bin (-1 in empty bins), (views, radial)."""
        return self.ring.pairs()

    def valid(self) -> np.ndarray:
        """Bins the sorter can fill, bool (views, radial)."""
        a, b = self.pairs()
        cpm = self.scanner.crystals_per_module
        modules = self.scanner.modules_per_ring
        diff = np.abs(a // cpm - b // cpm)
        diff = np.minimum(diff, modules - diff)
        return (a >= 0) & (diff >= self.min_sector_difference)

    def endpoints_mm(self, z_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """End points (x, y, z) of every bin's LOR at axial position ``z_mm``, mm,
        shape (views * radial, 3) in bin order; empty bins repeat crystal 0 (never used)."""
        a, b = self.pairs()
        a, b = np.maximum(a, 0).ravel(), np.maximum(b, 0).ravel()
        p1, p2 = lor_endpoints_mm(self.scanner, a, b, self.doi_mm)  # ring 0
        p1[:, 2] = z_mm
        p2[:, 2] = z_mm
        return p1, p2

    def fov_radius_mm(self) -> float:
        """Radius of the transaxial field of view: at every view the valid LORs reach this
        far from the axis on both sides, mm."""
        p1, p2 = self.endpoints_mm()
        valid = self.valid()
        d = p2[:, :2] - p1[:, :2]
        length = np.where(valid.ravel(), np.linalg.norm(d, axis=1), 1.0)
        distance = np.abs(p1[:, 0] * d[:, 1] - p1[:, 1] * d[:, 0]) / length
        # The radial index orders a view's LORs by signed distance (RingSinogram).
        side = np.sign(np.arange(self.shape[1]) - self.shape[1] // 2)
        dist = np.where(valid, distance.reshape(self.shape) * side, np.nan)
        reach = np.minimum(np.nanmax(dist, axis=1), -np.nanmin(dist, axis=1))
        return float(reach.min())

    def bin_index(self, crystal1: np.ndarray, crystal2: np.ndarray) -> np.ndarray:
        """Flat bin index (view * radial_bins + radial) of coincidences, int64."""
        _, t1 = self.scanner.ring_and_index(crystal1)
        _, t2 = self.scanner.ring_and_index(crystal2)
        view, radial = self.ring.bins(t1, t2)
        return view * self.shape[1] + radial


def plane_multiplicity(rings: int, max_ring_difference: int) -> np.ndarray:
    """Number of ring combinations ``(r1, r2)`` (crystal a in ``r1``, b in ``r2``) that SSRB
    puts into each plane ``k = r1 + r2``, shape (2 rings - 1,)."""
    r1, r2 = np.meshgrid(np.arange(rings), np.arange(rings), indexing="ij")
    keep = np.abs(r1 - r2) <= max_ring_difference
    return np.bincount((r1 + r2)[keep], minlength=2 * rings - 1).astype(np.float64)


def ssrb_histogram(crystal1: np.ndarray, crystal2: np.ndarray, geometry: SinogramGeometry,
                   max_ring_difference: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Rebin coincidences into direct-plane sinograms (``weights``: coincidences per row,
    for the rows of a coincidence histogram; one each by default).

    Returns
    -------
    numpy.ndarray
        Counts, float64, shape (2 rings - 1, views * radial bins); coincidences with a
        ring difference above ``max_ring_difference`` or in an invalid bin are dropped.
    """
    scanner = geometry.scanner
    n_planes = 2 * scanner.rings - 1
    out = np.zeros((n_planes, geometry.n_bins))
    if len(crystal1) == 0:
        return out
    r1, _ = scanner.ring_and_index(crystal1)
    r2, _ = scanner.ring_and_index(crystal2)
    bins = geometry.bin_index(crystal1, crystal2)
    keep = ((np.abs(r1.astype(np.int64) - r2) <= max_ring_difference)
            & geometry.valid().ravel()[bins])
    plane = (r1.astype(np.int64) + r2)[keep]
    flat = plane * geometry.n_bins + bins[keep]
    out.ravel()[:] = np.bincount(flat, None if weights is None else
                                 np.asarray(weights, np.float64)[keep], minlength=out.size)
    return out
