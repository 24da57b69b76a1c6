"""MLEM and OSEM for rebinned sinogram stacks and for list-mode events.

Model. Expected counts ``ybar = w * (A x) + r``: ``A`` the geometric system matrix
(intersection lengths, mm), ``w`` per-bin multiplicative factors (attenuation
``exp(-A mu)``, SSRB plane multiplicity, 0 for invalid bins), ``r`` an additive background
(randoms; may be zero). The EM update over a subset ``S`` of the data is
``x <- x / (A_S^T w_S) * A_S^T (w_S y_S / ybar_S)``; one subset is MLEM. Voxels outside the
field-of-view mask, and voxels no LOR of the subset sees, are held at zero (masked, never
clamped to a floor).

The Poisson log-likelihood ``sum(y log ybar - ybar)`` (the constant ``-log y!`` dropped) is
recorded for the image after every full iteration. In list mode it is
``sum_events log ybar_e - sum_j s_j x_j`` with ``s`` the sensitivity image, the same number
for the same events.

OSEM subsets: interleaved views for sinograms (view ``v`` goes to subset ``v mod n``), every
``n``-th event for list mode, with the sensitivity of a subset taken as ``s / n``.

Image model (:class:`recon.kernel.ImageModel`): with the kernel method the unknowns are the
coefficients ``alpha`` of the image ``x = K alpha``, and with a resolution model the projector
sees ``G x``; the update is the same EM with ``A G K`` for ``A``:
``alpha <- alpha / (K^T G^T A_S^T w_S) * K^T G^T A_S^T (w_S y_S / ybar_S)``. The image
returned (and handed to callbacks) is ``x = K alpha``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import torch
from tqdm import tqdm

from pipeline.interrupts import raise_if_stopped
from recon.kernel import ImageModel
from recon.projector import Projector, TOFKernel
from recon.system_matrix import to_torch_csr

log = logging.getLogger(__name__)


@dataclass
class EMResult:
    """Image and diagnostics of an EM reconstruction.

    Attributes
    ----------
    image : torch.Tensor
        Sinogram mode: (pixels, planes); list mode: (z, y, x).
    loglik : list of float
        Poisson log-likelihood after each iteration.
    """

    image: torch.Tensor
    loglik: list[float] = field(default_factory=list)


def _loglik(y: torch.Tensor, ybar: torch.Tensor) -> float:
    seen = ybar > 0
    return float(torch.where(seen, y * torch.log(torch.where(seen, ybar, 1.0)), 0.0).sum()
                 - ybar.sum())


#: Expected counts below this share of a subset's largest are treated as zero (module note in
#: :func:`measured_over_expected`).
EXPECTED_FLOOR = 1e-10


def measured_over_expected(counts: torch.Tensor | float, ybar: torch.Tensor) -> torch.Tensor:
    """``counts / ybar`` where the model expects counts, 0 elsewhere (EM's ratio).

    An expectation below ``EXPECTED_FLOOR`` of the largest one counts as none: in float32 its
    reciprocal overflows (a 3D list-mode reconstruction of trues saw an event with ybar
    2.2e-40 once its LOR's voxels had gone cold: an infinite ratio, then NaN voxels), and an
    event the model gives no chance cannot be explained by raising a voxel either.
    """
    if ybar.numel() == 0:
        return torch.zeros_like(ybar)
    expected = ybar > EXPECTED_FLOOR * ybar.max()
    return torch.where(expected, counts / torch.where(expected, ybar, 1.0), 0.0)


def _product(matrix: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Sparse matrix times dense columns (n, planes); a matrix-vector product for one plane
    (several times faster than a one-column matrix product on the CPU)."""
    if columns.shape[1] == 1:
        return torch.mv(matrix, columns.reshape(-1)).unsqueeze(1)
    return matrix @ columns


def image_maps(model: ImageModel | None, columns: bool
               ) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """``(K, G K, K^T G^T)`` of an image model as functions on images stored as
    (pixels, planes) (``columns``) or (z, y, x); identities without a model."""
    if model is None:
        same = lambda x: x  # noqa: E731
        return same, same, same
    if columns:
        return model.image_columns, model.forward_columns, model.back_columns
    return model.image, model.forward, model.back


def _progress(n: int, what: str) -> Iterator[int]:
    """Iterations 0..n-1 with a progress bar; each is a safe point for a stop signal
    (:func:`pipeline.interrupts.raise_if_stopped`)."""
    for it in tqdm(range(n), desc=what, unit="it", disable=None, leave=False):
        raise_if_stopped()
        yield it


def view_subsets(shape: tuple[int, int], n_subsets: int) -> list[np.ndarray]:
    """Flat bin indices (views x radial) of each subset of interleaved views."""
    views, radial = shape
    if not 1 <= n_subsets <= views:
        raise ValueError(f"subsets must be between 1 and the number of views ({views}), "
                         f"got {n_subsets}")
    bins = np.arange(views * radial).reshape(views, radial)
    return [bins[q::n_subsets].ravel() for q in range(n_subsets)]


def osem_sinogram(counts: torch.Tensor, matrix: scipy.sparse.csr_matrix, weights: torch.Tensor,
                  mask: torch.Tensor, iterations: int, subsets: list[np.ndarray],
                  background: torch.Tensor | None = None,
                  callback: Callable[[int, torch.Tensor], None] | None = None,
                  image_model: ImageModel | None = None) -> EMResult:
    """OSEM (MLEM with one subset) on a stack of sinograms sharing one system matrix.

    Parameters
    ----------
    counts, weights : torch.Tensor
        Measured counts and multiplicative factors ``w``, (bins, planes).
    matrix : scipy.sparse.csr_matrix
        (bins, pixels) system matrix, mm.
    mask : torch.Tensor
        bool (pixels,) or (pixels, planes): voxels allowed to be non-zero.
    iterations : int
    subsets : list of numpy.ndarray
        Bin indices of each subset (:func:`view_subsets`).
    background : torch.Tensor, optional
        Additive expected counts ``r``, (bins, planes).
    callback : callable, optional
        Called as ``callback(iteration, image)`` after each iteration.
    image_model : ImageModel, optional
        Kernel method and resolution model (module docstring); the planes are its image.

    Returns
    -------
    EMResult
        ``image`` (pixels, planes), starting from a uniform image inside the mask.
    """
    device, dtype = counts.device, counts.dtype
    k_image, k_forward, k_back = image_maps(image_model, columns=True)
    if background is None:
        background = torch.zeros_like(counts)
    n_planes = counts.shape[1]
    mask = mask.reshape(matrix.shape[1], -1).expand(-1, n_planes)
    blocks = []
    for rows in subsets:
        sub = matrix[rows]
        a = to_torch_csr(sub, device, dtype)
        at = to_torch_csr(sub.T.tocsr(), device, dtype)
        idx = torch.as_tensor(rows, device=device)
        w = weights[idx]
        sens = k_back(_product(at, w))
        seen = mask & (sens > 0)
        inv_sens = torch.where(seen, 1.0 / torch.where(seen, sens, 1.0), 0.0)
        blocks.append((a, at, idx, w, inv_sens))
    full_a = blocks[0][0] if len(subsets) == 1 else to_torch_csr(matrix, device, dtype)
    # Voxels outside the mask (or unseen) start at zero and stay there: inv_sens is 0.
    x = torch.where(mask, 1.0, 0.0).to(dtype)

    def expected(alpha):
        return weights * _product(full_a, k_forward(alpha)) + background

    result = EMResult(x)
    for it in _progress(iterations, "EM"):
        for a, at, idx, w, inv_sens in blocks:
            if len(blocks) == 1:
                yb = expected(x)
                if it > 0:
                    result.loglik.append(_loglik(counts, yb))
                y = counts
            else:
                yb = w * _product(a, k_forward(x)) + background[idx]
                y = counts[idx]
            ratio = measured_over_expected(y, yb)
            x = x * k_back(_product(at, w * ratio)) * inv_sens
        if len(blocks) > 1:
            result.loglik.append(_loglik(counts, expected(x)))
        if callback is not None:
            callback(it, k_image(x))
    if len(blocks) == 1:
        result.loglik.append(_loglik(counts, expected(x)))
    result.image = k_image(x)
    return result


def osem_listmode(projector: Projector, p1: torch.Tensor, p2: torch.Tensor,
                  sensitivity: torch.Tensor, mask: torch.Tensor, iterations: int,
                  n_subsets: int = 1, tof_mm: torch.Tensor | None = None,
                  kernel: TOFKernel | None = None,
                  background: torch.Tensor | None = None,
                  image_model: ImageModel | None = None) -> EMResult:
    """List-mode OSEM (MLEM with one subset), optional TOF.

    Parameters
    ----------
    projector : Projector
    p1, p2 : torch.Tensor
        Event LOR end points (x, y, z), mm, (n, 3).
    sensitivity : torch.Tensor
        ``A^T w`` over every LOR the scanner can record, (z, y, x).
    mask : torch.Tensor
        bool (z, y, x).
    tof_mm, kernel :
        TOF positions (n,) and kernel; both or neither.
    background : torch.Tensor, optional
        Expected additive counts (randoms, scatter) of each event's LOR divided by its
        attenuation factor, in the units of the forward projection (per mm along the LOR with
        TOF), (n,): ``ybar_e = a_e ((A x)_e + b_e)``, the ``a_e`` cancelling in the update.
        The log-likelihood then omits the constant total background.
    image_model : ImageModel, optional
        Kernel method and resolution model (module docstring).

    Returns
    -------
    EMResult
        ``image`` (z, y, x).
    """
    n = p1.shape[0]
    k_image, k_forward, k_back = image_maps(image_model, columns=False)
    alpha_sensitivity = k_back(sensitivity)
    seen = mask & (alpha_sensitivity > 0)
    x = torch.where(seen, 1.0, 0.0).to(dtype=projector.dtype, device=projector.device)
    if n == 0:
        return EMResult(torch.zeros_like(x), [0.0] * iterations)
    groups = [torch.arange(q, n, n_subsets, device=p1.device) for q in range(n_subsets)]
    safe_sens = torch.where(seen, alpha_sensitivity, 1.0)
    result = EMResult(x)

    def loglik(ybar, image):
        return float(torch.log(ybar[ybar > 0]).sum() - (sensitivity * image).sum())

    def forward(image, idx):
        tof = None if tof_mm is None else tof_mm[idx]
        ybar = projector.forward(image, p1[idx], p2[idx], tof, kernel)
        return ybar if background is None else ybar + background[idx]

    for it in _progress(iterations, "list-mode EM"):
        for idx in groups:
            ybar = forward(k_forward(x), idx)
            if n_subsets == 1 and it > 0:
                result.loglik.append(loglik(ybar, k_forward(x)))
            ratio = measured_over_expected(1.0, ybar)
            tof = None if tof_mm is None else tof_mm[idx]
            back = k_back(projector.back(ratio, p1[idx], p2[idx], tof, kernel))
            x = torch.where(seen, x * back * (n_subsets / safe_sens), 0.0)
        if n_subsets > 1 or it == iterations - 1:
            seen_image = k_forward(x)
            result.loglik.append(loglik(forward(seen_image, slice(None)), seen_image))
    result.image = k_image(x)
    return result
