"""Class conditioning as RadioGAN does it (seed 002, after Mirza and Osindero 2014).

* Generator: the class goes through an embedding layer (50 numbers in RadioGAN) and is
  concatenated with the noise vector, so the first layer sees ``[z ; e(y)]``
  (:class:`ClassInput`).
* Discriminator: a second embedding of the class, then a linear layer scaled up to the image
  size, added to the image as a second input channel (:class:`ClassChannel`), so every
  convolution can weigh the pixels against the class it is told.
"""

from __future__ import annotations

import torch
from torch import nn

#: RadioGAN's embedding length.
EMBED_DIM = 50


def check_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class numbers (B,) int64 in [0, n_classes); anything else raises a ValueError."""
    if labels.dtype not in (torch.int64, torch.int32) or labels.dim() != 1:
        raise ValueError(f"class labels must be a 1-D integer tensor, got {labels.dtype} of "
                         f"shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"class labels must lie in [0, {n_classes}), got "
                         f"{int(labels.min())} ... {int(labels.max())}")
    return labels.long()


class ClassInput(nn.Module):
    """(B,) classes and (B, D) latents -> (B, D + embed_dim): the generator's conditioned
    input."""

    def __init__(self, n_classes: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.embed = nn.Embedding(self.n_classes, int(embed_dim))

    def forward(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = self.embed(check_labels(labels, self.n_classes)).to(latent.dtype)
        return torch.cat([latent, e], dim=1)


class ClassChannel(nn.Module):
    """(B, C, S, S) images and (B,) classes -> (B, C + 1, S, S): the class as an extra
    channel, embedding then a linear map to S x S values."""

    def __init__(self, n_classes: int, image_size: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.n_classes, self.size = int(n_classes), int(image_size)
        self.embed = nn.Embedding(self.n_classes, int(embed_dim))
        self.dense = nn.Linear(int(embed_dim), self.size * self.size)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = self.dense(self.embed(check_labels(labels, self.n_classes)))
        plane = e.view(-1, 1, self.size, self.size).to(images.dtype)
        return torch.cat([images, plane.contiguous(memory_format=torch.channels_last)
                          if images.is_contiguous(memory_format=torch.channels_last)
                          else plane], dim=1)
