"""DenseNet generator of the seed paper (sec. 3.4, eq. 7).

Within a dense block, layer ``l`` sees the concatenation of the block input and of every
earlier layer's output (eq. 7, ``X_l = H_l([X_0, X_1, ..., X_{l-1}])``); ``H_l`` is
BN-ReLU-3x3 convolution giving ``growth_rate`` new maps (Huang et al. 2017), so layer ``l``
of a block entered with ``c_0`` channels receives ``c_0 + l * growth_rate`` and the block
leaves ``c_0 + L * growth_rate``. Blocks are joined by transition layers: BN, ReLU, a 1x1
convolution keeping ``compression`` of the channels, then the resampling. DenseNet's
transition ends in 2x2 average pooling, which halves the image: right for a classifier, wrong
for a generator, so here the transition **upsamples by 2** (nearest neighbour, then the 1x1
convolution's maps are refined by the next block's 3x3 convolutions).

The input is the attention memory's output, the vector ``[z ; c]`` (sec. 3.3): a linear layer
maps it to ``base_channels`` maps of 4 x 4; a dense block at each of 4, 8, ...,
``image_size / 2`` pixels, each followed by an upsampling transition; at ``image_size`` a
BN-ReLU-3x3 convolution to one channel and tanh, so images are in [-1, 1] like
``positron.h5``. No dense block runs at the full size: as in DCGAN's generator, the last
layer alone works at full resolution (nearest upsampling then a 3x3 convolution, the
"resize-convolution" that avoids checkerboard artefacts); on 2 CPU cores a full-size block
would triple the generator's time (measured: batch-norm and concatenation of 6 M values per
layer at 64 px).
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets.init import check_image_size, n_doublings


class DenseLayer(nn.Module):
    """``H_l``: BN-ReLU-3x3 conv from every earlier map of the block to ``growth_rate`` maps."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, growth_rate, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseBlock(nn.Module):
    """``n_layers`` dense layers; returns the concatenation of the input and every output."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth_rate, growth_rate)
                                    for i in range(n_layers))
        self.out_channels = in_channels + n_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, dim=1)))
        return torch.cat(maps, dim=1)


class TransitionUp(nn.Module):
    """BN, ReLU, 1x1 convolution to ``out_channels``, nearest-neighbour upsampling by 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                  nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseNetGenerator(nn.Module):
    """Vector (B, in_dim) -> image (B, 1, image_size, image_size) in [-1, 1].

    Parameters
    ----------
    in_dim : int
        Length of the input vector (latent + memory context).
    image_size : int
        Output size in pixels, a power of two >= 16.
    base_channels : int
        Maps of the 4 x 4 start.
    growth_rate, layers_per_block : int
        Dense block shape (eq. 7).
    compression : float
        Share of channels a transition keeps (DenseNet-BC's theta).
    """

    def __init__(self, in_dim: int, image_size: int, base_channels: int = 64,
                 growth_rate: int = 12, layers_per_block: int = 2,
                 compression: float = 0.5) -> None:
        super().__init__()
        size = check_image_size(image_size, "DenseNet generator")
        self.project = nn.Sequential(nn.Linear(in_dim, base_channels * 16),
                                     nn.Unflatten(1, (base_channels, 4, 4)))
        stages: list[nn.Module] = []
        channels = base_channels
        for _ in range(n_doublings(size)):
            block = DenseBlock(channels, layers_per_block, growth_rate)
            reduced = max(1, int(block.out_channels * compression))
            stages += [block, TransitionUp(block.out_channels, reduced)]
            channels = reduced
        self.body = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, 1, 3, 1, 1), nn.Tanh())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.project(v)))
