"""The domain feature network of the metrics: a small CNN classifier of positron images.

Inception weights cannot be downloaded here, and Inception features of natural images say
little about PET slices anyway; so the Fréchet and kernel distances are computed on the
features of a network trained in the DAG on the real training split
(:mod:`models.evaluate.feature_network`). Four blocks of 3x3 convolution, batch norm, ReLU
and 2x2 max pooling (``widths`` channels), global average pooling, a linear layer to the
``embed_dim`` feature vector (followed by ReLU, as Inception's pool features are
non-negative) and a linear classifier on top.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureCNN(nn.Module):
    """(B, 1, S, S) images -> class logits; :meth:`embed` gives the (B, embed_dim) features."""

    def __init__(self, n_classes: int, widths: tuple[int, ...] = (16, 32, 64, 64),
                 embed_dim: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in widths:
            layers += [nn.Conv2d(c_in, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c_in, embed_dim), nn.ReLU())
        self.head = nn.Linear(embed_dim, n_classes)
        self.embed_dim = embed_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
