"""Precision, recall, density and coverage (Naeem et al. 2020) of fake against real
feature vectors, with k-nearest-neighbour balls.

Each real vector's ball has the radius of its k-th nearest other real vector (each fake's,
of its k-th nearest other fake). Precision: share of fakes inside some real ball; recall:
share of reals inside some fake ball (Kynkäänniemi et al. 2019); density: the number of real
balls containing each fake, averaged and divided by k; coverage: share of real vectors whose
ball contains some fake. Distances are Euclidean, all pairs at once (sets of thousands).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    return np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """The four numbers for feature sets real (n, d) and fake (m, d)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k = {k} need more than {k} vectors in each "
                         f"set ({len(real)} real, {len(fake)} fake)")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(fake))):
        raise ValueError("precision/recall of feature vectors holding NaN or infinite values")
    r_real = _kth_neighbour_radius(real, k)
    r_fake = _kth_neighbour_radius(fake, k)
    d = cdist(real, fake)  # (n, m)
    inside_real = d < r_real[:, None]
    return {"precision": float(inside_real.any(axis=0).mean()),
            "recall": float((d < r_fake[None, :]).any(axis=1).mean()),
            "density": float(inside_real.sum(axis=0).mean() / k),
            "coverage": float((d.min(axis=1) < r_real).mean())}
