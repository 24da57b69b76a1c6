"""PCANet (sec. 3.3) against slow references written here with explicit loops: patches,
filters from the eigenvectors of the patch scatter matrix, stage outputs, hashing and
block histograms; and invariance to the order of the training images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.nets.pcanet import PCANet, filter_outputs

K, L1, L2, BLOCK, OVERLAP = 3, 2, 3, 4, 0.5


def _images(n=4, size=10, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):  # a smooth blob plus noise: patches with structure
        cy, cx = rng.uniform(2, size - 2, 2)
        out.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0) + 0.1 * rng.normal(
            size=(size, size)))
    return np.asarray(out)


def _patches_by_hand(image: np.ndarray, k: int) -> np.ndarray:
    """(k*k, H*W) mean-removed patches, pixel by pixel, edge-replicated padding."""
    pad = k // 2
    padded = np.pad(image, pad, mode="edge")
    h, w = image.shape
    cols = []
    for i in range(h):
        for j in range(w):
            patch = padded[i : i + k, j : j + k].ravel()
            cols.append(patch - patch.mean())
    return np.asarray(cols).T


def _leading(scatter: np.ndarray, n: int) -> np.ndarray:
    values, vectors = np.linalg.eigh(scatter)
    return vectors[:, np.argsort(values)[::-1][:n]].T


def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> bool:
    return all(min(np.abs(x - y).max(), np.abs(x + y).max()) < 1e-9 for x, y in zip(a, b,
                                                                                     strict=True))


def _outputs_by_hand(image: np.ndarray, filters: np.ndarray) -> np.ndarray:
    patches = _patches_by_hand(image, filters.shape[-1])
    return np.asarray([(f.ravel() @ patches).reshape(image.shape) for f in filters])


def test_first_stage_filters_are_leading_eigenvectors_of_the_patch_matrix():
    images = _images()
    net = PCANet.fit(images, K, (L1, L2), BLOCK, OVERLAP)
    x = np.concatenate([_patches_by_hand(im, K) for im in images], axis=1)
    assert _same_up_to_sign(net.stage1.numpy().reshape(L1, -1), _leading(x @ x.T, L1))
    # Stage 2: one bank shared by every first-stage map of every image.
    maps = [m for im in images for m in _outputs_by_hand(im, net.stage1.numpy())]
    y = np.concatenate([_patches_by_hand(m, K) for m in maps], axis=1)
    assert _same_up_to_sign(net.stage2.numpy().reshape(L2, -1), _leading(y @ y.T, L2))


def test_stage_output_removes_each_patch_mean_so_it_is_not_a_plain_convolution():
    images = _images(n=2)
    net = PCANet.fit(images, K, (L1, L2), BLOCK, OVERLAP)
    fast = filter_outputs(torch.from_numpy(images), net.stage1).numpy()
    slow = np.asarray([_outputs_by_hand(im, net.stage1.numpy()) for im in images])
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    # Adding a constant to an image changes nothing (each patch's own mean is removed).
    shifted = filter_outputs(torch.from_numpy(images + 7.0), net.stage1).numpy()
    np.testing.assert_allclose(shifted, fast, atol=1e-9)


def test_hashing_and_block_histograms_match_a_slow_reference():
    images = _images(n=3, size=10, seed=5)
    net = PCANet.fit(images, K, (L1, L2), BLOCK, OVERLAP)
    stride = round((1 - OVERLAP) * BLOCK)
    expected = []
    for im in images:
        feature = []
        for first in _outputs_by_hand(im, net.stage1.numpy()):
            second = _outputs_by_hand(first, net.stage2.numpy())  # (L2, H, W)
            code = np.zeros(im.shape, dtype=int)
            for j in range(L2):  # T = sum_j 2^(L2 - j) H(O_j), j = 1..L2
                code += 2 ** (L2 - (j + 1)) * (second[j] > 0)
            for top in range(0, im.shape[0] - BLOCK + 1, stride):
                for left in range(0, im.shape[1] - BLOCK + 1, stride):
                    block = code[top : top + BLOCK, left : left + BLOCK]
                    feature += [np.sum(block == b) for b in range(2**L2)]
        expected.append(feature)
    features = net.features(images)
    np.testing.assert_array_equal(features, np.asarray(expected, dtype=np.float32))
    assert features.shape[1] == net.feature_dim(images.shape[1:]) == L1 * 16 * 2**L2
    # Every block histogram counts every pixel of its block once.
    per_block = features.reshape(len(images), L1, -1, 2**L2).sum(axis=-1)
    assert np.all(per_block == BLOCK * BLOCK)


def test_invariant_to_the_order_of_training_images():
    images = _images(n=6, seed=9)
    order = np.random.default_rng(1).permutation(6)
    a = PCANet.fit(images, K, (L1, L2), BLOCK, OVERLAP)
    b = PCANet.fit(images[order], K, (L1, L2), BLOCK, OVERLAP)
    np.testing.assert_allclose(a.stage1.numpy(), b.stage1.numpy(), atol=1e-12)
    np.testing.assert_allclose(a.stage2.numpy(), b.stage2.numpy(), atol=1e-12)
    np.testing.assert_array_equal(a.features(images)[order], b.features(images[order]))


def test_bad_settings():
    images = _images(n=2, size=8)
    with pytest.raises(ValueError, match="must be odd"):
        PCANet.fit(images, 4, (2, 2), 4, 0.5)
    with pytest.raises(ValueError, match="at most 9"):
        PCANet.fit(images, 3, (10, 2), 4, 0.5)
    with pytest.raises(ValueError, match="does not fit"):
        PCANet.fit(images, 3, (2, 2), 12, 0.5)
