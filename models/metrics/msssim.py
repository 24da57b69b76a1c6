"""SSIM and multi-scale SSIM (Wang et al. 2003, 2004), for images in [-1, 1].

SSIM at one scale: with a Gaussian window (``window_px`` taps, ``sigma_px``) applied as a
*valid* convolution (no padding: only windows inside the image count), local means, variances
and covariance give ``l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)`` and
``cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2)``, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with
the data range ``L``; SSIM is the mean of ``l * cs``. This is scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
(it filters with reflection, then crops the border: the same windows).

MS-SSIM: ``prod_{j < M} relu(cs_j)^{w_j} * relu(SSIM_M)^{w_M}``, the images halved by 2x2
averaging between scales (odd sizes padded), as pytorch-msssim computes it. The standard
setting (5 scales, 11 px window, weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333) needs images
of at least 161 px; :func:`check_scales` refuses a setting whose coarsest scale is smaller
than the window, and :func:`scale_weights` takes the first ``scales`` standard weights,
renormalised to sum to 1 (3 scales at 64 px: 0.0707, 0.4507, 0.4736).

**Data range.** Images of this project are in [-1, 1]: ``L = 2``, and they are shifted to
[0, 2] first (``x + 1``), because the luminance term assumes non-negative intensities (with
negative means it can turn negative, and SSIM is not shift-invariant). pytorch-msssim
defaults to 255 and torchmetrics infers the range from the data; both are wrong here unless
told.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Wang et al. 2003's weights of the five scales, finest first.
STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DATA_RANGE = 2.0
K1, K2 = 0.01, 0.03


def gaussian_window(window_px: int, sigma_px: float) -> torch.Tensor:
    """Normalised 1D Gaussian of ``window_px`` taps, float64."""
    x = torch.arange(window_px, dtype=torch.float64) - (window_px - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma_px**2))
    return g / g.sum()


def scale_weights(scales: int) -> tuple[float, ...]:
    """The first ``scales`` standard weights, renormalised to sum to 1."""
    if not 1 <= scales <= len(STANDARD_WEIGHTS):
        raise ValueError(f"MS-SSIM scales must be 1 to 5, got {scales}")
    w = np.asarray(STANDARD_WEIGHTS[:scales])
    return tuple((w / w.sum()).tolist())


def check_scales(size_px: int, scales: int, window_px: int) -> None:
    """Every scale must hold at least one full window: ``size / 2^(scales-1) >= window``."""
    coarsest = size_px
    for _ in range(scales - 1):
        coarsest = (coarsest + 1) // 2
    if coarsest < window_px:
        raise ValueError(f"MS-SSIM with {scales} scales and an {window_px} px window needs "
                         f"images of at least {window_px * 2 ** (scales - 1)} px; these are "
                         f"{size_px} px (use fewer scales or a smaller window)")


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of (N, 1, H, W)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float
             ) -> tuple[torch.Tensor, torch.Tensor]:
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x**2
    syy = _filter(y * y, g) - mu_y**2
    sxy = _filter(x * y, g) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def _prepare(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"SSIM of images of shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() == 2:
        x, y = x[None], y[None]
    if x.dim() == 3:
        x, y = x[:, None], y[:, None]
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("SSIM of images holding NaN or infinite values")
    return x + 1.0, y + 1.0  # [-1, 1] -> [0, 2]


def ssim(x, y, window_px: int = 11, sigma_px: float = 1.5,
         data_range: float = DATA_RANGE) -> torch.Tensor:
    """Single-scale SSIM of image pairs, (N,) float64; images in [-1, 1], (N, H, W) or
    (N, 1, H, W)."""
    x, y = _prepare(x, y)
    check_scales(min(x.shape[-2:]), 1, window_px)
    return _ssim_cs(x, y, gaussian_window(window_px, sigma_px), data_range)[0]


def ms_ssim(x, y, scales: int = 5, window_px: int = 11, sigma_px: float = 1.5,
            data_range: float = DATA_RANGE, weights: tuple[float, ...] | None = None
            ) -> torch.Tensor:
    """MS-SSIM of image pairs, (N,) float64 (module docstring)."""
    x, y = _prepare(x, y)
    check_scales(min(x.shape[-2:]), scales, window_px)
    w = torch.tensor(weights if weights is not None else
                     (STANDARD_WEIGHTS if scales == 5 else scale_weights(scales)),
                     dtype=torch.float64)
    if len(w) != scales:
        raise ValueError(f"{len(w)} MS-SSIM weights for {scales} scales")
    g = gaussian_window(window_px, sigma_px)
    factors = []
    for level in range(scales):
        s, cs = _ssim_cs(x, y, g, data_range)
        if level < scales - 1:
            factors.append(torch.relu(cs))
            pad = [dim % 2 for dim in x.shape[2:]]
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
        else:
            factors.append(torch.relu(s))
    return torch.prod(torch.stack(factors) ** w[:, None], dim=0)


def pair_indices(n_a: int, n_b: int | None, n_pairs: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random pairs: distinct images of one set (``n_b`` None) or one image of
    each of two sets, drawn with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    if n_b is None:
        if n_a < 2:
            raise ValueError("MS-SSIM diversity needs at least 2 images")
        i = rng.integers(0, n_a, n_pairs)
        j = (i + rng.integers(1, n_a, n_pairs)) % n_a  # never the same image
        return i, j
    return rng.integers(0, n_a, n_pairs), rng.integers(0, n_b, n_pairs)


def mean_ms_ssim(a: np.ndarray, b: np.ndarray | None, n_pairs: int, seed: int,
                 **kwargs) -> tuple[float, float]:
    """Mean and standard error of MS-SSIM over random pairs: within ``a`` (diversity, as
    Odena et al.'s ACGAN: lower is more diverse) or between ``a`` and ``b``."""
    i, j = pair_indices(len(a), None if b is None else len(b), n_pairs, seed)
    values = ms_ssim(a[i], (a if b is None else b)[j], **kwargs).numpy()
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
