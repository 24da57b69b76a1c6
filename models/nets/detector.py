"""The downstream defect detector: one small network, two heads.

Encoder: a 4x4 stride-2 stem (the detector works at half the image size: defects of the
image sets span several pixels at 64 px, and the full-resolution layers were three quarters
of the cost), then ``levels`` blocks of two 3x3 convolutions (batch norm, ReLU), 2x2 max
pooling between them, channels doubling from ``channels``. Class head: global average and max
pooling of the deepest block, concatenated, a linear layer to one logit per defect class
(:data:`models.data.labels.DEFECT_CLASSES`; the presence score is ``1 - p(none)``).
Segmentation head: a U-Net decoder (2x2 transposed convolutions, skip connections, two 3x3
convolutions per level) to mask logits at half size, bilinearly upsampled to one per pixel.
Small on purpose: it is trained a dozen times in the DAG (every training set, several
seeds), in seconds each at 64 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class DefectDetector(nn.Module):
    """(B, 1, S, S) images -> (class logits (B, n_classes), mask logits (B, 1, S, S));
    S must be divisible by 2^levels."""

    def __init__(self, n_classes: int, channels: int = 16, levels: int = 3) -> None:
        super().__init__()
        widths = [channels * 2**i for i in range(levels)]
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 4, 2, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        self.down = nn.ModuleList(_block(c_in, c) for c_in, c in zip([channels, *widths],
                                                                      widths, strict=False))
        self.pool = nn.MaxPool2d(2)
        self.classify = nn.Linear(2 * widths[-1], n_classes)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, 2) for c in widths[:0:-1])
        self.merge = nn.ModuleList(_block(c, c // 2) for c in widths[:0:-1])
        self.mask = nn.Conv2d(widths[0], 1, 1)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        if x.shape[-1] % 2**self.levels or x.shape[-2] % 2**self.levels:
            raise ValueError(f"detector with {self.levels} levels needs image sides divisible "
                             f"by {2**self.levels}, got {tuple(x.shape[-2:])}")
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        logits = self.classify(pooled)
        skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        mask = F.interpolate(self.mask(x), size=size, mode="bilinear", align_corners=False)
        return logits, mask
