"""Lines of response of the scanner: exact crystal coordinates and the ring's sinogram.

LOR end points are the crystals' positions on their central axis at the mean depth of
interaction (not uniform parallel-beam bins), from :class:`sim.scanner.geometry.Scanner`.

Sinogram of one ring of ``N`` crystals (``N`` even; 184 here). An unordered pair ``a < b``
has ``u = a + b`` and ``w = b - a``. On an ideal ring the LOR's normal points at angle
``pi u / N`` (plus the ring's rotation) and its signed distance from the centre is
``R cos(pi w / N) = R sin(pi rho / N)`` with ``rho = N/2 - w``. Pairs with
``u mod N in {2v, 2v + 1}`` form view ``v`` (``N/2`` views; the two interleaved angles
differ by ``pi / N``, the usual ring-sinogram mashing); pairs with ``u >= N`` have their
normal turned by ``pi`` relative to the view, so their signed offset is ``-rho``. The radial
index is ``r = rho' + N/2`` in ``[0, N)``: every view holds ``N - 1`` LORs (183) and bin
``r = 0`` is structurally empty (it would be ``a == b``), so it gets zero sensitivity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.phantoms.materials import get_material
from sim.scanner.geometry import Scanner


def mean_interaction_depth_mm(mu_per_mm: float, depth_mm: float) -> float:
    """Mean depth of the first interaction of photons entering a crystal head-on and
    interacting in it: ``1/mu - d exp(-mu d) / (1 - exp(-mu d))``, mm."""
    attenuation = np.exp(-mu_per_mm * depth_mm)
    return float(1.0 / mu_per_mm - depth_mm * attenuation / (1.0 - attenuation))


def scanner_doi_mm(scanner: Scanner) -> float:
    """Mean depth of interaction of 511 keV photons in the scanner's crystals, mm."""
    mu = get_material(scanner.crystal_material).mu511_per_mm
    return mean_interaction_depth_mm(mu, scanner.crystal_depth_mm)


def lor_endpoints_mm(scanner: Scanner, crystal1: np.ndarray, crystal2: np.ndarray,
                     doi_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """End points of LORs at the mean depth of interaction.

    Parameters
    ----------
    crystal1, crystal2 : array of int
        Global crystal ids, same shape.
    doi_mm : float, optional
        Depth below the front face; :func:`scanner_doi_mm` when omitted.

    Returns
    -------
    p1, p2 : numpy.ndarray
        (x, y, z) in mm, shape ``crystal1.shape + (3,)``.
    """
    if doi_mm is None:
        doi_mm = scanner_doi_mm(scanner)
    return (scanner.crystal_position_mm(np.asarray(crystal1), doi_mm),
            scanner.crystal_position_mm(np.asarray(crystal2), doi_mm))


@dataclass(frozen=True)
class RingSinogram:
    """Sinogram indexing of the ``n`` crystals of one ring (see the module docstring)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 4 or self.n % 2:
            raise ValueError(f"a ring sinogram needs an even number of crystals >= 4, "
                             f"got {self.n}")

    @property
    def shape(self) -> tuple[int, int]:
        """(views, radial bins) = (n / 2, n)."""
        return self.n // 2, self.n

    def bins(self, index1: np.ndarray, index2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(view, radial) of the LORs between transaxial indices (any order, never equal).

        Returns
        -------
        view, radial : numpy.ndarray
            int64 arrays of the inputs' shape.
        """
        i1, i2 = np.asarray(index1, dtype=np.int64), np.asarray(index2, dtype=np.int64)
        if np.any(i1 == i2):
            raise ValueError("a LOR needs two different crystals")
        if np.any((i1 < 0) | (i1 >= self.n) | (i2 < 0) | (i2 >= self.n)):
            raise ValueError(f"transaxial index out of range [0, {self.n})")
        a, b = np.minimum(i1, i2), np.maximum(i1, i2)
        u, w = a + b, b - a
        rho = self.n // 2 - w
        signed = np.where(u >= self.n, -rho, rho)
        return (u % self.n) // 2, signed + self.n // 2

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Transaxial indices ``(a, b)`` of every bin, ``a < b``, -1 in the empty bins.

        Returns
        -------
        a, b : numpy.ndarray
            int64, shape :attr:`shape`.
        """
        a, b = np.triu_indices(self.n, k=1)
        view, radial = self.bins(a, b)
        out_a = np.full(self.shape, -1, dtype=np.int64)
        out_b = np.full(self.shape, -1, dtype=np.int64)
        out_a[view, radial] = a
        out_b[view, radial] = b
        return out_a, out_b
