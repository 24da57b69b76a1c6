"""Principal component analysis of the seed paper (sec. 3.3, eq. 4-5).

Eq. 4 stacks the m samples as rows of ``Y`` (m x n); the data are de-averaged so every
dimension has zero mean, and eq. 5 finds the unit vectors ``u`` that maximise the variance
of the projections, the eigenvectors of the covariance ``Sigma = 1/m sum_i y_i y_i^T`` with
the largest eigenvalues. Computed here with scikit-learn's exact SVD of the centred data
(``svd_solver="full"``: the right singular vectors are those eigenvectors, without forming an
n x n covariance when n is in the hundreds of thousands, as PCANet histograms are), signs
fixed so the largest-magnitude entry of every component is positive (deterministic).

``explained_variance`` follows eq. 5's normalisation 1/m (scikit-learn's 1/(m-1) times
(m-1)/m); the ratios do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PCABasis:
    """A fitted basis.

    Attributes
    ----------
    mean : (n,) float64
        The mean removed before projecting.
    components : (k, n) float64
        Orthonormal rows, by decreasing eigenvalue.
    explained_variance : (k,) float64
        Eigenvalues of ``Sigma`` (eq. 5) of the kept components.
    explained_variance_ratio : (k,) float64
        Their share of the total variance ``trace(Sigma)``.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def project(self, data: np.ndarray) -> np.ndarray:
        """Coordinates of samples (m, n) in the basis, (m, k)."""
        return (np.asarray(data, np.float64) - self.mean) @ self.components.T

    def reconstruct(self, coords: np.ndarray) -> np.ndarray:
        """Samples (m, n) back from coordinates (m, k)."""
        return np.asarray(coords, np.float64) @ self.components + self.mean


def fit_pca(data: np.ndarray, n_components: int) -> PCABasis:
    """Fit the leading ``n_components`` of samples ``data`` (m, n) with eq. 5.

    Raises
    ------
    ValueError
        If there are fewer than 2 samples, or more components than ``min(m, n)``.
    """
    from sklearn.decomposition import PCA

    data = np.asarray(data, np.float64)
    if data.ndim != 2 or len(data) < 2:
        raise ValueError(f"PCA needs a (samples, dimensions) array with at least 2 samples, "
                         f"got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("PCA input holds NaN or infinite values")
    k = int(n_components)
    if not 1 <= k <= min(data.shape):
        raise ValueError(f"cannot keep {k} principal components of {data.shape[0]} samples "
                         f"of dimension {data.shape[1]} (at most {min(data.shape)})")
    pca = PCA(n_components=k, svd_solver="full").fit(data)
    components = pca.components_.astype(np.float64)
    rows = np.arange(k)
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    m = len(data)
    return PCABasis(mean=pca.mean_.astype(np.float64), components=components,
                    explained_variance=pca.explained_variance_ * (m - 1) / m,
                    explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float64))
