"""U-Net generator of pix2pix (Isola et al. 2017, sec. 3.2.1 and appendix 6.1.1), for image-to-
image translation: low-count to reference images (enhancement), defect mask to image.

Encoder ``C64-C128-C256-C512-C512-...`` of 4x4 convolutions with stride 2 (LeakyReLU 0.2,
normalisation after every layer but the first and the innermost) down to 1 x 1; decoder of 4x4
transposed convolutions with stride 2 (ReLU, normalisation), each taking the previous decoder
output concatenated with the encoder activation of the same size (the skip connections that
carry the input's detail through the bottleneck), dropout 0.5 in the three innermost decoder
layers as pix2pix's noise, and a last transposed convolution to ``out_channels`` with tanh
(images in [-1, 1], the image sets' range).

Depth: ``log2(image_size)`` levels, so the bottleneck is 1 x 1 at every image size (8 at
256 px, pix2pix's ``unet_256``; 6 at 64 px). Channels double from ``base_channels`` up to
8 times it.
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets.init import check_image_size
from models.nets.patchgan import norm_layer

KERNEL = 4
#: pix2pix puts dropout in the innermost three decoder layers.
DROPOUT_LAYERS = 3


class UNetGenerator(nn.Module):
    """(B, in_channels, S, S) -> (B, out_channels, S, S) in [-1, 1].

    Parameters
    ----------
    image_size : int
        S, a power of two of at least 16.
    in_channels, out_channels : int
        Input channels (1 for an image, 2 for a mask and a noise map) and output channels.
    base_channels : int
        Channels of the first encoder layer (pix2pix: 64).
    norm : str
        ``batch`` (pix2pix), ``instance`` or ``none``.
    dropout : float
        Dropout probability of the innermost decoder layers (pix2pix: 0.5; 0 for none).
    """

    def __init__(self, image_size: int, in_channels: int = 1, out_channels: int = 1,
                 base_channels: int = 64, norm: str = "batch", dropout: float = 0.5) -> None:
        super().__init__()
        size = check_image_size(image_size, "U-Net generator")
        self.depth = size.bit_length() - 1  # 1 x 1 at the bottleneck
        channels = [base_channels * min(2**i, 8) for i in range(self.depth)]
        down: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            innermost = i == self.depth - 1
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, c_out, KERNEL, 2, 1, bias=i == 0 or innermost
                                    or norm == "none"))
            if 0 < i and not innermost:
                layers.append(norm_layer(norm, c_out))
            down.append(nn.Sequential(*layers))
            c_in = c_out
        up: list[nn.Module] = []
        for i in reversed(range(self.depth)):
            innermost, outermost = i == self.depth - 1, i == 0
            c_from = channels[i] if innermost else 2 * channels[i]
            if outermost:
                up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_from, out_channels,
                                                                      KERNEL, 2, 1), nn.Tanh()))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_from, channels[i - 1], KERNEL, 2, 1,
                                                    bias=norm == "none"),
                      norm_layer(norm, channels[i - 1])]
            if dropout > 0 and self.depth - 1 - i < DROPOUT_LAYERS:
                layers.append(nn.Dropout(dropout))
            up.append(nn.Sequential(*layers))
        self.down = nn.ModuleList(down)
        self.up = nn.ModuleList(up)
        self.image_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"U-Net generator built for {self.image_size} px images, got "
                             f"{tuple(x.shape[-2:])}")
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[0](skips.pop())
        for layer in self.up[1:]:
            x = layer(torch.cat([x, skips.pop()], dim=1))
        return x


def l1_term(fake: torch.Tensor, target: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """pix2pix's reconstruction term ``lambda E|y - G(x, z)|_1`` (eq. 3; lambda 100 in the
    paper), the mean absolute difference over every pixel of the batch times ``weight``."""
    if fake.shape != target.shape:
        raise ValueError(f"L1 term of images of shapes {tuple(fake.shape)} and "
                         f"{tuple(target.shape)}")
    return weight * (fake - target).abs().mean()
