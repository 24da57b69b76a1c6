"""DenseNet generator (eq. 7): each layer gets the concatenation of all earlier maps of its
block, channel counts follow the growth-rate formula, images of 64, 128 and 256 px."""

from __future__ import annotations

import pytest
import torch

from models.nets.densenet import DenseBlock, DenseLayer, DenseNetGenerator, TransitionUp


def test_each_layer_receives_every_earlier_output_of_its_block():
    c0, k, n = 5, 3, 4
    block = DenseBlock(c0, n, k)
    seen, made = [], []

    def record(module, inputs, output):
        seen.append(inputs[0])
        made.append(output)

    for layer in block.layers:
        layer.register_forward_hook(record)
    x = torch.randn(2, c0, 6, 6)
    out = block(x)
    for i, received in enumerate(seen):
        assert received.shape[1] == c0 + i * k  # the growth-rate formula
        # Literally [X_0, X_1, ..., X_{l-1}] (eq. 7).
        torch.testing.assert_close(received, torch.cat([x, *made[:i]], dim=1))
    assert out.shape[1] == block.out_channels == c0 + n * k
    torch.testing.assert_close(out, torch.cat([x, *made], dim=1))


def test_transition_upsamples_by_two():
    t = TransitionUp(8, 4)
    assert t(torch.randn(1, 8, 5, 5)).shape == (1, 4, 10, 10)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_output_shape_and_range(size):
    g = DenseNetGenerator(in_dim=20, image_size=size, base_channels=16, growth_rate=4)
    g.eval()
    with torch.no_grad():
        out = g(torch.randn(2, 20, generator=torch.Generator().manual_seed(0)) * 10)
    assert out.shape == (2, 1, size, size)
    assert out.abs().max() <= 1.0 and out.std() > 0
    # One dense block per resolution from 4 px to size / 2, each layer built for its input.
    blocks = [m for m in g.modules() if isinstance(m, DenseBlock)]
    assert len(blocks) == size.bit_length() - 3
    for block in blocks:
        for i, layer in enumerate(block.layers):
            assert isinstance(layer, DenseLayer)
            assert layer.in_channels == block.layers[0].in_channels + i * 4


@pytest.mark.parametrize("size", [8, 48])
def test_unsupported_size(size):
    with pytest.raises(ValueError, match="not supported"):
        DenseNetGenerator(4, size)

