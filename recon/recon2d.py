"""2D reconstruction: single-slice rebinning of list-mode coincidences, then OSEM of every
plane with one shared sparse system matrix (all planes in one sparse-dense product)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recon.grid import ImageGrid, rebinning_planes_mm
from recon.kernel import ImageModel
from recon.mlem import EMResult, osem_sinogram, view_subsets
from recon.oblique import ObliqueGeometry, ObliqueModel, osem_oblique
from recon.sinogram import SinogramGeometry, plane_multiplicity, ssrb_histogram
from recon.system_matrix import SystemMatrix2D

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EMSettings:
    """Iterations of EM: ``iterations`` full passes over ``subsets`` subsets (1 = MLEM)."""

    iterations: int = 4
    subsets: int = 1


def plane_indices(geometry: SinogramGeometry, grid: ImageGrid) -> np.ndarray:
    """Rebinning plane number ``r1 + r2`` of each plane of the grid.

    Raises
    ------
    ValueError
        When a grid plane is not a rebinning plane.
    """
    planes = rebinning_planes_mm(geometry.scanner)
    half_pitch = geometry.scanner.axial_pitch_mm / 2.0
    z = grid.centres_mm(0)
    k = np.rint((z - planes[0]) / half_pitch).astype(int)
    if (abs(grid.voxel_size_mm[0] - half_pitch) > 1e-9 or np.any(k < 0) or np.any(k >= planes.size)
            or np.abs(planes[np.clip(k, 0, planes.size - 1)] - z).max() > 1e-6):
        raise ValueError("2D reconstruction needs image planes on the rebinning planes "
                         f"({half_pitch} mm apart, see recon.grid.recon_grid)")
    return k


def sinogram_stack(crystal1: np.ndarray, crystal2: np.ndarray, geometry: SinogramGeometry,
                   grid: ImageGrid, max_ring_difference: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Rebinned counts of the grid's planes, (bins, planes) (``weights``: coincidences per
    row, :func:`recon.sinogram.ssrb_histogram`)."""
    k = plane_indices(geometry, grid)
    return ssrb_histogram(crystal1, crystal2, geometry, max_ring_difference,
                          weights)[k].T.copy()


def plane_weights(geometry: SinogramGeometry, grid: ImageGrid, max_ring_difference: int,
                  attenuation: torch.Tensor | None) -> torch.Tensor:
    """Multiplicative factors ``w`` (bins, planes): validity x SSRB multiplicity (x attenuation)."""
    k = plane_indices(geometry, grid)
    m = plane_multiplicity(geometry.scanner.rings, max_ring_difference)[k]
    w = torch.as_tensor(geometry.valid().ravel()[:, None] * m[None, :], dtype=torch.float32)
    if attenuation is not None:
        w = w * attenuation.to(w.device)
    return w


def rebinned_weights(geometry: SinogramGeometry, attenuation_sum: np.ndarray) -> torch.Tensor:
    """Multiplicative factors ``w`` (bins, planes) from the summed 3D attenuation factors of
    each bin's rebinned LORs (:func:`recon.attenuation.rebinned_attenuation`, which already
    counts the LORs): validity x that sum."""
    valid = geometry.valid().ravel()[:, None]
    return torch.as_tensor(valid * attenuation_sum, dtype=torch.float32)


def uniform_randoms(delayed: np.ndarray, geometry: SinogramGeometry) -> np.ndarray:
    """Expected randoms per bin from the rebinned delayed window, (bins, planes).

    Each plane's delayed coincidences are spread evenly over its valid bins: the randoms rate
    of a crystal pair is ``2 tau S_i S_j``, nearly the same for every pair when the singles
    rates are (an object small against the ring), and the even spread removes the Poisson
    noise of a raw delayed sinogram (a few hundred counts over 15,000 bins per plane).
    """
    valid = geometry.valid().ravel()
    per_bin = delayed.sum(axis=0) / valid.sum()
    return valid[:, None] * per_bin[None, :]


def reconstruct_2d(counts: np.ndarray, weights: torch.Tensor, system: SystemMatrix2D,
                   geometry: SinogramGeometry, grid: ImageGrid, settings: EMSettings,
                   device: torch.device | str = "cpu",
                   background: np.ndarray | None = None,
                   image_model: ImageModel | None = None) -> EMResult:
    """OSEM of a rebinned sinogram stack.

    Parameters
    ----------
    counts : numpy.ndarray
        (bins, planes) from :func:`sinogram_stack`.
    weights : torch.Tensor
        (bins, planes) from :func:`plane_weights`.
    background : numpy.ndarray, optional
        Expected additive counts (randoms), (bins, planes), e.g. :func:`uniform_randoms`.
    image_model : ImageModel, optional
        Kernel method and resolution model on ``grid`` (:mod:`recon.kernel`).

    Returns
    -------
    EMResult
        ``image`` (z, y, x) on ``grid``; voxels outside the transaxial FOV are zero.
    """
    mask = torch.as_tensor(grid.fov_mask(geometry.fov_radius_mm()).ravel(), device=device)
    result = osem_sinogram(
        torch.as_tensor(counts, dtype=torch.float32, device=device), system.matrix,
        weights.to(device), mask[:, None], settings.iterations,
        view_subsets(geometry.shape, settings.subsets),
        None if background is None else torch.as_tensor(background, dtype=torch.float32,
                                                         device=device),
        image_model=image_model)
    result.image = result.image.T.reshape(grid.shape)
    return result


def reconstruct_oblique(counts: np.ndarray, oblique: ObliqueGeometry, max_ring_difference: int,
                        geometry: SinogramGeometry, grid: ImageGrid, settings: EMSettings,
                        mu_per_mm: np.ndarray | None = None,
                        device: torch.device | str = "cpu",
                        background: np.ndarray | None = None,
                        callback: Callable[[int, np.ndarray], None] | None = None,
                        image_model: ImageModel | None = None) -> EMResult:
    """OSEM of a rebinned sinogram stack with the oblique SSRB model (:mod:`recon.oblique`).

    Parameters
    ----------
    counts : numpy.ndarray
        (bins, planes) from :func:`sinogram_stack`.
    mu_per_mm : numpy.ndarray, optional
        The mu map on ``grid`` (:func:`recon.attenuation.attenuation_map`), (z, y, x).
    background : numpy.ndarray, optional
        Expected additive counts, (bins, planes).
    callback : callable, optional
        ``callback(iteration, image (z, y, x) numpy)`` after each iteration.
    image_model : ImageModel, optional
        Kernel method and resolution model on ``grid`` (:mod:`recon.kernel`).

    Returns
    -------
    EMResult
        ``image`` (z, y, x) on ``grid``; voxels outside the transaxial FOV are zero.
    """
    hook = None
    if callback is not None:
        def hook(it, x):
            callback(it, x.T.reshape(grid.shape).cpu().numpy())
    subsets = view_subsets(geometry.shape, settings.subsets)
    model = ObliqueModel(oblique, max_ring_difference, subsets, geometry.valid().ravel(),
                         grid.shape[0], mu_per_mm, device)
    mask = torch.as_tensor(grid.fov_mask(geometry.fov_radius_mm()).ravel(), device=device)
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    result = osem_oblique(as_t(counts), model, mask, settings.iterations,
                          None if background is None else as_t(background), hook,
                          image_model)
    result.image = result.image.T.reshape(grid.shape)
    return result
