"""Image-to-image methods with a U-Net generator (pix2pix, Isola et al. 2017).

* ``pix2pix`` (enhancement): the low-count image of a slice in, its reference image out. The
  generator sees the low-count image; a conditional discriminator sees (low-count, image)
  pairs; the generator minimises ``L_GAN + l1_weight * |G(x) - y|_1`` (pix2pix's lambda = 100).
  As in pix2pix there is no noise input: dropout in the U-Net's innermost decoder layers is
  its only randomness while training, and sampling is deterministic (evaluation mode).
* ``mask2image_patch`` and ``mask2image_global`` (seed 003): a defect mask (+1 inside a
  defect, -1 outside) and a plane of N(0, 1) noise in, an image whose defects sit where the
  mask says out; the discriminator judges (mask, image) pairs. ``_patch`` uses the PatchGAN
  (70 px patches at 256 px, 34 at 64 px), ``_global`` the vanilla, one-logit-per-image
  discriminator the seed compares it with (the DCGAN discriminator with two input channels).
  The L1 term towards the real image of the mask keeps the defect in place; its weight is
  lower than pix2pix's by default (10) so the noise still varies the texture.

Sampling inputs of mask-to-image: masks of training images drawn at random (seeded), each
with that image's defect class, and new noise; the generated set stores both, so every
generated image comes with its labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.methods import register
from models.methods.base import Method, StepContext
from models.methods.losses import GAN_LOSSES, discriminator_loss, generator_loss
from models.nets.dcgan import DCGANDiscriminator
from models.nets.patchgan import NORMS, PatchGAN
from models.nets.unet import UNetGenerator, l1_term


@dataclass(frozen=True)
class ImageToImageSettings:
    """A ``train.pix2pix`` / ``train.mask2image_*`` section, parsed."""

    generator_channels: int
    discriminator_channels: int
    l1_weight: float
    dropout: float
    norm: str
    gan_loss: str
    section: str = "pix2pix"

    @classmethod
    def from_section(cls, s: Mapping[str, Any], section: str = "pix2pix"
                     ) -> ImageToImageSettings:
        for key, allowed in (("gan_loss", GAN_LOSSES), ("norm", NORMS)):
            if s[key] not in allowed:
                raise ValueError(f"train.{section}.{key}: {s[key]!r} is not one of "
                                 f"{', '.join(allowed)}")
        l1 = float(s["l1_weight"])
        if not np.isfinite(l1) or l1 < 0:
            raise ValueError(f"train.{section}.l1_weight: {s['l1_weight']!r} must be a finite "
                             "number >= 0")
        return cls(int(s["generator_channels"]), int(s["discriminator_channels"]), l1,
                   float(s["dropout"]), str(s["norm"]), str(s["gan_loss"]), section)


class ImageToImage(Method):
    """What the U-Net methods share; subclasses say what the condition is."""

    sampler_nets = ("generator",)
    settings_class = ImageToImageSettings
    discriminator_kind: ClassVar[str] = "patch"
    #: Generator input channels: the condition (and the noise plane for mask-to-image).
    in_channels: ClassVar[int] = 1

    def __init__(self, settings: ImageToImageSettings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        size = int(arch["image_size"])
        self.nets["generator"] = UNetGenerator(size, self.in_channels, 1,
                                               settings.generator_channels, settings.norm,
                                               settings.dropout)
        if self.discriminator_kind == "patch":
            self.nets["discriminator"] = PatchGAN(size, None, settings.discriminator_channels,
                                                  settings.norm, in_channels=2)
        else:
            self.nets["discriminator"] = DCGANDiscriminator(
                size, settings.discriminator_channels,
                "batch" if settings.norm == "batch" else "none", in_channels=2)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.nets["discriminator"].parameters()),
                "generator": list(self.nets["generator"].parameters())}

    def phases(self) -> list[tuple[str, int]]:
        return [("discriminator", 1), ("generator", 1)]

    def split(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition, target) of a ``real`` batch, (B, 1, H, W) each."""
        raise NotImplementedError

    def generator_input(self, condition: torch.Tensor, rng: torch.Generator | None,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
        return condition

    def _judge(self, condition: torch.Tensor, image: torch.Tensor, ctx: StepContext
               ) -> torch.Tensor:
        # One augmentation draw for the pair, so the condition and the image stay aligned.
        return self.nets["discriminator"](ctx.augment(torch.cat([condition, image], 1), ctx.rng))

    def loss(self, phase: str, batch, ctx: StepContext):
        condition, target = self.split(batch["real"])
        kind = self.settings.gan_loss
        if "fake" not in ctx.scratch:
            ctx.scratch["fake"] = self.nets["generator"](self.generator_input(condition,
                                                                              ctx.rng))
        fake = ctx.scratch["fake"]
        if phase == "discriminator":
            real_logits = self._judge(condition, target, ctx)
            fake_logits = self._judge(condition, fake.detach(), ctx)
            loss = discriminator_loss(real_logits, fake_logits, kind)
            return loss, {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean()}
        l_gan = generator_loss(self._judge(condition, fake, ctx), kind)
        l1 = l1_term(fake, target, self.settings.l1_weight)
        return l_gan + l1, {"g_loss": (l_gan + l1).detach(), "g_gan": l_gan.detach(),
                            "g_l1": l1.detach()}


@register("pix2pix")
class Pix2Pix(ImageToImage):
    """Enhancement: low-count image -> reference image of the same slice (``paired``
    data). arch: ``{"image_size": S}``."""

    data = "paired"

    def split(self, real):
        return real[:, 0:1], real[:, 1:2]

    def sampling_inputs(self, n, sources, rng):
        pairs = sources["real"]
        picks = torch.randperm(len(pairs), generator=rng).numpy()[np.arange(n) % len(pairs)]
        return {"low": pairs.batch(picks)[:, 0:1]}

    def sample(self, inputs, nets=None):
        return self.net("generator", nets)(inputs["low"])

    def latent_walk(self, inputs, n_steps: int, nets=None) -> torch.Tensor:
        """Enhancement has no latent space: the line between two low-count inputs."""
        return super().latent_walk({"low": inputs["low"]}, n_steps, nets)


class MaskToImage(ImageToImage):
    """Defect mask + noise -> image (``masked`` data). arch: ``{"image_size": S}``."""

    data = "masked"
    in_channels = 2

    def split(self, real):
        return real[:, 1:2], real[:, 0:1]

    def generator_input(self, condition, rng, noise=None):
        if noise is None:
            noise = torch.randn(condition.shape, generator=rng, device=rng.device)
        return torch.cat([condition, noise.to(condition.device, condition.dtype)], dim=1)

    def sampling_inputs(self, n, sources, rng):
        real = sources["real"]
        picks = torch.randperm(len(real), generator=rng).numpy()[np.arange(n) % len(real)]
        mask = real.batch(picks)[:, 1:2]
        return {"mask": mask, "noise": torch.randn(mask.shape, generator=rng),
                "label": real.labels(picks)}

    def sample(self, inputs, nets=None):
        return self.net("generator", nets)(self.generator_input(inputs["mask"], None,
                                                                inputs["noise"]))

    def latent_walk(self, inputs, n_steps: int, nets=None) -> torch.Tensor:
        """Walk between the noise planes of samples 0 and 1 with the mask of sample 0 held:
        the defect must stay where the mask says while the texture changes."""
        t = torch.linspace(0, 1, n_steps, device=inputs["noise"].device).view(-1, 1, 1, 1)
        noise = torch.lerp(inputs["noise"][0:1], inputs["noise"][1:2], t)
        mask = inputs["mask"][0:1].expand(n_steps, -1, -1, -1)
        return self.net("generator", nets)(self.generator_input(mask, None, noise))


@register("mask2image_patch")
class MaskToImagePatch(MaskToImage):
    """Mask-to-image judged by the PatchGAN (seed 003's first discriminator)."""

    discriminator_kind = "patch"


@register("mask2image_global")
class MaskToImageGlobal(MaskToImage):
    """Mask-to-image judged by the vanilla, global discriminator (seed 003's second)."""

    discriminator_kind = "global"
