"""Augmentation the loop owns: flips of the real images and DiffAugment.

* **Flips** (``flips``): each real image gets one of the 8 flips and quarter turns of the
  square, drawn per image. A tube's cross-section has no preferred orientation, so these
  are images the scanner could have produced (StyleGAN2-ADA's ``--mirror`` generalised).
* **DiffAugment** (Zhao et al. 2020): the same differentiable transforms applied to real
  and generated images every time a discriminator sees them, so a discriminator cannot
  memorise a small real set and the generator still learns the un-augmented distribution.
  ``translation`` shifts each image by up to 1/8 of its size in x and y (integer pixels,
  the uncovered border filled); ``cutout`` blanks one square of half the image size at a
  random position (it may be clipped by the border). Both are the paper's ratios. The fill
  is -1, the value of no activity in ``positron.h5``; the reference code fills with 0, which
  in [-1, 1] images is half the maximum activity, a hot patch that real images never have.

Every draw comes from the generator passed in, so training is reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
FILL = -1.0


def random_dihedral(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, H, W) square images under one of the 8 symmetries of the square
    (k % 4 quarter turns, then a left-right flip when k >= 4), k drawn per image."""
    k = torch.randint(0, 8, (len(images),), generator=rng, device=rng.device).to(images.device)
    out = images.clone()
    for t in range(1, 8):  # 8 transforms, not pixels
        pick = k == t
        if pick.any():
            turned = torch.rot90(images[pick], t % 4, dims=(-2, -1))
            out[pick] = torch.flip(turned, dims=(-1,)) if t >= 4 else turned
    return out


def translate(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor,
              fill: float = FILL) -> torch.Tensor:
    """Shift each image of (B, C, H, W) by (shift_y, shift_x) pixels (B,) each: output pixel
    (i, j) is input pixel (i - shift_y, j - shift_x), ``fill`` where that is outside."""
    b, _, h, w = images.shape
    pad_y, pad_x = int(shift_y.abs().max()), int(shift_x.abs().max())
    padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y), value=fill)
    rows = torch.arange(h, device=images.device)[None, :] - shift_y[:, None] + pad_y  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] - shift_x[:, None] + pad_x  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(
        0, 3, 1, 2)


def cutout(images: torch.Tensor, centre_y: torch.Tensor, centre_x: torch.Tensor, size: int,
           fill: float = FILL) -> torch.Tensor:
    """Set a ``size`` square centred at (centre_y, centre_x) (B,) of each image to ``fill``."""
    _, _, h, w = images.shape
    rows = torch.arange(h, device=images.device)[None, :]
    cols = torch.arange(w, device=images.device)[None, :]
    lo_y, lo_x = centre_y[:, None] - size // 2, centre_x[:, None] - size // 2
    inside = (((rows >= lo_y) & (rows < lo_y + size))[:, :, None]
              & ((cols >= lo_x) & (cols < lo_x + size))[:, None, :])  # (B, H, W)
    return torch.where(inside[:, None], torch.full_like(images, fill), images)


class DiffAugment:
    """The configured DiffAugment policies as one callable ``(images, rng) -> images``."""

    def __init__(self, policies: tuple[str, ...] | list[str]) -> None:
        unknown = [p for p in policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}; known: {', '.join(POLICIES)}")
        self.policies = tuple(policies)

    def __call__(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        dev = rng.device
        for policy in self.policies:
            if policy == "translation":
                my, mx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
                sy = torch.randint(-my, my + 1, (b,), generator=rng, device=dev)
                sx = torch.randint(-mx, mx + 1, (b,), generator=rng, device=dev)
                images = translate(images, sy.to(images.device), sx.to(images.device))
            else:
                size = int(min(h, w) * CUTOUT_RATIO + 0.5)
                cy = torch.randint(0, h + (1 - size % 2), (b,), generator=rng, device=dev)
                cx = torch.randint(0, w + (1 - size % 2), (b,), generator=rng, device=dev)
                images = cutout(images, cy.to(images.device), cx.to(images.device), size)
        return images
