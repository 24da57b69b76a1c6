"""Siddon ray-driven projector in torch: one sampling path for forward, back projection and
the sparse system matrix, with an optional time-of-flight kernel.

For each line of response (LOR) from ``p1`` to ``p2`` :func:`siddon_segments` finds the
parameters ``alpha`` in [0, 1] where the segment crosses the grid's voxel planes (Siddon 1985),
sorts them, and turns each gap into a (voxel, length) pair: the exact intersection length of
the LOR with that voxel. Forward projection sums ``image[voxel] * length * kernel`` over a LOR;
back projection adds ``value * length * kernel`` into the voxels with ``index_add_``. The two
use the very same pairs, so they are exact adjoints, and a uniform image projects to the exact
chord length through the grid box.

The work is vectorised over LORs: each LOR gets the same number of candidate crossings
(``nx + ny + nz + 5``); crossings outside the part of the LOR inside the box collapse onto its
ends and give zero-length segments. Chunks of LORs bound the memory (about
``chunk * (nx + ny + nz) * 40`` bytes).

Time of flight. ``tof_mm`` is the signed position of the annihilation along the LOR measured
from its midpoint towards ``p2``: ``tof_mm = (time1_ns - time2_ns) * c / 2`` (photon 1
arriving later means the annihilation was nearer crystal 2). The kernel of a segment whose
midpoint sits at ``s`` is the Gaussian of standard deviation ``sigma_mm`` averaged over a TOF
bin of width ``bin_mm`` centred on ``tof_mm``:
``[Phi((s - tof + w/2) / sigma) - Phi((s - tof - w/2) / sigma)] / w`` (the density itself for
``w = 0``), so that summing ``w * kernel`` over bins that tile the LOR gives back the non-TOF
projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recon.grid import ImageGrid

#: Half the speed of light, mm/ps (DESIGN.md): TOF difference -> position along the LOR.
HALF_C_MM_PER_PS = 0.149896229
#: Same in mm/ns.
HALF_C_MM_PER_NS = HALF_C_MM_PER_PS * 1000.0

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class TOFKernel:
    """Gaussian TOF kernel along the LOR.

    Attributes
    ----------
    sigma_mm : float
        Standard deviation along the LOR, mm (``fwhm_ps * c/2 / 2.355``).
    bin_mm : float
        Width of the TOF bin the kernel is averaged over, mm (0: the Gaussian density).
    """

    sigma_mm: float
    bin_mm: float = 0.0

    @classmethod
    def from_fwhm_ps(cls, fwhm_ps: float, bin_mm: float = 0.0) -> TOFKernel:
        """Kernel for a coincidence time resolution (FWHM of ``time1 - time2``) in ps."""
        return cls(fwhm_ps * HALF_C_MM_PER_PS / FWHM_PER_SIGMA, bin_mm)

    def weights(self, s_mm: torch.Tensor, tof_mm: torch.Tensor) -> torch.Tensor:
        """Kernel at positions ``s_mm`` (n, m) for LORs with TOF positions ``tof_mm`` (n,)."""
        u = (s_mm - tof_mm[:, None]) / self.sigma_mm
        if self.bin_mm > 0:
            half = 0.5 * self.bin_mm / self.sigma_mm
            return (torch.special.ndtr(u + half) - torch.special.ndtr(u - half)) / self.bin_mm
        return torch.exp(-0.5 * u * u) / (self.sigma_mm * math.sqrt(2.0 * math.pi))


def _as_tensor(array, device, dtype) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(array), device=device, dtype=dtype)


def siddon_segments(p1: torch.Tensor, p2: torch.Tensor, grid: ImageGrid
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel intersections of LORs (module docstring).

    Parameters
    ----------
    p1, p2 : torch.Tensor
        LOR end points (x, y, z), mm, shape (n, 3), floating point.
    grid : ImageGrid

    Returns
    -------
    voxel : torch.Tensor
        Flat voxel index into the (z, y, x) image, int32, shape (n, m).
    length_mm : torch.Tensor
        Intersection length with that voxel (0 for padding), mm, shape (n, m).
    s_mm : torch.Tensor
        Position of the segment's midpoint from the LOR midpoint towards ``p2``, mm, (n, m).
    """
    device, dtype = p1.device, p1.dtype
    q1, q2 = p1[:, [2, 1, 0]], p2[:, [2, 1, 0]]  # to the grid's (z, y, x) order
    d = q2 - q1
    n = q1.shape[0]
    lower = torch.as_tensor(grid.lower_mm, device=device, dtype=dtype)
    upper = torch.as_tensor(grid.upper_mm, device=device, dtype=dtype)
    voxel = torch.as_tensor(grid.voxel_size_mm, device=device, dtype=dtype)
    a_min = torch.zeros(n, device=device, dtype=dtype)
    a_max = torch.ones(n, device=device, dtype=dtype)
    crossings, strides = [], []
    stride = (grid.shape[1] * grid.shape[2], grid.shape[2], 1)
    for axis, n_axis in enumerate(grid.shape):  # three axes, vectorised over LORs
        planes = lower[axis] + voxel[axis] * torch.arange(n_axis + 1, device=device, dtype=dtype)
        da = d[:, axis : axis + 1]
        parallel = da == 0
        alpha = (planes[None, :] - q1[:, axis : axis + 1]) / torch.where(parallel, 1.0, da)
        lo = torch.minimum(alpha[:, 0], alpha[:, -1])
        hi = torch.maximum(alpha[:, 0], alpha[:, -1])
        # A LOR parallel to the planes is inside the slab everywhere or nowhere.
        inside = (q1[:, axis] > lower[axis]) & (q1[:, axis] < upper[axis])
        flat = parallel[:, 0]
        lo = torch.where(flat, torch.where(inside, 0.0, 2.0).to(dtype), lo)
        hi = torch.where(flat, torch.where(inside, 1.0, -1.0).to(dtype), hi)
        a_min = torch.maximum(a_min, lo)
        a_max = torch.minimum(a_max, hi)
        crossings.append(torch.where(parallel, 2.0, alpha).to(dtype))
        # Crossing a plane of this axis moves the flat voxel index by +-stride.
        strides.append((torch.sign(da) * stride[axis]).int().expand(-1, n_axis + 1))
    a_max = torch.maximum(a_max, a_min)  # LORs that miss the box: one empty interval
    alphas = torch.cat([*crossings, a_min[:, None], a_max[:, None]], dim=1)
    inner = (alphas > a_min[:, None]) & (alphas < a_max[:, None])
    steps = torch.cat([*strides, torch.zeros(n, 2, device=device, dtype=torch.int32)], dim=1)
    steps.mul_(inner)
    # Entry voxel: the voxel of the midpoint of the first non-empty segment (robust when
    # the LOR enters through an edge or corner).
    first = torch.where(inner, alphas, a_max[:, None]).min(dim=1).values
    entry = q1 + (0.5 * (a_min + first))[:, None] * d
    shape = torch.as_tensor(grid.shape, device=device)
    entry_index = torch.minimum(torch.clamp(torch.floor((entry - lower) / voxel).long(),
                                            min=0), shape - 1)
    entry_flat = (entry_index * torch.as_tensor(stride, device=device)).sum(dim=1)
    alphas = torch.clamp(alphas, a_min[:, None], a_max[:, None])
    alphas, order = torch.sort(alphas, dim=1)
    flat_index = torch.cumsum(steps.gather(1, order)[:, :-1], dim=1, dtype=torch.int32)
    flat_index.add_(entry_flat[:, None].int())
    # Rounding at an exit corner can step one voxel out on a segment of ~1e-7 mm.
    flat_index.clamp_(0, grid.n_voxels - 1)
    lor_mm = torch.linalg.vector_norm(d, dim=1)
    length = (alphas[:, 1:] - alphas[:, :-1]) * lor_mm[:, None]
    s_mm = (0.5 * (alphas[:, 1:] + alphas[:, :-1]) - 0.5) * lor_mm[:, None]
    return flat_index, length, s_mm


class Projector:
    """Forward and back projection of images along arbitrary LORs (chunked, TOF optional).

    Parameters
    ----------
    grid : ImageGrid
    device : torch.device or str
    dtype : torch.dtype
        float32 by default; the tests use float64 for exactness checks.
    chunk : int
        LORs per chunk (memory bound).
    """

    def __init__(self, grid: ImageGrid, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, chunk: int = 20000) -> None:
        self.grid = grid
        self.device = torch.device(device)
        self.dtype = dtype
        self.chunk = int(chunk)

    def _chunks(self, p1, p2, tof_mm, extra=None):
        p1 = _as_tensor(p1, self.device, self.dtype)
        p2 = _as_tensor(p2, self.device, self.dtype)
        if p1.shape != p2.shape or p1.ndim != 2 or p1.shape[1] != 3:
            raise ValueError(f"LOR end points must both be (n, 3), got {tuple(p1.shape)} and "
                             f"{tuple(p2.shape)}")
        tof = None if tof_mm is None else _as_tensor(tof_mm, self.device, self.dtype)
        for start in range(0, p1.shape[0], self.chunk):
            stop = start + self.chunk
            yield (start, stop, p1[start:stop], p2[start:stop],
                   None if tof is None else tof[start:stop],
                   None if extra is None else extra[start:stop])

    def _weights(self, a, b, tof, kernel):
        voxel, length, s_mm = siddon_segments(a, b, self.grid)
        if kernel is not None:
            if tof is None:
                raise ValueError("a TOF kernel needs the events' tof_mm")
            length = length * kernel.weights(s_mm, tof)
        return voxel, length

    def forward(self, image: torch.Tensor, p1, p2, tof_mm=None,
                kernel: TOFKernel | None = None) -> torch.Tensor:
        """Line integrals of ``image`` (z, y, x) along the LORs, shape (n,)."""
        flat = _as_tensor(image, self.device, self.dtype).reshape(-1)
        if flat.numel() != self.grid.n_voxels:
            raise ValueError(f"image has {flat.numel()} voxels, the grid {self.grid.shape}")
        n = len(p1)
        out = torch.zeros(n, device=self.device, dtype=self.dtype)
        for start, stop, a, b, tof, _ in self._chunks(p1, p2, tof_mm):
            voxel, weight = self._weights(a, b, tof, kernel)
            values = flat.index_select(0, voxel.reshape(-1)).reshape(voxel.shape)
            out[start:stop] = (values * weight).sum(dim=1)
        return out

    def back(self, values, p1, p2, tof_mm=None, kernel: TOFKernel | None = None
             ) -> torch.Tensor:
        """Back projection of one value per LOR into an image (z, y, x)."""
        values = _as_tensor(values, self.device, self.dtype).reshape(-1)
        out = torch.zeros(self.grid.n_voxels, device=self.device, dtype=self.dtype)
        for _, _, a, b, tof, v in self._chunks(p1, p2, tof_mm, values):
            voxel, weight = self._weights(a, b, tof, kernel)
            out.index_add_(0, voxel.reshape(-1), (weight * v[:, None]).reshape(-1))
        return out.reshape(self.grid.shape)

    def matrix_entries(self, p1, p2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-zero entries of the system matrix of the LORs (row = LOR, column = flat voxel).

        Returns
        -------
        row, column : numpy.ndarray
            int64 indices.
        length_mm : numpy.ndarray
            Intersection lengths, mm; a voxel may appear twice for one LOR (a tiny
            segment at a corner), which sparse constructors sum.
        """
        rows, cols, vals = [], [], []
        for start, _, a, b, _, _ in self._chunks(p1, p2, None):
            voxel, length, _ = siddon_segments(a, b, self.grid)
            keep = length > 0
            row = torch.arange(start, start + a.shape[0], device=self.device)[:, None]
            rows.append(row.expand_as(voxel)[keep].cpu().numpy())
            cols.append(voxel[keep].cpu().numpy())
            vals.append(length[keep].cpu().numpy())
        if not rows:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
