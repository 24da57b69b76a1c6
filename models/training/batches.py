"""Seeded batch order, a pure function of (seed, source, draw number).

Each epoch of a source is a permutation of its N images drawn from
``numpy.random.default_rng([seed, source_id, epoch])``; the epochs are laid end to end and
draw ``k`` takes positions ``k B ... (k + 1) B - 1`` of that sequence. No state: a run
resumed at step k draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np


class BatchOrder:
    """Indices of the images of each draw of one source.

    Parameters
    ----------
    n_images, batch_size : int
    seed : int
    source : str
        Name of the source (``real``, ``query``): different sources get different orders.
    """

    def __init__(self, n_images: int, batch_size: int, seed: int, source: str) -> None:
        if n_images < 1:
            raise ValueError(f"source {source!r} has no images")
        self.n = int(n_images)
        self.batch_size = int(batch_size)
        self.key = (int(seed), zlib.crc32(source.encode()))

    @lru_cache(maxsize=4)  # noqa: B019 - a few permutations of one order, freed with it
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([*self.key, int(epoch)]).permutation(self.n)

    def indices(self, draw: int) -> np.ndarray:
        """Image indices (batch_size,) of draw number ``draw``."""
        positions = draw * self.batch_size + np.arange(self.batch_size)
        epochs, within = np.divmod(positions, self.n)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):  # one or two epochs per batch, more only if B > N
            mask = epochs == epoch
            out[mask] = self.permutation(int(epoch))[within[mask]]
        return out
