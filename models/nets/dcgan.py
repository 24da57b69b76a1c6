"""DCGAN networks (Radford et al. 2015) for square images of 2^k pixels.

Generator: the latent vector through a 4x4 transposed convolution to
``channels * 2^(levels - 1)`` maps of 4 x 4 (``levels`` = log2(image_size / 4)), then 4x4
stride-2 transposed convolutions halving the channels (BN and ReLU after each) up to
``image_size``, tanh at the end. Discriminator: 4x4 stride-2 convolutions
doubling the channels (LeakyReLU 0.2; BN after all but the first) down to 4 x 4, then a 4x4
convolution to one logit. At 64 px with 64 channels these are the paper's networks.
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets.init import check_image_size, n_doublings


class DCGANGenerator(nn.Module):
    """Latent (B, latent_dim) -> image (B, 1, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, image_size: int, channels: int = 64) -> None:
        super().__init__()
        levels = n_doublings(check_image_size(image_size, "DCGAN generator"))
        c = channels * 2 ** (levels - 1)
        layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1)),
                                   nn.ConvTranspose2d(latent_dim, c, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class DCGANDiscriminator(nn.Module):
    """Image (B, in_channels, S, S) -> one logit per image, (B, 1, 1, 1).

    ``norm="none"`` drops the batch norms (and gives the convolutions biases): the critic of
    WGAN-GP, whose gradient penalty is per image and must not mix images of a batch
    (Gulrajani et al. 2017)."""

    def __init__(self, image_size: int, channels: int = 64, norm: str = "batch",
                 in_channels: int = 1) -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"DCGAN discriminator norm must be batch or none, got {norm!r}")
        levels = n_doublings(check_image_size(image_size, "DCGAN discriminator"))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(levels - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=norm == "none"),
                       nn.BatchNorm2d(2 * c) if norm == "batch" else nn.Identity(),
                       nn.LeakyReLU(0.2)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 4, 1, 0, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
