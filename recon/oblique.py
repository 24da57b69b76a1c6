"""Rebinned sinograms with every oblique LOR in the model (the ``oblique`` SSRB model).

Single-slice rebinning (:mod:`recon.sinogram`) histograms a coincidence between rings ``r1``
and ``r2`` into the direct plane ``k = r1 + r2``. The counts of a rebinned bin are then the
sum of the counts of its LORs, still Poisson, and their expectation is the sum of each LOR's
own expectation: ``ybar[b, k] = sum_d a_bkd sec_bd (A_d x)[b, k] + r[b, k]`` over the ring
differences ``d = r2 - r1`` of the plane, with ``a_bkd`` the LOR's attenuation factor,
``A_d`` its line integral through the 3D image and ``sec`` its obliqueness. Modelling this,
rather than putting the activity of every oblique LOR on the plane (the ``direct`` model,
:func:`recon.attenuation.rebinned_attenuation`), removes both the axial mispositioning of
activity and that of attenuation: a cold inclusion does not fill in with
``max_ring_difference``. It is the way compressed (spanned) data are reconstructed in fully
3D OSEM (each compressed bin projects all its LORs), taken to SSRB's single segment.

2.5D geometry (:class:`ObliqueGeometry`). An LOR from crystal ``a`` in ring ``r1`` to ``b`` in
ring ``r2`` crosses pixel ``j`` of the transaxial system matrix at fraction ``t_bj`` of its
length, at height ``z = z_k + (t_bj - 1/2) (z_r2 - z_r1)``, with length ``l_bj sec``. The image
is interpolated linearly in z there. Since the image planes are the rebinning planes, half a
ring pitch apart, the interpolation weights of a matrix entry depend on ``d`` only: each ring
difference is one sparse matrix over (pixel, plane shift) applied to all planes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch

from recon.grid import ImageGrid
from recon.kernel import ImageModel
from recon.mlem import EMResult, _loglik, _progress, image_maps, measured_over_expected
from recon.sinogram import SinogramGeometry
from recon.system_matrix import SystemMatrix2D, to_torch_csr


@dataclass(frozen=True)
class ObliqueGeometry:
    """The transaxial matrix entries of an image grid and each entry's place along its LOR.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        Bin and pixel of each non-zero of the transaxial matrix, int64 (nnz,).
    length_mm : numpy.ndarray
        Transaxial intersection length, mm (nnz,).
    t : numpy.ndarray
        Position of the pixel centre along its LOR, 0 at the bin's first crystal, (nnz,).
    chord2_mm2 : numpy.ndarray
        Squared transaxial length of each bin's LOR, mm^2 (bins,).
    plane_index : numpy.ndarray
        Rebinning plane ``r1 + r2`` of each image plane, (planes,).
    """

    rows: np.ndarray
    cols: np.ndarray
    length_mm: np.ndarray
    t: np.ndarray
    chord2_mm2: np.ndarray
    n_bins: int
    n_pixels: int
    plane_index: np.ndarray
    rings: int
    pitch_mm: float

    @classmethod
    def build(cls, geometry: SinogramGeometry, system: SystemMatrix2D, grid: ImageGrid,
              plane_index: np.ndarray) -> ObliqueGeometry:
        """From the 2D system matrix of ``grid`` and the rebinning plane of each image plane.

        Raises
        ------
        ValueError
            When the image planes are not half a ring pitch apart.
        """
        scanner = geometry.scanner
        if abs(grid.voxel_size_mm[0] - scanner.axial_pitch_mm / 2) > 1e-9:
            raise ValueError("the oblique SSRB model needs image planes half a ring pitch apart")
        coo = system.matrix.tocoo()
        rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
        p1, p2 = geometry.endpoints_mm()
        d_xy = (p2 - p1)[:, :2]
        chord2 = np.maximum((d_xy**2).sum(axis=1), 1e-12)
        nx = grid.shape[2]
        cx = grid.centres_mm(2)[cols % nx]
        cy = grid.centres_mm(1)[cols // nx]
        t = ((cx - p1[rows, 0]) * d_xy[rows, 0] + (cy - p1[rows, 1]) * d_xy[rows, 1]) / chord2[rows]
        return cls(rows, cols, coo.data.astype(np.float64), t, chord2, geometry.n_bins,
                   grid.shape[1] * nx, np.asarray(plane_index), scanner.rings,
                   scanner.axial_pitch_mm)

    def ring_differences(self, max_ring_difference: int) -> list[tuple[int, np.ndarray]]:
        """``(d, planes)``: each ring difference and the image planes that hold its LORs."""
        out = []
        for d in range(-max_ring_difference, max_ring_difference + 1):
            r1 = (self.plane_index - d) / 2
            planes = np.flatnonzero((r1 == np.floor(r1)) & (r1 >= 0) & (r1 + d >= 0)
                                    & (r1 < self.rings) & (r1 + d < self.rings))
            if planes.size:
                out.append((d, planes))
        return out

    def secant(self, d: int) -> np.ndarray:
        """3D over transaxial length of the LORs of ring difference ``d``, (bins,)."""
        return np.sqrt(1.0 + (d * self.pitch_mm) ** 2 / self.chord2_mm2)

    def block(self, d: int, bins: np.ndarray | None = None
              ) -> tuple[scipy.sparse.csr_matrix, int, int]:
        """The matrix of ring difference ``d``: rows are ``bins`` (all by default), columns
        ``(shift s, pixel j)``, entries ``l_bj`` split linearly between the two planes around
        the LOR's height at pixel ``j``. Returns ``(matrix, lowest shift, number of shifts)``;
        column ``(s, j)`` reads plane ``i + s + lowest`` of pixel ``j`` for output plane ``i``.
        """
        keep = slice(None)
        row_of = None
        if bins is not None:
            row_of = np.full(self.n_bins, -1, np.int64)
            row_of[bins] = np.arange(len(bins))
            keep = row_of[self.rows] >= 0
        rows = self.rows[keep] if row_of is None else row_of[self.rows[keep]]
        cols, length, t = self.cols[keep], self.length_mm[keep], self.t[keep]
        shift = (t - 0.5) * 2 * d  # planes between the LOR at pixel j and its plane
        below = np.floor(shift).astype(np.int64)
        frac = shift - below
        lo = int(below.min(initial=0))
        n_shifts = int(below.max(initial=0)) - lo + 2
        column = (below - lo) * self.n_pixels + cols
        n_rows = self.n_bins if bins is None else len(bins)
        matrix = scipy.sparse.csr_matrix(
            (np.concatenate([length * (1 - frac), length * frac]),
             (np.concatenate([rows, rows]), np.concatenate([column, column + self.n_pixels]))),
            shape=(n_rows, n_shifts * self.n_pixels))
        return matrix, lo, n_shifts

    def integrals(self, volume: np.ndarray, d: int, planes: np.ndarray) -> np.ndarray:
        """``sum_j l_bj v(z_bj, j)`` of ``volume`` (z, y, x on the image grid, 0 above and below
        it) along the LORs of ring difference ``d`` rebinned into ``planes``,
        (bins, len(planes)); times :meth:`secant` for the 3D line integral."""
        matrix, lo, n_shifts = self.block(d)
        columns = np.asarray(volume, np.float64).reshape(volume.shape[0], -1).T
        return matrix @ shifted_stack(columns, planes, lo, n_shifts)


def shifted_stack(columns: np.ndarray, planes: np.ndarray, lo: int, n_shifts: int
                  ) -> np.ndarray:
    """Rows ``(s, pixel)``, columns ``planes``: ``columns[pixel, plane + s + lo]``, 0 outside
    ``columns`` (pixels, nz)."""
    nz = columns.shape[1]
    source = np.asarray(planes)[None, :] + np.arange(n_shifts)[:, None] + lo  # (S, P)
    inside = (source >= 0) & (source < nz)
    out = columns[:, np.clip(source, 0, nz - 1)] * inside
    return out.transpose(1, 0, 2).reshape(n_shifts * columns.shape[0], len(planes))


@dataclass
class _Block:
    """One ring difference of one subset, on the device."""

    a: torch.Tensor          # CSR (subset bins, shifts * pixels)
    at: torch.Tensor         # its transpose, CSR
    planes: torch.Tensor     # image planes of this ring difference, (P,)
    read: torch.Tensor       # padded plane read by column (p, s), P-major, (P * S,)
    read_sp: torch.Tensor    # the same, S-major, (S * P,)
    weight: torch.Tensor     # attenuation x secant x validity, (subset bins, P)
    n_shifts: int


class ObliqueModel:
    """Forward and back projection of the oblique SSRB model, by subset of bins.

    Parameters
    ----------
    oblique : ObliqueGeometry
    max_ring_difference : int
    subsets : list of numpy.ndarray
        Bin indices of each subset (:func:`recon.mlem.view_subsets`).
    valid : numpy.ndarray
        bool (bins,): bins the sorter can fill.
    mu_per_mm : numpy.ndarray, optional
        The mu map on the image grid, (z, y, x); no attenuation when omitted.
    """

    def __init__(self, oblique: ObliqueGeometry, max_ring_difference: int,
                 subsets: list[np.ndarray], valid: np.ndarray, nz: int,
                 mu_per_mm: np.ndarray | None = None, device: torch.device | str = "cpu"
                 ) -> None:
        self.n_pixels, self.nz = oblique.n_pixels, nz
        self.device = torch.device(device)
        self.subsets = [np.asarray(s) for s in subsets]
        mu_columns = None if mu_per_mm is None else np.asarray(
            mu_per_mm, np.float64).reshape(nz, -1).T
        differences = oblique.ring_differences(max_ring_difference)
        self.blocks: list[list[_Block]] = []
        built = []
        for bins in self.subsets:
            blocks = []
            for d, planes in differences:
                matrix, lo, n_shifts = oblique.block(d, bins)
                weight = oblique.secant(d)[bins, None] * valid[bins, None]
                weight = np.broadcast_to(weight, (len(bins), len(planes)))
                if mu_columns is not None:
                    integral = matrix @ shifted_stack(mu_columns, planes, lo, n_shifts)
                    weight = weight * np.exp(-oblique.secant(d)[bins, None] * integral)
                built.append((matrix, planes, lo, n_shifts, weight))
                blocks.append(len(built) - 1)
            self.blocks.append(blocks)
        # Zero planes above and below the image: every read lands inside the padded stack.
        self.pad = max([max(-lo, lo + n_shifts + int(planes.max()) - nz + 1, 0)
                        for _, planes, lo, n_shifts, _ in built], default=0)
        for q, blocks in enumerate(self.blocks):
            self.blocks[q] = [self._block(*built[i]) for i in blocks]

    def _block(self, matrix, planes, lo, n_shifts, weight) -> _Block:
        read = planes[None, :] + np.arange(n_shifts)[:, None] + lo + self.pad  # (S, P)
        return _Block(
            to_torch_csr(matrix, self.device), to_torch_csr(matrix.T.tocsr(), self.device),
            torch.as_tensor(planes, device=self.device),
            torch.as_tensor(read.T.ravel(), device=self.device),
            torch.as_tensor(read.ravel(), device=self.device),
            torch.as_tensor(np.ascontiguousarray(weight), dtype=torch.float32,
                            device=self.device), n_shifts)

    def forward(self, image: torch.Tensor, subset: int) -> torch.Tensor:
        """Expected counts (without background) of the subset's bins, (bins, planes), from an
        image (pixels, planes)."""
        # Plane-major and zero-padded: a block's reads are whole rows, gathered P-major so
        # that the stack is already the transposed operand of the sparse product.
        rows = torch.nn.functional.pad(image.T, (0, 0, self.pad, self.pad))
        out = torch.zeros(len(self.subsets[subset]), self.nz, device=self.device,
                          dtype=image.dtype)
        for b in self.blocks[subset]:
            p = len(b.planes)
            stack = rows.index_select(0, b.read).reshape(p, b.n_shifts * self.n_pixels)
            out[:, b.planes] += b.weight * (b.a @ stack.T)
        return out

    def back(self, values: torch.Tensor, subset: int) -> torch.Tensor:
        """Adjoint of :meth:`forward`: values (bins of the subset, planes) -> (pixels, planes)."""
        rows = torch.zeros(self.nz + 2 * self.pad, self.n_pixels, device=self.device,
                           dtype=values.dtype)
        for b in self.blocks[subset]:
            p = len(b.planes)
            spread = b.at @ (b.weight * values[:, b.planes])  # (S * pixels, P)
            spread = spread.reshape(b.n_shifts, self.n_pixels, p).transpose(1, 2)
            rows.index_add_(0, b.read_sp, spread.reshape(b.n_shifts * p, self.n_pixels))
        return rows[self.pad : self.pad + self.nz].T.contiguous()


def osem_oblique(counts: torch.Tensor, model: ObliqueModel, mask: torch.Tensor,
                 iterations: int, background: torch.Tensor | None = None,
                 callback: Callable[[int, torch.Tensor], None] | None = None,
                 image_model: ImageModel | None = None) -> EMResult:
    """OSEM (MLEM with one subset) of rebinned counts (bins, planes) with the oblique model.

    The EM update and the masking are those of :func:`recon.mlem.osem_sinogram`; ``mask`` is
    bool (pixels,) and the image is returned as (pixels, planes). ``callback(iteration,
    image)`` is called after each full iteration (convergence studies). ``image_model``: kernel
    method and resolution model (:mod:`recon.mlem`).
    """
    device, dtype = counts.device, counts.dtype
    k_image, k_forward, k_back = image_maps(image_model, columns=True)
    if background is None:
        background = torch.zeros_like(counts)
    mask = mask.reshape(-1, 1).expand(-1, model.nz)
    inv_sens = []
    for q, bins in enumerate(model.subsets):
        sens = k_back(model.back(torch.ones(len(bins), model.nz, device=device, dtype=dtype),
                                    q))
        seen = mask & (sens > 0)
        inv_sens.append(torch.where(seen, 1.0 / torch.where(seen, sens, 1.0), 0.0))
    index = [torch.as_tensor(b, device=device) for b in model.subsets]
    x = torch.where(mask, 1.0, 0.0).to(dtype)
    result = EMResult(x)

    def loglik(image):
        total = 0.0
        for q, idx in enumerate(index):
            total += _loglik(counts[idx], model.forward(image, q) + background[idx])
        return total

    for it in _progress(iterations, "EM (oblique SSRB)"):
        for q, idx in enumerate(index):
            ybar = model.forward(k_forward(x), q) + background[idx]
            ratio = measured_over_expected(counts[idx], ybar)
            x = x * k_back(model.back(ratio, q)) * inv_sens[q]
        result.loglik.append(loglik(k_forward(x)))
        if callback is not None:
            callback(it, k_image(x))
    result.image = k_image(x)
    return result
