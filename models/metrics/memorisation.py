"""Does a generator copy its training images? Nearest neighbours and a data-copying test.

For every generated image, the distance to its nearest training image (mean absolute
difference of pixels, or Euclidean distance of features). A generator that copies sits
closer to the training images than new real images do, so the reference is the held-out
real set's own nearest-training distances:

* **copy share**: the share of generated images nearer a training image than the
  ``quantile`` (5 %) of the held-out images' nearest-training distances; about ``quantile``
  for a generator that does not copy, near 1 for one that returns training images;
* **data-copying statistic** (Meehan et al. 2020, in its whole-space form): the Mann-Whitney
  U test of generated against held-out nearest-training distances, as a z-score; strongly
  negative (below -3) means generated images are systematically closer to the training set
  than real new images: copying. Positive values mean under-fitting.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist


def nearest(queries: np.ndarray, references: np.ndarray, metric: str = "pixels"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest reference of every query.

    ``pixels``: mean absolute difference of images (n, H, W); ``features``: Euclidean
    distance of vectors (n, d)."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    r = np.asarray(references, np.float64).reshape(len(references), -1)
    d = cdist(q, r, "cityblock") / q.shape[1] if metric == "pixels" else cdist(q, r)
    index = np.argmin(d, axis=1)
    return index, d[np.arange(len(q)), index]


def copy_statistics(generated_nn: np.ndarray, held_out_nn: np.ndarray,
                    quantile: float = 0.05) -> dict[str, float]:
    """Copy share and the Mann-Whitney z of generated against held-out nearest-training
    distances (module docstring)."""
    g, h = np.asarray(generated_nn, np.float64), np.asarray(held_out_nn, np.float64)
    if len(g) < 2 or len(h) < 2:
        raise ValueError("the data-copying test needs at least 2 generated and 2 held-out "
                         "images")
    threshold = np.quantile(h, quantile)
    u = stats.mannwhitneyu(g, h, alternative="two-sided").statistic
    n, m = len(g), len(h)
    z = (u - n * m / 2) / np.sqrt(n * m * (n + m + 1) / 12)
    return {"copy_share": float(np.mean(g < threshold)), "copy_threshold": float(threshold),
            "copy_z": float(z), "quantile": quantile}
