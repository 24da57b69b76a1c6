"""Distances between two sets of feature vectors: Fréchet distance and kernel (KID) distance.

* **Fréchet distance** (Heusel et al. 2017): the 2-Wasserstein distance between Gaussians
  fitted to the two sets, ``|mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``, covariances
  with the unbiased 1/(n-1); the trace of the matrix square root from the eigenvalues of a
  symmetric form (:func:`gaussian_frechet`), stable where ``scipy.linalg.sqrtm`` is not. On
  Inception features this is FID; here the features come from the domain feature network
  (:mod:`models.evaluate.feature_network`), so the value is a **domain-feature Fréchet
  distance**, not comparable with published FIDs.
* **Kernel distance** (KID, Bińkowski et al. 2018): the unbiased estimate of the squared
  MMD with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over
  ``subsets`` random subsets of ``subset_size`` vectors of each set; the standard deviation
  over subsets is reported with it. Unbiased: its expectation is 0 for two samples of one
  distribution (it can be negative).

Both accept multiplicities (``weights``: how many times each vector is in the set), so a
bootstrap resample is the distinct vectors with their counts: the Fréchet distance fits
mean and covariance with frequency weights; the kernel distance's U-statistic leaves out
the pairs of a vector with itself (so a resampled vector drawn twice is two draws).
"""

from __future__ import annotations

import numpy as np


def _checked(features: np.ndarray, what: str) -> np.ndarray:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"{what}: need a (n >= 2, d) array of feature vectors, got shape "
                         f"{features.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{what}: feature vectors hold NaN or infinite values")
    return features


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (round-off negative
    eigenvalues set to 0)."""
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def gaussian_frechet(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray,
                     cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    ``Tr((cov1 cov2)^(1/2))`` is computed as the trace of the square root of the symmetric
    ``cov1^(1/2) cov2 cov1^(1/2)`` (the same eigenvalues): the square root of the
    non-symmetric product (``scipy.linalg.sqrtm``, as pytorch-fid does) can return values of
    1e190 for a nearly singular covariance (a set of near-identical images), which the
    symmetric form cannot."""
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    trace_root = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2),
                                              0, None))))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * trace_root)


def _counts(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n, np.int64)
    weights = np.asarray(weights)
    if weights.shape != (n,) or np.any(weights < 0) or weights.sum() < 2:
        raise ValueError(f"multiplicities must be {n} counts >= 0 summing to >= 2")
    return weights.astype(np.int64)


def _moments(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.average(x, axis=0, weights=counts),
            np.cov(x, rowvar=False, fweights=counts))


def frechet_distance(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None,
                     weights_b: np.ndarray | None = None) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d),
    each vector counted ``weights`` times (integers, default once)."""
    a, b = _checked(a, "Fréchet distance"), _checked(b, "Fréchet distance")
    return gaussian_frechet(*_moments(a, _counts(weights_a, len(a))),
                            *_moments(b, _counts(weights_b, len(b))))


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    return weighted_mmd2(x, y)


def weighted_mmd2(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None,
                  weights_b: np.ndarray | None = None) -> float:
    """Unbiased squared MMD (the cubic kernel of KID) between whole sets a (n, d) and
    b (m, d), each vector counted ``weights`` times: the U-statistic of the sets with the
    vectors repeated, a draw never paired with itself."""
    a, b = _checked(a, "kernel distance"), _checked(b, "kernel distance")
    wa = _counts(weights_a, len(a)).astype(np.float64)
    wb = _counts(weights_b, len(b)).astype(np.float64)

    def within(x: np.ndarray, w: np.ndarray) -> float:
        k = _cubic_kernel(x, x)
        return float((w @ k @ w - w @ np.diag(k)) / (w.sum() ** 2 - w.sum()))

    cross = float(wa @ _cubic_kernel(a, b) @ wb / (wa.sum() * wb.sum()))
    return within(a, wa) + within(b, wb) - 2 * cross


def kernel_distance(a: np.ndarray, b: np.ndarray, subset_size: int, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased MMD^2 over random subsets.

    Raises
    ------
    ValueError
        If ``subset_size`` exceeds either set's size (or is below 2).
    """
    a, b = _checked(a, "kernel distance"), _checked(b, "kernel distance")
    if not 2 <= subset_size <= min(len(a), len(b)):
        raise ValueError(f"kernel distance subset size {subset_size} must be between 2 and "
                         f"the smaller set's size ({len(a)} and {len(b)} vectors)")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(a[rng.choice(len(a), subset_size, replace=False)],
                             b[rng.choice(len(b), subset_size, replace=False)])
              for _ in range(subsets)]  # subsets, not vectors: the kernel is vectorised
    return float(np.mean(values)), float(np.std(values))
