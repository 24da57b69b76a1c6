"""pix2pix's pieces for issue 15: the U-Net generator, the L1 term and the conditional PatchGAN
against hand computations and a direct numpy convolution, and a toy mask-to-image task the
U-Net must learn (a bright blob where the mask says)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from models.nets.patchgan import PatchGAN
from models.nets.unet import UNetGenerator, l1_term


def test_l1_term_by_hand():
    fake = torch.tensor([[[[0.5, -1.0], [0.0, 1.0]]]])
    target = torch.tensor([[[[0.0, -1.0], [1.0, -1.0]]]])
    # |0.5| + 0 + |-1| + |2| = 3.5 over 4 pixels, times pix2pix's lambda 100
    assert float(l1_term(fake, target)) == pytest.approx(100 * 3.5 / 4)
    assert float(l1_term(fake, target, weight=10.0)) == pytest.approx(10 * 3.5 / 4)
    with pytest.raises(ValueError, match="shapes"):
        l1_term(fake, target[..., :1])


def _conv_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int
                    ) -> np.ndarray:
    """Cross-correlation with zero padding 1, (C_in, H, W) -> (C_out, H', W'), by scipy."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = []
    for c_out in range(weight.shape[0]):
        full = sum(scipy.signal.correlate2d(padded[c], weight[c_out, c], mode="valid")
                   for c in range(x.shape[0]))
        out.append(full[::stride, ::stride] + bias[c_out])
    return np.stack(out)


def test_conditional_patchgan_equals_a_direct_convolution():
    """The pix2pix discriminator sees the input and the output image side by side (2
    channels); without normalisation its patch logits are plain strided convolutions with
    LeakyReLU 0.2, recomputed here with scipy."""
    torch.manual_seed(0)
    net = PatchGAN(16, n_layers=1, base_channels=3, norm="none", in_channels=2).double()
    rng = np.random.default_rng(1)
    pair = rng.normal(size=(2, 16, 16))
    x = pair
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    strides = [2, 1, 1]
    for i, (conv, stride) in enumerate(zip(convs, strides, strict=True)):
        x = _conv_reference(x, conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                            stride)
        if i < len(convs) - 1:
            x = np.where(x > 0, x, 0.2 * x)
    ours = net(torch.as_tensor(pair)[None]).detach().numpy()[0]
    assert ours.shape == x.shape == (1, 6, 6)  # 16 -> 8 (stride 2) -> 7 -> 6 (4x4, pad 1)
    np.testing.assert_allclose(ours, x, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        assert float(net.decision(torch.as_tensor(pair)[None])) == pytest.approx(x.mean())


@pytest.mark.parametrize("size", [16, 64])
def test_unet_shapes_range_and_a_one_pixel_bottleneck(size):
    net = UNetGenerator(size, in_channels=2, out_channels=1, base_channels=4)
    assert net.depth == int(np.log2(size))
    seen = []
    net.down[-1].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    out = net(torch.randn(3, 2, size, size))
    assert out.shape == (3, 1, size, size)
    assert seen[0][-2:] == (1, 1)
    assert float(out.abs().max()) <= 1.0
    with pytest.raises(ValueError, match="built for"):
        net(torch.randn(1, 2, size // 2, size // 2))
    with pytest.raises(ValueError, match="not supported"):
        UNetGenerator(48)


def toy_masks(n: int, rng: np.random.Generator, size: int = 16):
    """Discs of radius 2.5 px at random places, and the images they mean: +1 inside, -1
    outside."""
    centres = rng.uniform(4, size - 4, (n, 2))
    y, x = np.mgrid[:size, :size] + 0.5
    inside = np.hypot(y[None] - centres[:, :1, None], x[None] - centres[:, 1:, None]) < 2.5
    return centres, inside.astype(np.float32), np.where(inside, 1.0, -1.0).astype(np.float32)


@pytest.mark.slow
def test_the_unet_learns_to_put_a_blob_where_the_mask_says():
    """Mask (plus a noise channel) to image, trained with the L1 term alone on 16 px discs:
    on new masks the brightest part of the output sits on the mask's disc. (Batch norm, as in
    pix2pix, and its test-time convention: batch statistics of the test batch. Without
    normalisation the L1 fit sat at the all-dark image, the pixels' median.)"""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = UNetGenerator(16, in_channels=2, base_channels=8, norm="batch", dropout=0.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(300):
        _, mask, image = toy_masks(16, rng)
        inputs = torch.stack([torch.as_tensor(mask), torch.randn(16, 16, 16)], dim=1)
        loss = l1_term(net(inputs), torch.as_tensor(image)[:, None], weight=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    centres, mask, image = toy_masks(40, rng)
    with torch.no_grad():
        out = net(torch.stack([torch.as_tensor(mask), torch.randn(40, 16, 16)], dim=1))[:, 0]
    out = out.numpy()
    # The output's bright region's centroid against the disc's centre, pixels.
    bright = np.clip(out, 0, None)
    y, x = np.mgrid[:16, :16] + 0.5
    found = np.stack([(bright * y).sum((1, 2)), (bright * x).sum((1, 2))], 1) / (
        bright.sum((1, 2))[:, None] + 1e-9)
    error = np.hypot(*(found - centres).T)
    assert np.mean(error < 1.0) >= 0.9
    assert float(np.abs(out - image).mean()) < 0.25
