"""WGAN with gradient penalty (Gulrajani et al. 2017), the paper's WGAN baseline; the original
weight clipping (Arjovsky et al. 2017) as an option.

Generator and critic have DCGAN's layout (:mod:`models.nets.dcgan`); the critic has no batch
norm (the penalty is per image). The critic minimises ``E[C(G(z))] - E[C(x)] + lambda
E[(|grad C(x_hat)| - 1)^2]`` with ``x_hat`` uniformly between a real and a generated image,
``n_critic`` times per generator step, each time on a new real batch and new noise; the
generator minimises ``-E[C(G(z))]``. With ``clip`` set, the penalty is replaced by clipping
every critic weight to ``[-clip, clip]`` after each critic step. DiffAugment, when on, is
applied to the real and generated images before the critic (and so before the penalty's
interpolation), as in Zhao et al.'s WGAN-GP experiments.

Budget: the critic draws ``n_critic`` real batches per generator step, so for the same
number of real images as the other methods it makes ``train.steps / n_critic`` generator
steps (:mod:`models.training.loop`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.methods import register
from models.methods.base import NoiseMethod, StepContext
from models.nets.dcgan import DCGANDiscriminator, DCGANGenerator


@dataclass(frozen=True)
class WGANSettings:
    """The ``train.wgan_gp`` config section, parsed."""

    latent_dim: int
    generator_channels: int
    critic_channels: int
    n_critic: int
    gp_weight: float
    clip: float | None

    @classmethod
    def from_section(cls, s: Mapping[str, Any]) -> WGANSettings:
        return cls(int(s["latent_dim"]), int(s["generator_channels"]),
                   int(s["critic_channels"]), int(s["n_critic"]), float(s["gp_weight"]),
                   None if s["clip"] is None else float(s["clip"]))


@register("wgan_gp")
class WGANGP(NoiseMethod):
    """arch: ``{"image_size": S}``."""

    settings_class = WGANSettings

    def __init__(self, settings: WGANSettings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        size = int(arch["image_size"])
        self.nets["generator"] = DCGANGenerator(settings.latent_dim, size,
                                                settings.generator_channels)
        self.nets["critic"] = DCGANDiscriminator(size, settings.critic_channels, norm="none")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"critic": list(self.nets["critic"].parameters()),
                "generator": list(self.nets["generator"].parameters())}

    def phases(self) -> list[tuple[str, int]]:
        return [("critic", self.settings.n_critic), ("generator", 1)]

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor,
                         rng: torch.Generator) -> torch.Tensor:
        """``E[(|grad_x C(x_hat)|_2 - 1)^2]`` at points ``x_hat`` drawn uniformly on the
        segments between real and generated images."""
        t = torch.rand((len(real), 1, 1, 1), generator=rng, device=rng.device).to(real)
        x_hat = (t * real + (1 - t) * fake).requires_grad_(True)
        grad, = torch.autograd.grad(self.nets["critic"](x_hat).sum(), x_hat, create_graph=True)
        return (grad.flatten(1).norm(dim=1) - 1).square().mean()

    def loss(self, phase: str, batch, ctx: StepContext):
        critic, s = self.nets["critic"], self.settings
        n = len(batch["real"])
        if phase == "critic":
            with torch.no_grad():
                fake = self.nets["generator"](self.noise(n, ctx.rng))
            real = ctx.augment(batch["real"], ctx.rng)
            fake = ctx.augment(fake, ctx.rng)
            distance = critic(real).mean() - critic(fake).mean()
            loss = -distance
            values = {"wasserstein": distance.detach()}
            if s.clip is None:
                gp = self.gradient_penalty(real, fake, ctx.rng)
                loss = loss + s.gp_weight * gp
                values["gradient_penalty"] = gp.detach()
            return loss, {"critic_loss": loss.detach(), **values}
        fake = self.nets["generator"](self.noise(n, ctx.rng))
        loss = -critic(ctx.augment(fake, ctx.rng)).mean()
        return loss, {"g_loss": loss.detach()}

    @torch.no_grad()
    def after_step(self, phase: str) -> None:
        if phase == "critic" and self.settings.clip is not None:
            for p in self.nets["critic"].parameters():
                p.clamp_(-self.settings.clip, self.settings.clip)

