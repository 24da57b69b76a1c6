"""Precision, recall, density and coverage (Naeem et al. 2020) of fake against real
feature vectors, with k-nearest-neighbour balls.

Each real vector's ball has the radius of its k-th nearest other real vector (each fake's,
of its k-th nearest other fake). Precision: share of fakes inside some real ball; recall:
share of reals inside some fake ball (Kynkäänniemi et al. 2019); density: the number of real
balls containing each fake, averaged and divided by k; coverage: share of real vectors whose
ball contains some fake. Distances are Euclidean, all pairs at once (sets of thousands).

With multiplicities (a bootstrap resample given as its distinct vectors and their counts),
balls are those of the distinct vectors (a vector's copies are not its neighbours: a
resampled phantom does not shrink its images' balls to nothing) and every share is a mean
weighted by the counts.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    return np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5,
         real_weights: np.ndarray | None = None, fake_weights: np.ndarray | None = None
         ) -> dict[str, float]:
    """The four numbers for feature sets real (n, d) and fake (m, d), each vector counted
    ``weights`` times (default once; vectors of count 0 are left out)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real_weights is not None:
        real, real_weights = real[real_weights > 0], np.asarray(real_weights)[real_weights > 0]
    if fake_weights is not None:
        fake, fake_weights = fake[fake_weights > 0], np.asarray(fake_weights)[fake_weights > 0]
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k = {k} need more than {k} vectors in each "
                         f"set ({len(real)} real, {len(fake)} fake)")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(fake))):
        raise ValueError("precision/recall of feature vectors holding NaN or infinite values")
    r_real = _kth_neighbour_radius(real, k)
    r_fake = _kth_neighbour_radius(fake, k)
    d = cdist(real, fake)  # (n, m)
    inside_real = d < r_real[:, None]
    return {"precision": float(np.average(inside_real.any(axis=0), weights=fake_weights)),
            "recall": float(np.average((d < r_fake[None, :]).any(axis=1),
                                       weights=real_weights)),
            "density": float(np.average(inside_real.sum(axis=0) if real_weights is None else
                                        real_weights @ inside_real, weights=fake_weights) / k),
            "coverage": float(np.average(d.min(axis=1) < r_real, weights=real_weights))}
