"""Weight initialisation shared by every network: the DCGAN / pix2pix convention.

Convolution and linear weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0,
class embeddings ~ N(0, 1) (Radford et al. 2015; pix2pix's
``init_weights(init_type="normal")``). Drawn from an explicit ``torch.Generator``, so a
network's initial weights depend on the seed only, never on what
else used torch's global random stream before.
"""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.02


@torch.no_grad()
def init_weights(module: nn.Module, generator: torch.Generator, std: float = INIT_STD) -> None:
    """Re-initialise every convolution, linear and batch-norm layer below ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d | nn.InstanceNorm2d) and m.affine:
            m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=generator) * std)
            m.bias.zero_()
        elif isinstance(m, nn.Embedding):  # class embeddings: N(0, 1), torch's own scale
            m.weight.copy_(torch.randn(m.weight.shape, generator=generator))


def check_image_size(size_px: int, what: str, smallest: int = 16) -> int:
    """The networks resample by factors of 2 from a 4 x 4 map: ``size_px`` must be a power of
    two of at least ``smallest``; anything else raises one ValueError naming ``what``."""
    size = int(size_px)
    if size < smallest or size & (size - 1):
        raise ValueError(f"{what}: image size {size_px} px is not supported; the networks need "
                         f"a power of two of at least {smallest} (16, 32, 64, 128, 256, ...)")
    return size


def n_doublings(size_px: int) -> int:
    """How many factor-2 resamplings lie between a 4 x 4 map and ``size_px``."""
    return int(size_px).bit_length() - 3
