"""Attenuation factors ``exp(-int mu dl)`` of LORs through the phantom's 511 keV map.

The mu map stays on the phantom's own grid (no resampling): 3D LORs are projected through
it with the Siddon projector; the direct-plane LORs of rebinned sinograms use the 2D system
matrix of the phantom's transaxial grid on the mu map interpolated linearly along z to the
plane (the rebinning planes fall half-way between the phantom's 2 mm slices).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recon.grid import ImageGrid
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix, to_torch_csr


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
