"""PCA of eq. 4-5 against numpy.linalg.eigh of the covariance written in the test."""

from __future__ import annotations

import numpy as np
import pytest

from models.nets.pca import fit_pca


def _reference(data: np.ndarray):
    centred = data - data.mean(axis=0)
    cov = centred.T @ centred / len(data)  # eq. 5: 1/m sum y y^T
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T


@pytest.mark.parametrize("shape", [(200, 6), (12, 40)])  # more samples than dimensions, fewer
def test_basis_is_the_covariance_eigenvectors(shape):
    rng = np.random.default_rng(4)
    data = rng.normal(size=shape) @ rng.normal(size=(shape[1], shape[1])) + rng.normal(
        size=shape[1])
    k = min(shape) - 1 if shape[0] < shape[1] else 4
    basis = fit_pca(data, k)
    values, vectors = _reference(data)
    for i in range(k):
        # Equal up to sign.
        assert min(np.abs(basis.components[i] - vectors[i]).max(),
                   np.abs(basis.components[i] + vectors[i]).max()) < 1e-8
        # The sign convention: largest-magnitude entry positive.
        assert basis.components[i][np.argmax(np.abs(basis.components[i]))] > 0
    np.testing.assert_allclose(basis.explained_variance, values[:k], rtol=1e-8)
    np.testing.assert_allclose(basis.explained_variance_ratio, values[:k] / values.sum(),
                               rtol=1e-8)
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(basis.mean, data.mean(axis=0), atol=1e-12)


def test_every_component_explains_all_the_variance():
    data = np.random.default_rng(2).normal(size=(30, 5))
    basis = fit_pca(data, 5)
    assert basis.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    total = np.trace(np.cov(data.T, bias=True))  # trace of eq. 5's covariance
    assert basis.explained_variance.sum() == pytest.approx(total, rel=1e-10)


def test_round_trip_is_exact_on_data_of_known_rank():
    rng = np.random.default_rng(7)
    rank = 3
    data = rng.normal(size=(50, rank)) @ rng.normal(size=(rank, 20)) + 5.0
    basis = fit_pca(data, rank)
    np.testing.assert_allclose(basis.reconstruct(basis.project(data)), data, atol=1e-9)
    assert basis.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-10)
    # One component fewer loses some of it.
    short = fit_pca(data, rank - 1)
    assert np.abs(short.reconstruct(short.project(data)) - data).max() > 1e-3


def test_bad_input():
    with pytest.raises(ValueError, match="at most 3"):
        fit_pca(np.zeros((3, 8)), 4)
    with pytest.raises(ValueError, match="NaN"):
        fit_pca(np.array([[0.0, np.nan], [1.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_pca(np.zeros((1, 4)), 1)
