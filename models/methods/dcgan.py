"""DCGAN (Radford et al. 2015) as a method of the training loop: the plain baseline the
attention GAN is measured against (same data, loop, augmentation and budget).

Noise ``z ~ N(0, I)`` (``latent_dim``, 100 in the paper) through :class:`DCGANGenerator`;
:class:`DCGANDiscriminator` gives one logit per image; losses of
:mod:`models.methods.losses` (``bce``: the paper's). Images are generated once per step and
the generator phase back-propagates through them, as for the attention GAN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from models.methods import register
from models.methods.base import NoiseMethod, StepContext
from models.methods.losses import GAN_LOSSES, discriminator_loss, generator_loss
from models.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class DCGANSettings:
    """The ``train.dcgan`` config section, parsed."""

    latent_dim: int
    generator_channels: int
    discriminator_channels: int
    gan_loss: str

    @classmethod
    def from_section(cls, s: Mapping[str, Any]) -> DCGANSettings:
        if s["gan_loss"] not in GAN_LOSSES:
            raise ValueError(f"train.dcgan.gan_loss: {s['gan_loss']!r} is not one of "
                             f"{', '.join(GAN_LOSSES)}")
        return cls(int(s["latent_dim"]), int(s["generator_channels"]),
                   int(s["discriminator_channels"]), str(s["gan_loss"]))


@register("dcgan")
class DCGAN(NoiseMethod):
    """arch: ``{"image_size": S}``."""

    settings_class = DCGANSettings

    def __init__(self, settings: DCGANSettings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        size = int(arch["image_size"])
        self.nets["generator"] = DCGANGenerator(settings.latent_dim, size,
                                                settings.generator_channels)
        self.nets["discriminator"] = DCGANDiscriminator(size, settings.discriminator_channels)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.nets["discriminator"].parameters()),
                "generator": list(self.nets["generator"].parameters())}

    def phases(self) -> list[tuple[str, int]]:
        return [("discriminator", 1), ("generator", 1)]

    def loss(self, phase: str, batch, ctx: StepContext):
        disc, kind = self.nets["discriminator"], self.settings.gan_loss
        if "fake" not in ctx.scratch:
            ctx.scratch["fake"] = self.nets["generator"](self.noise(len(batch["real"]), ctx.rng))
        fake = ctx.scratch["fake"]
        if phase == "discriminator":
            real_logits = disc(ctx.augment(batch["real"], ctx.rng))
            fake_logits = disc(ctx.augment(fake.detach(), ctx.rng))
            loss = discriminator_loss(real_logits, fake_logits, kind)
            return loss, {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean()}
        loss = generator_loss(disc(ctx.augment(fake, ctx.rng)), kind)
        return loss, {"g_loss": loss.detach()}
