"""PCANet (Chan et al. 2015): the positron feature extractor of the seed paper (sec. 3.3).

The paper's "two convolution layers, then hashing and histogram statistics" is PCANet's
two-stage network, learned without back-propagation:

1. **Stage 1.** Every ``k x k`` patch around every pixel of every training image (images
   padded by replicating their edge, so each image gives H W patches) is vectorised and has
   its own mean removed. The filters are the ``L1`` leading eigenvectors of the scatter
   matrix ``X X^T`` of those patches (k^2 x k^2; no further centring, as in the authors'
   code), reshaped to ``k x k``. The stage output ``I^l`` of an image is, at every pixel, the
   inner product of filter ``l`` with the *mean-removed* patch at that pixel: the mean is
   removed again before filtering, so this is not a plain convolution.
2. **Stage 2.** The same on the ``L1`` maps of every training image, with one **shared** bank
   of ``L2`` filters learned over all first-stage maps together.
3. **Output.** For each first-stage map ``I^l``, its ``L2`` second-stage outputs ``O_j`` are
   binarised and hashed into one integer image ``T^l = sum_j 2^(L2 - j) H(O_j)`` (``H`` the
   Heaviside step, 1 for positive values; j = 1 ... L2), values in [0, 2^L2). ``T^l`` is cut
   into ``b x b`` blocks (stride ``round((1 - overlap) b)``) and each block gives a
   histogram of ``2^L2`` bins. The feature vector is every block histogram of ``T^1``, then of
   ``T^2``, ..., ``T^L1`` (block-major, bins fastest): ``L1 * blocks * 2^L2`` numbers.

Padding: the authors pad with zeros; positron images are -1 outside the solution, where a
zero border would be a false edge in every image, so the edge is replicated instead.
Filter signs are fixed (largest-magnitude tap positive), so the hashing is deterministic.
Everything runs in float64 torch, in chunks of images (memory bounded whatever the set size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Memory for the stage outputs of one chunk of images, bytes (chunk * L1 * L2 * H * W * 8).
CHUNK_BYTES = 256 * 2**20


def _chunk_images(values_per_image: int) -> int:
    return max(1, CHUNK_BYTES // (8 * values_per_image))


def mean_removed_patches(images: torch.Tensor, patch_px: int) -> torch.Tensor:
    """Every ``k x k`` patch of (N, H, W) images with its own mean removed, (N, k*k, H*W)."""
    pad = patch_px // 2
    padded = F.pad(images[:, None], (pad, pad, pad, pad), mode="replicate")
    patches = F.unfold(padded, patch_px)
    return patches - patches.mean(dim=1, keepdim=True)


def leading_eigenvectors(scatter: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` leading eigenvectors (rows) of a symmetric matrix, sign-fixed."""
    values, vectors = np.linalg.eigh(scatter)
    top = vectors[:, np.argsort(values)[::-1][:n]].T
    signs = np.sign(top[np.arange(n), np.argmax(np.abs(top), axis=1)])
    return top * np.where(signs == 0, 1.0, signs)[:, None]


def filter_outputs(images: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Stage output: each filter (L, k, k) against the mean-removed patches of (N, H, W)
    images, (N, L, H, W)."""
    n, h, w = images.shape
    patches = mean_removed_patches(images, filters.shape[-1])
    out = torch.einsum("lp,npx->nlx", filters.flatten(1), patches)
    return out.reshape(n, len(filters), h, w)


def _learn_filters(maps_of_chunks, patch_px: int, n_filters: int) -> torch.Tensor:
    scatter = np.zeros((patch_px**2, patch_px**2))
    for maps in maps_of_chunks:
        p = mean_removed_patches(maps, patch_px)
        scatter += torch.einsum("npx,nqx->pq", p, p).numpy()
    return torch.from_numpy(leading_eigenvectors(scatter, n_filters).reshape(
        n_filters, patch_px, patch_px))


def hash_maps(outputs: torch.Tensor) -> torch.Tensor:
    """``T = sum_j 2^(L2 - j) H(O_j)`` over the second dimension of (N, L2, H, W), (N, H, W)."""
    n_bits = outputs.shape[1]
    weights = 2 ** torch.arange(n_bits - 1, -1, -1, device=outputs.device)
    return ((outputs > 0).long() * weights[None, :, None, None]).sum(dim=1)


def block_histograms(codes: torch.Tensor, n_bins: int, block_px: int, stride_px: int
                     ) -> torch.Tensor:
    """Histogram of the integer codes (N, H, W) in every ``block_px`` block (stride
    ``stride_px``), (N, blocks * n_bins), block-major."""
    blocks = F.unfold(codes[:, None].double(), block_px, stride=stride_px).long()  # (N, b*b, B)
    n, _, n_blocks = blocks.shape
    index = blocks + n_bins * torch.arange(n_blocks, device=codes.device)[None, None, :]
    hist = torch.zeros(n, n_blocks * n_bins, dtype=torch.float64, device=codes.device)
    return hist.scatter_add_(1, index.flatten(1), torch.ones_like(index.flatten(1),
                                                                    dtype=torch.float64))


@dataclass(frozen=True)
class PCANet:
    """A fitted two-stage PCANet.

    Attributes
    ----------
    stage1, stage2 : torch.Tensor
        Filter banks, (L1, k, k) and (L2, k, k), float64.
    block_px : int
        Histogram block size, pixels.
    block_overlap : float
        Overlap of neighbouring blocks as a fraction of ``block_px``, in [0, 1).
    """

    stage1: torch.Tensor
    stage2: torch.Tensor
    block_px: int
    block_overlap: float

    @property
    def stride_px(self) -> int:
        return max(1, round((1.0 - self.block_overlap) * self.block_px))

    @property
    def n_bins(self) -> int:
        return 2 ** len(self.stage2)

    def n_blocks(self, size_px: tuple[int, int]) -> int:
        h, w = size_px
        return ((h - self.block_px) // self.stride_px + 1) * ((w - self.block_px) //
                                                              self.stride_px + 1)

    def feature_dim(self, size_px: tuple[int, int]) -> int:
        """Length of the feature vector of an image of ``size_px`` = (H, W)."""
        return len(self.stage1) * self.n_blocks(size_px) * self.n_bins

    @classmethod
    def fit(cls, images: np.ndarray, patch_px: int, filters: tuple[int, int], block_px: int,
            block_overlap: float) -> PCANet:
        """Learn both filter banks from training images (N, H, W)."""
        data = torch.as_tensor(np.asarray(images), dtype=torch.float64)
        n_images, h, w = data.shape
        if patch_px % 2 == 0 or patch_px > min(h, w):
            raise ValueError(f"PCANet patch size {patch_px} must be odd and fit the "
                             f"{h} x {w} images")
        if patch_px**2 < max(filters):
            raise ValueError(f"{max(filters)} filters of {patch_px} x {patch_px} patches: at "
                             f"most {patch_px**2}")
        if block_px > min(h, w):
            raise ValueError(f"histogram block {block_px} px does not fit the {h} x {w} images")
        step = _chunk_images(h * w * max(filters) ** 2)
        chunks = [data[i : i + step] for i in range(0, n_images, step)]
        stage1 = _learn_filters(chunks, patch_px, filters[0])
        stage2 = _learn_filters((filter_outputs(c, stage1).flatten(0, 1) for c in chunks),
                                patch_px, filters[1])
        return cls(stage1, stage2, int(block_px), float(block_overlap))

    def features(self, images: np.ndarray) -> np.ndarray:
        """Feature vectors of images (N, H, W), (N, L1 * blocks * 2^L2) float32 counts."""
        data = torch.as_tensor(np.asarray(images), dtype=torch.float64)
        out = []
        n_maps = len(self.stage1)
        step = _chunk_images(data.shape[1] * data.shape[2] * n_maps * len(self.stage2))
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            first = filter_outputs(chunk, self.stage1).flatten(0, 1)  # (n * L1, H, W)
            codes = hash_maps(filter_outputs(first, self.stage2))
            hist = block_histograms(codes, self.n_bins, self.block_px, self.stride_px)
            out.append(hist.reshape(len(chunk), -1).float().numpy())  # T^1 ... T^L1
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim(data.shape[1:])),
                                                        np.float32)
