"""Attenuation factors ``exp(-int mu dl)`` of LORs through the phantom's 511 keV map.

3D LORs (list mode, sensitivity images) are projected through the mu map on the phantom's
own grid with the Siddon projector.

Rebinned sinograms (:func:`rebinned_attenuation`). Single-slice rebinning puts every oblique
LOR between rings ``r1`` and ``r2`` into the direct plane ``r1 + r2``; the expected counts of
a rebinned bin are the sum over those LORs, so its multiplicative factor is the sum of their
own 3D attenuation factors, ``w[b, k] = sum_{r1 + r2 = k, |r1 - r2| <= D} exp(-int_{LOR} mu)``
(STIR's and CASToR's rule for compressed data: each physical LOR keeps its own attenuation).
The older shortcut, ``m_k`` times the factor of the direct LOR of the plane
(:func:`plane_attenuation`), corrects an oblique LOR that passes above a dense inclusion with
the inclusion's attenuation; the counts it then lacks are put back into the inclusion's voxels,
so a cold steel sphere reconstructs hot. Activity is still placed on the plane by SSRB (the
axial blur of oblique LORs far from the axis is a property of rebinning, not of attenuation).

The oblique line integrals come from :class:`recon.oblique.ObliqueGeometry` (2.5D: the
transaxial system matrix with each entry lifted to the height of the oblique LOR there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.filters import gaussian_fwhm
from recon.grid import ImageGrid
from recon.oblique import ObliqueGeometry
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix, to_torch_csr
from recon.truth import box_average
from sim.phantoms.file import PhantomData


def phantom_grid(shape, voxel_size_mm, origin_mm) -> ImageGrid:
    """The grid of a phantom file's arrays."""
    return ImageGrid(tuple(shape), tuple(voxel_size_mm), tuple(origin_mm))


def check_coverage(mu_grid: ImageGrid, grid: ImageGrid, path: str | Path) -> None:
    """Refuse an attenuation map that does not cover the image grid.

    Raises
    ------
    ValueError
        Naming the file and the box of each grid.
    """
    if not mu_grid.covers(grid, tolerance_mm=1e-3):
        raise ValueError(
            f"{path}: the attenuation map (mu511) covers z, y, x from "
            f"{np.round(mu_grid.lower_mm, 2).tolist()} to {np.round(mu_grid.upper_mm, 2).tolist()}"
            f" mm, but the image grid spans {np.round(grid.lower_mm, 2).tolist()} to "
            f"{np.round(grid.upper_mm, 2).tolist()} mm; attenuation outside the map is unknown")


def mu_at_planes(mu_per_mm: np.ndarray, mu_grid: ImageGrid, plane_z_mm: np.ndarray) -> np.ndarray:
    """The mu map interpolated linearly along z at each plane (0 outside the map's box),
    shape (planes, ny, nx)."""
    centres = mu_grid.centres_mm(0)
    pos = (np.asarray(plane_z_mm) - centres[0]) / mu_grid.voxel_size_mm[0]
    below = np.clip(np.floor(pos).astype(int), 0, mu_grid.shape[0] - 1)
    above = np.clip(below + 1, 0, mu_grid.shape[0] - 1)
    frac = np.clip(pos - below, 0.0, 1.0)[:, None, None]
    out = (1 - frac) * mu_per_mm[below] + frac * mu_per_mm[above]
    outside = (plane_z_mm < mu_grid.lower_mm[0]) | (plane_z_mm > mu_grid.upper_mm[0])
    out[outside] = 0.0
    return out


def plane_attenuation(geometry: SinogramGeometry, mu_per_mm: np.ndarray, mu_grid: ImageGrid,
                      plane_z_mm: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Attenuation factors of the direct-plane LORs of every bin at each plane.

    Returns
    -------
    torch.Tensor
        (bins, planes), float32, in (0, 1].
    """
    system = build_system_matrix(geometry, mu_grid, device=device)
    a = to_torch_csr(system.matrix, device, torch.float64)
    mu = mu_at_planes(np.asarray(mu_per_mm, np.float64), mu_grid, np.asarray(plane_z_mm))
    columns = torch.as_tensor(mu.reshape(len(plane_z_mm), -1).T.copy(), device=device)
    return torch.exp(-(a @ columns)).to(torch.float32)


def mu_on_grid(mu_per_mm: np.ndarray, mu_grid: ImageGrid, grid: ImageGrid) -> np.ndarray:
    """The mu map averaged over each voxel of ``grid`` (0 outside the map), (z, y, x), 1/mm."""
    return box_average(mu_per_mm, mu_grid, grid)


def attenuation_map(phantom: PhantomData, mu_grid: ImageGrid, grid: ImageGrid,
                    fwhm_mm: float) -> np.ndarray:
    """The phantom's mu map on the image grid, smoothed to the data's resolution.

    Measured counts are blurred by the detector; the attenuation factors that divide them must
    be blurred alike, or the sharp attenuation dip of a dense inclusion is over-corrected where
    the data have already filled it in, and the inclusion reconstructs warm (PET/CT practice
    since Kinahan et al. 1998: the CT mu map is smoothed to PET resolution). A Gaussian of
    ``fwhm_mm`` (0: none), 0 outside the map.

    Returns
    -------
    numpy.ndarray
        (z, y, x) on ``grid``, 1/mm.
    """
    return gaussian_fwhm(mu_on_grid(phantom.mu511_per_mm, mu_grid, grid), grid.voxel_size_mm,
                         fwhm_mm)


def rebinned_attenuation(oblique: ObliqueGeometry, mu_per_mm: np.ndarray,
                         max_ring_difference: int) -> np.ndarray:
    """Sum of the 3D attenuation factors of the LORs rebinned into each bin (module docstring).

    Parameters
    ----------
    oblique : ObliqueGeometry
        Of the image grid and its rebinning planes.
    mu_per_mm : numpy.ndarray
        The mu map on the image grid (:func:`mu_on_grid`), (z, y, x); 0 above and below it.
    max_ring_difference : int

    Returns
    -------
    numpy.ndarray
        (bins, planes), float64: for ``mu = 0`` the number of ring pairs of each plane (the
        SSRB multiplicity), below it where LORs are attenuated; invalid bins included (the
        caller masks them).
    """
    out = np.zeros((oblique.n_bins, mu_per_mm.shape[0]))
    for d, planes in oblique.ring_differences(max_ring_difference):
        integral = oblique.integrals(mu_per_mm, d, planes)
        out[:, planes] += np.exp(-oblique.secant(d)[:, None] * integral)
    return out
