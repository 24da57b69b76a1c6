"""Metrics against independent references: MS-SSIM against pytorch-msssim and SSIM against
scikit-image, the Fréchet distance against the closed form for Gaussians, KID's unbiasedness,
precision/recall/density/coverage against the prdc package, and the data-copying test on a
copying generator and on held-out real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from pytorch_msssim import ms_ssim as reference_ms_ssim
from pytorch_msssim import ssim as reference_ssim
from scipy import linalg
from skimage.metrics import structural_similarity

from models.metrics.distances import frechet_distance, gaussian_frechet, kernel_distance
from models.metrics.memorisation import copy_statistics, nearest
from models.metrics.msssim import check_scales, mean_ms_ssim, ms_ssim, scale_weights, ssim
from models.metrics.prdc import prdc


def _textured(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.sin(6 * xx + rng.uniform(0, 6, (n, 1, 1))) * np.cos(4 * yy)
    return np.clip(base + 0.3 * rng.normal(size=(n, size, size)), -1, 1)


def test_ms_ssim_equals_pytorch_msssim_at_256_px():
    a, b = _textured(3, 256, 0), _textured(3, 256, 1)
    ours = ms_ssim(a, b, data_range=2.0)
    ref = reference_ms_ssim(torch.from_numpy(a)[:, None] + 1, torch.from_numpy(b)[:, None] + 1,
                            data_range=2.0, size_average=False)
    # pytorch-msssim builds its window in float32: agreement to its precision.
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-4, atol=1e-7)
    assert ours.max() > 0.1  # not a comparison of zeros
    # Same image: 1 exactly.
    np.testing.assert_allclose(ms_ssim(a, a).numpy(), 1.0, atol=1e-12)


def test_ssim_equals_scikit_image_and_pytorch_msssim():
    a, b = _textured(2, 64, 3), _textured(2, 64, 4)
    ours = ssim(a, b).numpy()  # images in [-1, 1], compared in [0, 2]
    for i in range(2):
        sk = structural_similarity(a[i] + 1, b[i] + 1, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=2.0)
        assert ours[i] == pytest.approx(sk, rel=1e-9)
    ref = reference_ssim(torch.from_numpy(a)[:, None] + 1, torch.from_numpy(b)[:, None] + 1,
                         data_range=2.0, size_average=False)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-6)


def test_scales_must_fit_and_weights_are_renormalised():
    check_scales(64, 3, 11)
    with pytest.raises(ValueError, match="at least 88 px"):
        check_scales(64, 4, 11)
    w = scale_weights(3)
    assert sum(w) == pytest.approx(1) and w[0] == pytest.approx(0.0448 / 0.6305, rel=1e-3)
    # Diversity: identical images give 1, independent noise images nearly 0.
    same = np.repeat(_textured(1, 64, 5), 5, axis=0)
    assert mean_ms_ssim(same, None, 50, 0, scales=3)[0] == pytest.approx(1.0)
    noise = np.random.default_rng(0).uniform(-1, 1, (20, 64, 64))
    assert mean_ms_ssim(noise, None, 50, 0, scales=3)[0] < 0.05


def test_frechet_distance_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    a = rng.normal(size=(d, d))
    cov1 = np.eye(d)
    cov2 = a @ a.T / d + 0.5 * np.eye(d)
    # Closed form written here: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2).
    r1 = linalg.sqrtm(cov1)
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * np.real(
        linalg.sqrtm(r1 @ cov2 @ r1)))
    assert gaussian_frechet(mu1, cov1, mu2, cov2) == pytest.approx(closed, rel=1e-8)
    x = rng.multivariate_normal(mu1, cov1, 200_000)
    y = rng.multivariate_normal(mu2, cov2, 200_000)
    assert frechet_distance(x, y) == pytest.approx(closed, rel=0.02)
    assert frechet_distance(x[:100_000], x[100_000:]) < 0.01


def test_frechet_of_a_set_of_identical_images_is_the_closed_form():
    """One image repeated: covariance 0 (up to round-off), so the distance is |mu1 - mu2|^2
    + tr(C2); the square root of the nearly singular product must not blow up."""
    rng = np.random.default_rng(5)
    y = rng.normal(size=(11, 32)) * rng.uniform(0, 2, 32)
    x = np.repeat(rng.normal(size=(1, 32)) * 0.3, 20, 0) + 1e-17 * rng.normal(size=(20, 32))
    for weights in (None, rng.integers(1, 3, 11)):
        big_y = y if weights is None else np.repeat(y, weights, 0)
        closed = np.sum((x[0] - big_y.mean(0)) ** 2) + np.trace(np.cov(big_y, rowvar=False))
        assert frechet_distance(x, y, None, weights) == pytest.approx(closed, rel=1e-9)


def test_kid_is_unbiased():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    mean, std = kernel_distance(x, y, subset_size=20, subsets=2000, seed=0)
    assert abs(mean) < 3 * std / np.sqrt(2000)
    shifted, _ = kernel_distance(x, y + 0.5, subset_size=20, subsets=200, seed=0)
    assert shifted > 10 * std / np.sqrt(200)
    with pytest.raises(ValueError, match="subset size 3000"):
        kernel_distance(x, y, subset_size=3000)


def test_prdc_equals_the_prdc_package():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 6))
    fake = rng.normal(loc=0.3, scale=1.2, size=(250, 6))
    ours = prdc(real, fake, k=5)
    ref = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_data_copying_test_flags_a_copying_generator_and_passes_held_out_images():
    rng = np.random.default_rng(3)
    population = _textured(400, 16, 7)
    train, held, fresh = population[:200], population[200:300], population[300:]
    _, held_nn = nearest(held, train)
    copies = train[rng.integers(0, 200, 100)] + 0.01 * rng.normal(size=(100, 16, 16))
    _, copy_nn = nearest(copies, train)
    flagged = copy_statistics(copy_nn, held_nn)
    assert flagged["copy_share"] > 0.9 and flagged["copy_z"] < -3
    _, fresh_nn = nearest(fresh, train)
    passed = copy_statistics(fresh_nn, held_nn)
    assert passed["copy_share"] < 0.2 and abs(passed["copy_z"]) < 3
    # nearest(): the index points at the right image.
    index, distance = nearest(train[[5, 17]], train)
    assert list(index) == [5, 17] and np.all(distance == 0)
