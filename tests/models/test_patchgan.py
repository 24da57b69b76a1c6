"""PatchGAN (eq. 8): the receptive field found by back-propagating from one output unit
equals eq. 8's value, 70 px at 256 px as in the paper."""

from __future__ import annotations

import pytest
import torch

from models.nets.patchgan import PatchGAN, layers_for_size, receptive_field


def _receptive_field_by_backprop(net: PatchGAN, size: int) -> int:
    """Extent of the input pixels whose value changes one central output unit."""
    with torch.no_grad():  # positive weights: no cancellation can hide a pixel
        for p in net.parameters():
            p.fill_(0.01)
    net.eval()
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    out = net(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(dim=0)).flatten()
    assert rows.numel() and cols.numel()
    assert rows.min() > 0 and rows.max() < size - 1  # not clipped by the border
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(("image", "expected_layers", "expected_rf"),
                         [(256, 3, 70), (128, 3, 70), (64, 2, 34), (32, 1, 16), (16, 1, 16)])
def test_layers_from_the_image_size(image, expected_layers, expected_rf):
    assert layers_for_size(image) == expected_layers
    assert PatchGAN(image).receptive_field == expected_rf


@pytest.mark.parametrize(("n_layers", "published"), [(1, 16), (2, 34), (3, 70), (4, 142)])
def test_receptive_field_by_backpropagation(n_layers, published):
    """pix2pix's published patch sizes (16, 34, 70, 142 px for n_layers 1-4) by eq. 8 and by
    back-propagating from one output unit."""
    size = 320
    net = PatchGAN(size, n_layers=n_layers, base_channels=2, norm="none")
    assert net.receptive_field == published
    assert _receptive_field_by_backprop(net, size) == published


def test_paper_patch_at_256_px_by_backpropagation():
    net = PatchGAN(256, base_channels=2, norm="batch")  # n_layers from the size
    assert _receptive_field_by_backprop(net, 256) == 70


def test_eq8_by_hand():
    # (k, s) = (4, 2), (4, 1): from one unit, (1 - 1) * 1 + 4 = 4, then (4 - 1) * 2 + 4 = 10.
    assert receptive_field([(4, 2), (4, 1)]) == 10
    assert receptive_field([(3, 1)] * 3) == 7


def test_decision_is_the_mean_of_the_map():
    net = PatchGAN(64, base_channels=4)
    x = torch.randn(3, 1, 64, 64)
    torch.testing.assert_close(net.decision(x), net(x).mean(dim=(1, 2, 3)))
    logits, feats = net.features(x)
    torch.testing.assert_close(logits, net(x))
    assert len(feats) == net.n_layers + 1
