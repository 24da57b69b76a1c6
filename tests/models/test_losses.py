"""Eq. 9-10 and the adversarial losses against values computed by hand in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.methods.losses import (
    attention_perceptual_loss,
    discriminator_loss,
    generator_loss,
)
from models.nets.patchgan import PatchGAN


def _conv_by_hand(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """(C_in, H, W) * (C_out, C_in, 4, 4), zero padding 1, pixel by pixel."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    k = w.shape[-1]
    h = (padded.shape[1] - k) // stride + 1
    out = np.zeros((w.shape[0], h, h))
    for o in range(w.shape[0]):
        for i in range(h):
            for j in range(h):
                win = padded[:, i * stride : i * stride + k, j * stride : j * stride + k]
                out[o, i, j] = np.sum(win * w[o]) + b[o]
    return out


def _lrelu(x):
    return np.where(x > 0, x, 0.2 * x)


def _tiny_discriminator():
    """16 px, one stride-2 layer (1 channel), one stride-1 layer (2 channels), no norm; known
    weights."""
    net = PatchGAN(16, n_layers=1, base_channels=1, norm="none").double()
    w1 = np.full((1, 1, 4, 4), 1 / 16)
    b1 = np.array([0.1])
    w2 = np.stack([np.full((1, 4, 4), 0.5), np.arange(16, dtype=float).reshape(1, 4, 4) / 40 - 0.2])
    b2 = np.array([0.0, 0.05])
    with torch.no_grad():
        conv1, conv2 = net.hidden[0][0], net.hidden[1][0]
        conv1.weight.copy_(torch.from_numpy(w1))
        conv1.bias.copy_(torch.from_numpy(b1))
        conv2.weight.copy_(torch.from_numpy(w2))
        conv2.bias.copy_(torch.from_numpy(b2))
    return net, (w1, b1, w2, b2)


def _features_by_hand(image: np.ndarray, weights) -> list[np.ndarray]:
    w1, b1, w2, b2 = weights
    f1 = _lrelu(_conv_by_hand(image[None], w1, b1, 2))
    f2 = _lrelu(_conv_by_hand(f1, w2, b2, 1))
    return [f1, f2]


def test_attention_perceptual_loss_by_hand():
    rng = np.random.default_rng(3)
    fake = rng.uniform(-1, 1, (3, 16, 16))
    slots = rng.uniform(-1, 1, (4, 16, 16))
    a = rng.dirichlet(np.ones(4), size=3)  # attention weights, rows sum to 1
    net, weights = _tiny_discriminator()
    fake_f = [_features_by_hand(x, weights) for x in fake]
    slot_f = [_features_by_hand(x, weights) for x in slots]
    expected = 0.0
    for b in range(3):
        for i in range(2):
            w_i = fake_f[b][i].size  # 64 and 2 * 7 * 7
            expected += sum(a[b, s] * np.abs(slot_f[s][i] - fake_f[b][i]).sum()
                            for s in range(4)) / w_i / 3
    _, got_fake = net.features(torch.from_numpy(fake)[:, None])
    _, got_slots = net.features(torch.from_numpy(slots)[:, None])
    assert [f.shape[1:] for f in got_fake] == [(1, 8, 8), (2, 7, 7)]
    value = attention_perceptual_loss(got_fake, got_slots, torch.from_numpy(a))
    assert value.item() == pytest.approx(expected, rel=1e-10)
    # The batch-mean form: distance of the mean features.
    expected_mean = sum(np.abs(np.mean([f[i] for f in slot_f], axis=0)
                               - np.mean([f[i] for f in fake_f], axis=0)).sum() / fake_f[0][i].size
                        for i in range(2))
    value = attention_perceptual_loss(got_fake, got_slots, torch.from_numpy(a), "batch_mean")
    assert value.item() == pytest.approx(expected_mean, rel=1e-10)


def test_attention_perceptual_loss_moves_attention_to_the_nearer_slot():
    """d L_APG / d a(s) is the distance to slot s: gradient descent on the logits raises
    the weight of the nearest slot."""
    fake = [torch.zeros(1, 1, 2, 2)]
    slots = [torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])]
    logits = torch.zeros(1, 2, requires_grad=True)
    attention_perceptual_loss(fake, slots, torch.softmax(logits, 1)).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_adversarial_losses_by_hand():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(4, 1, 3, 3)), rng.normal(size=(4, 1, 3, 3))
    r, f = torch.from_numpy(real), torch.from_numpy(fake)
    assert discriminator_loss(r, f, "bce").item() == pytest.approx(
        np.mean(-np.log(_sigmoid(real))) + np.mean(-np.log(1 - _sigmoid(fake))))
    assert generator_loss(f, "bce").item() == pytest.approx(np.mean(-np.log(_sigmoid(fake))))
    assert discriminator_loss(r, f, "lsgan").item() == pytest.approx(
        0.5 * np.mean((real - 1) ** 2) + 0.5 * np.mean(fake**2))
    assert generator_loss(f, "lsgan").item() == pytest.approx(0.5 * np.mean((fake - 1) ** 2))
    assert discriminator_loss(r, f, "hinge").item() == pytest.approx(
        np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)))
    assert generator_loss(f, "hinge").item() == pytest.approx(-np.mean(fake))
    # The paper's decision: the loss of the mean of each patch map.
    mean_fake = fake.reshape(4, -1).mean(1)
    assert generator_loss(f, "bce", "mean").item() == pytest.approx(
        np.mean(-np.log(_sigmoid(mean_fake))))
    with pytest.raises(ValueError, match="gan_loss"):
        generator_loss(f, "wasserstein")
