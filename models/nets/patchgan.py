"""PatchGAN discriminator (pix2pix, Isola et al. 2017) and its receptive field (eq. 8).

Fully convolutional: 4x4 convolutions, the first ``n_layers`` with stride 2, then one with
stride 1 and a last one to a single map of logits; LeakyReLU 0.2 after every layer but the
last, normalisation after every layer but the first and the last (pix2pix's
``NLayerDiscriminator``, channels doubling from ``base_channels`` up to 8x). Every output unit
judges one ``r x r`` patch of the input, and **the mean of the output map is the decision**
(sec. 3.4).

Receptive field, eq. 8 applied from the output back to the input, one layer at a time:
``size_in = (size_out - 1) * stride + kernel``, starting from one unit. With 4x4 kernels
that gives 16, 34, 70, 142, 286 pixels for ``n_layers`` = 1 ... 5. The paper's patch is 70
at 256 px (``n_layers`` = 3); :func:`layers_for_size` keeps that and, for smaller images,
takes the largest receptive field that fits inside the image (34 at 64 px, 16 at 16 or 32 px).
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets.init import check_image_size

KERNEL = 4
#: The paper's patch (sec. 4.1): 70 x 70.
PAPER_RECEPTIVE_FIELD = 70
NORMS = ("batch", "instance", "none")


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """Eq. 8 from one output unit back through ``layers`` = [(kernel, stride), ...] in
    forward order: the input patch one output unit sees, in pixels."""
    size = 1
    for kernel, stride in reversed(layers):
        size = (size - 1) * stride + kernel
    return size


def layer_geometry(n_layers: int) -> list[tuple[int, int]]:
    """(kernel, stride) of every convolution of an ``n_layers`` PatchGAN, in forward order."""
    return [(KERNEL, 2)] * n_layers + [(KERNEL, 1), (KERNEL, 1)]


def layers_for_size(image_size: int) -> int:
    """``n_layers`` for an image size: the paper's 70 px patch when it fits, else the
    largest receptive field that fits the image."""
    size = check_image_size(image_size, "PatchGAN discriminator")
    n = 1
    while (receptive_field(layer_geometry(n + 1)) <= size
           and receptive_field(layer_geometry(n)) < PAPER_RECEPTIVE_FIELD):
        n += 1
    return n


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name (``NORMS``) after a convolution of ``channels``."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"discriminator norm must be one of {', '.join(NORMS)}, got {kind!r}")


class PatchGAN(nn.Module):
    """(B, C, S, S) images -> (B, 1, h, w) patch logits; :meth:`features` gives the
    activations after every hidden layer as well (for the attention perceptual loss)."""

    def __init__(self, image_size: int, n_layers: int | None = None, base_channels: int = 64,
                 norm: str = "batch", in_channels: int = 1) -> None:
        super().__init__()
        self.n_layers = layers_for_size(image_size) if n_layers is None else int(n_layers)
        if self.n_layers < 1:
            raise ValueError(f"PatchGAN needs n_layers >= 1, got {n_layers}")
        hidden: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(in_channels, base_channels, KERNEL, 2, 1), nn.LeakyReLU(0.2))]
        c_in = base_channels
        for i, (_, stride) in enumerate(layer_geometry(self.n_layers)[1:-1], start=1):
            c_out = base_channels * min(2**i, 8)
            hidden.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, KERNEL, stride, 1, bias=norm == "none"),
                norm_layer(norm, c_out), nn.LeakyReLU(0.2)))
            c_in = c_out
        self.hidden = nn.ModuleList(hidden)
        self.out = nn.Conv2d(c_in, 1, KERNEL, 1, 1)

    @property
    def receptive_field(self) -> int:
        """Input patch of one output unit, by eq. 8."""
        return receptive_field(layer_geometry(self.n_layers))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch logits and the list of hidden activations (one per hidden layer)."""
        feats = []
        for layer in self.hidden:
            x = layer(x)
            feats.append(x)
        return self.out(x), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the patch map: one logit per image, (B,)."""
        return self(x).mean(dim=(1, 2, 3))
