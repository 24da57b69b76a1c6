"""The VAE as a method of the training loop: the CT encoder's pretraining (``pretrain_vae``
rule, sec. 3.2), and a baseline that generates by decoding prior samples ``z ~ N(0, I)``.

The network and its loss (negative ELBO, ``kl_weight`` as beta) are
:class:`models.nets.vae.ConvVAE`; one phase, one optimiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.methods import register
from models.methods.base import Method, StepContext
from models.nets.vae import ConvVAE


@dataclass(frozen=True)
class VAESettings:
    """Network and loss settings (``pretrain_vae`` section)."""

    latent_dim: int
    base_channels: int
    max_channels: int
    kl_weight: float

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> VAESettings:
        return cls(latent_dim=int(section["latent_dim"]),
                   base_channels=int(section["base_channels"]),
                   max_channels=int(section["max_channels"]),
                   kl_weight=float(section["kl_weight"]))


@register("vae")
class VAE(Method):
    """arch: ``{"image_size": S}``."""

    sources = ("real",)
    sampler_nets = ("vae",)
    settings_class = VAESettings

    def __init__(self, settings: VAESettings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        self.nets["vae"] = ConvVAE(int(arch["image_size"]), settings.latent_dim,
                                   settings.base_channels, settings.max_channels)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vae": list(self.nets["vae"].parameters())}

    def phases(self) -> list[tuple[str, int]]:
        return [("vae", 1)]

    def loss(self, phase, batch, ctx: StepContext):
        loss, parts = self.nets["vae"].loss(batch["real"], self.settings.kl_weight, ctx.rng)
        return loss, {"loss": loss.detach(), "recon": parts["recon"].detach(),
                      "kl": parts["kl"].detach()}

    def sampling_inputs(self, n, sources, rng):
        return {"z": torch.randn((n, self.settings.latent_dim), generator=rng)}

    def sample(self, inputs, nets=None):
        return self.net("vae", nets).decoder(inputs["z"])

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded posterior means of images (B, 1, S, S)."""
        vae = self.nets["vae"]
        return vae.decoder(vae.encoder(images)[0])
