"""The kernel method: the image represented as ``x = K alpha`` with ``K`` built from the mu map.

Wang and Qi (IEEE TMI 34, 2015, "PET image reconstruction using kernel method") write each
voxel's activity as a weighted sum of coefficients ``alpha`` over its neighbours, the weights
``K_jk`` a Gaussian of the distance between the two voxels' features in a prior image; EM on
``alpha`` is MLEM with the system matrix ``A K``. STIR ships it as KOSMAPOSL (Deidda et al.,
Inverse Problems 35, 2019), with an anatomical (MR) image as the prior. Here the prior image
is the part's mu map, the same CT-like map the attenuation correction already assumes known:
voxels of one material (solution, steel, air, aluminium) pool their counts, voxels across a
material boundary do not, so a dense inclusion or a bubble keeps its edge while the noise of
the solution around it averages out. Activity that has no mu contrast (a hot spot inside
uniform solution) is blurred by the neighbourhood instead; the README says when to use it.

``K_jk = g_jk / sum_k g_jk`` over the neighbours ``k`` of ``j`` within ``window`` voxels
(a box of ``2 window + 1`` per axis) that lie in the field-of-view mask, with

``g_jk = exp(-(mu_j - mu_k)^2 / (2 (sigma_mu s)^2)) exp(-|r_j - r_k|^2 / (2 sigma_mm^2))``,

``s`` the standard deviation of the mu map inside the mask (STIR's normalisation of the
anatomical features), ``r`` voxel centres in mm. Rows sum to one, so a uniform ``alpha``
is a uniform image.

``K`` is never a matrix here: it is stored as one weight image per neighbour offset,
(offsets, z, y, x), and applied (and transposed) by shifted multiply-adds: with the default
window (2, 4, 4), 5 x 9 x 9 = 405 products of the image size per application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recon.projector import FWHM_PER_SIGMA

#: ``recon.kernel`` values.
KERNEL_METHODS = ("none", "mu")
#: Kernel weights ``g`` below this (the voxel's own weight is 1) are set to zero.
WEIGHT_FLOOR = 1e-6


@dataclass(frozen=True)
class KernelSettings:
    """How ``K`` is built (``recon.kernel*`` keys).

    Attributes
    ----------
    method : str
        ``none`` (plain EM) or ``mu`` (kernel from the mu map).
    window : tuple of int
        Neighbourhood half-width (z, y, x), voxels.
    sigma_mu : float
        Width of the feature Gaussian, in standard deviations of the mu map.
    sigma_mm : float
        Width of the spatial Gaussian, mm.
    """

    method: str = "none"
    window: tuple[int, int, int] = (2, 4, 4)
    sigma_mu: float = 0.2
    sigma_mm: float = 8.0

    @classmethod
    def from_config(cls, recon_cfg: dict[str, Any]) -> KernelSettings:
        """From the ``recon`` section (keys ``kernel``, ``kernel_window``,
        ``kernel_sigma_mu``, ``kernel_sigma_mm``)."""
        method = str(recon_cfg.get("kernel", "none"))
        if method not in KERNEL_METHODS:  # a spec that did not come through the validator
            raise ValueError(f"recon.kernel must be one of {', '.join(KERNEL_METHODS)}, got "
                             f"{method!r}")
        window = recon_cfg.get("kernel_window", list(cls.window))
        return cls(method, tuple(int(w) for w in window),
                   float(recon_cfg.get("kernel_sigma_mu", cls.sigma_mu)),
                   float(recon_cfg.get("kernel_sigma_mm", cls.sigma_mm)))

    @property
    def enabled(self) -> bool:
        return self.method != "none"


def _offsets(window: tuple[int, int, int]) -> np.ndarray:
    """Every neighbour offset (dz, dy, dx) within the window, (n, 3)."""
    axes = [np.arange(-w, w + 1) for w in window]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _window_slices(offset: np.ndarray, window: tuple[int, int, int],
                   shape: tuple[int, int, int]) -> tuple[slice, ...]:
    """Slices of the padded image holding each voxel's neighbour at ``offset``."""
    return tuple(slice(w + d, w + d + n) for d, w, n in zip(offset, window, shape, strict=True))


class ImageKernel:
    """``K`` of the kernel method on one image grid (module docstring).

    Parameters
    ----------
    prior : numpy.ndarray
        The prior image (the mu map on the reconstruction grid), (z, y, x), 1/mm.
    mask : numpy.ndarray
        bool (z, y, x): voxels of the image (the field of view); others are 0 in ``K alpha``.
    voxel_size_mm : sequence of float
        (z, y, x), mm.
    settings : KernelSettings
    """

    def __init__(self, prior: np.ndarray, mask: np.ndarray, voxel_size_mm, settings: KernelSettings,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        prior = np.asarray(prior, dtype=np.float64)
        mask = np.asarray(mask, dtype=bool)
        if prior.shape != mask.shape or prior.ndim != 3:
            raise ValueError(f"kernel prior image {prior.shape} and mask {mask.shape} must be "
                             "the same 3D shape")
        if not np.all(np.isfinite(prior)):
            raise ValueError("kernel prior image (mu map) holds NaN or infinity")
        if min(settings.window) < 0 or settings.sigma_mu <= 0 or settings.sigma_mm <= 0:
            raise ValueError(f"kernel settings must be a window >= 0 and positive widths, got "
                             f"{settings}")
        self.shape = prior.shape
        self.window = tuple(int(w) for w in settings.window)
        spread = float(prior[mask].std()) if mask.any() else 0.0
        feature_width = settings.sigma_mu * (spread if spread > 0 else 1.0)
        pad = [(w, w) for w in self.window]
        prior_pad = np.pad(prior, pad)
        mask_pad = np.pad(mask, pad)
        self.offsets = _offsets(self.window)
        # Built in the stored precision: 405 float32 offsets of the default image are 0.2 GB.
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        weights = np.empty((len(self.offsets), *self.shape), np_dtype)
        for n, offset in enumerate(self.offsets):  # loop over the few offsets, not voxels
            where = _window_slices(offset, self.window, self.shape)
            distance2 = float(np.sum((offset * np.asarray(voxel_size_mm, float)) ** 2))
            g = np.exp(-(prior - prior_pad[where]) ** 2 / (2 * feature_width ** 2)
                       - distance2 / (2 * settings.sigma_mm ** 2))
            # Negligible weights become exact zeros (before the rows are normalised, so they
            # still sum to one): as float32 denormals they slow every multiply-add 50 times.
            weights[n] = np.where(mask & mask_pad[where] & (g >= WEIGHT_FLOOR), g, 0.0)
        total = weights.sum(axis=0, dtype=np.float64)
        weights /= np.where(total > 0, total, 1.0).astype(np_dtype)
        self.weights = torch.as_tensor(weights, dtype=dtype, device=device)
        self._slices = [_window_slices(o, self.window, self.shape) for o in self.offsets]
        # K^T gathers too: (K^T v)_k = sum over offsets o of W[o]_{k-o} v_{k-o}, read from the
        # padded weights and image at -o (a scatter-add into strided views is far slower).
        self._padded_weights = torch.stack([self._pad(w) for w in self.weights])
        self._mirror = [_window_slices(-o, self.window, self.shape) for o in self.offsets]

    def _pad(self, image: torch.Tensor) -> torch.Tensor:
        wz, wy, wx = self.window
        return torch.nn.functional.pad(image, (wx, wx, wy, wy, wz, wz))

    def apply(self, alpha: torch.Tensor) -> torch.Tensor:
        """``K alpha``: the image of coefficients ``alpha``, both (z, y, x)."""
        padded = self._pad(alpha)
        out = torch.zeros_like(alpha)
        for w, where in zip(self.weights, self._slices, strict=True):
            out += w * padded[where]
        return out

    def adjoint(self, image: torch.Tensor) -> torch.Tensor:
        """``K^T image``, both (z, y, x)."""
        padded = self._pad(image)
        out = torch.zeros_like(image)
        for w, where in zip(self._padded_weights, self._mirror, strict=True):
            out += w[where] * padded[where]
        return out



class GaussianPSF:
    """Image-space resolution model ``G``: an isotropic Gaussian of ``fwhm_mm`` applied as
    three 1D convolutions (truncated at 3 sigma, zero outside the image), so ``G`` is a
    symmetric matrix and its own adjoint (CASToR's image convolution, STIR's PSF model).

    Parameters
    ----------
    fwhm_mm : float
        Positive.
    voxel_size_mm : sequence of float
        (z, y, x), mm.
    """

    def __init__(self, fwhm_mm: float, voxel_size_mm, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        if not fwhm_mm > 0:
            raise ValueError(f"PSF FWHM must be positive, got {fwhm_mm}")
        sigma_mm = fwhm_mm / FWHM_PER_SIGMA
        self.taps = []
        for size in voxel_size_mm:
            half = max(int(np.ceil(3 * sigma_mm / float(size))), 1)
            t = np.arange(-half, half + 1) * float(size)
            g = np.exp(-t ** 2 / (2 * sigma_mm ** 2))
            self.taps.append(torch.as_tensor(g / g.sum(), dtype=dtype, device=device))

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """``G image`` (= ``G^T image``), (z, y, x)."""
        out = image
        for axis, taps in enumerate(self.taps):
            moved = out.movedim(axis, -1)
            flat = moved.reshape(-1, 1, moved.shape[-1])
            conv = torch.nn.functional.conv1d(flat, taps.view(1, 1, -1),
                                              padding=taps.numel() // 2)
            out = conv.reshape(moved.shape).movedim(-1, axis)
        return out

    adjoint = apply


class ImageModel:
    """The image side of the system model: coefficients ``alpha`` -> image ``x = K alpha``
    (kernel method, or ``x = alpha``) -> what the projector sees, ``G x`` (PSF, or ``x``).

    ``image`` gives ``x``, ``forward`` ``G K alpha``, ``back`` ``K^T G^T v``; the ``*_columns``
    forms take images stored as (pixels, planes), the rebinned models' layout (the (z, y, x)
    image transposed).
    """

    def __init__(self, shape: tuple[int, int, int], kernel: ImageKernel | None = None,
                 psf: GaussianPSF | None = None) -> None:
        self.shape = tuple(shape)
        self.kernel = kernel
        self.psf = psf

    def image(self, alpha: torch.Tensor) -> torch.Tensor:
        return alpha if self.kernel is None else self.kernel.apply(alpha)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        x = self.image(alpha)
        return x if self.psf is None else self.psf.apply(x)

    def back(self, v: torch.Tensor) -> torch.Tensor:
        v = v if self.psf is None else self.psf.adjoint(v)
        return v if self.kernel is None else self.kernel.adjoint(v)

    def _columns(self, op, columns: torch.Tensor) -> torch.Tensor:
        return op(columns.T.reshape(self.shape)).reshape(self.shape[0], -1).T

    def image_columns(self, alpha: torch.Tensor) -> torch.Tensor:
        return alpha if self.kernel is None else self._columns(self.image, alpha)

    def forward_columns(self, alpha: torch.Tensor) -> torch.Tensor:
        return self._columns(self.forward, alpha)

    def back_columns(self, v: torch.Tensor) -> torch.Tensor:
        return self._columns(self.back, v)
