"""DCGAN networks: shapes of the paper's layout at 16 and 64 px."""

from __future__ import annotations

import pytest
import torch

from models.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("size", [16, 64])
def test_dcgan_networks(size):
    g = DCGANGenerator(10, size, channels=8)
    d = DCGANDiscriminator(size, channels=8)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == size.bit_length() - 2  # 4 x 4 from z, then one per doubling
    assert convs[0].out_channels == 8 * 2 ** (size.bit_length() - 4)
    out = g(torch.randn(3, 10))
    assert out.shape == (3, 1, size, size) and out.abs().max() <= 1
    assert d(out).shape == (3, 1, 1, 1)
