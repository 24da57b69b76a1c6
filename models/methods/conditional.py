"""Class-conditional generation (RadioGAN, seed 002): one model for every defect class.

``dcgan_conditional`` and ``attention_gan_conditional`` are the DCGAN baseline and the
attention GAN with the class of each image (:data:`models.data.labels.DEFECT_CLASSES`, the
``defect_class`` of ``positron.h5``) given to both networks as RadioGAN does
(:mod:`models.nets.conditioning`): a 50-number embedding concatenated with the generator's
latent input, and a second embedding mapped to an image-sized plane that the discriminator
sees as a second channel. The real images come with their own classes; each generated image
of a step gets the class of one real image of the batch (a fresh draw of the training
distribution), so the discriminator judges real and generated images of the same class mix.

Sampling draws classes from the training split's class frequencies (stored in the
architecture record: ``class_counts``) unless told which (``generate.classes``); a class the
training split does not hold cannot be generated (the generator never saw it) and is refused
by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.data.labels import DEFECT_CLASSES
from models.methods import register
from models.methods.attention_gan import AttentionGAN
from models.methods.base import Method, StageInputs, StepContext
from models.methods.dcgan import DCGAN
from models.methods.losses import (
    attention_perceptual_loss,
    discriminator_loss,
    generator_loss,
)
from models.nets.conditioning import EMBED_DIM, ClassChannel, ClassInput
from models.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from models.nets.densenet import DenseNetGenerator
from models.nets.init import init_weights
from models.nets.patchgan import PatchGAN
from models.nets.vae import kl_divergence


def class_counts(labels: np.ndarray) -> list[int]:
    """Images per class (len(DEFECT_CLASSES),) of class numbers."""
    return np.bincount(np.asarray(labels, np.int64), minlength=len(DEFECT_CLASSES)).tolist()


def sampling_classes(n: int, counts: Sequence[int], rng: torch.Generator,
                     wanted: Sequence[str] | None = None, key: str = "generate.classes"
                     ) -> torch.Tensor:
    """``n`` class numbers: drawn from the training frequencies ``counts``, or, for
    ``wanted`` names, the same number of each (cycled). A wanted class with no training image
    raises a ValueError naming ``key``."""
    counts = np.asarray(counts, np.float64)
    if wanted:
        lookup = {name: i for i, name in enumerate(DEFECT_CLASSES)}
        unknown = [w for w in wanted if w not in lookup]
        if unknown:
            raise ValueError(f"config key {key}: {', '.join(map(repr, unknown))} is not a defect "
                             f"class ({', '.join(DEFECT_CLASSES)})")
        absent = [w for w in wanted if counts[lookup[w]] == 0]
        if absent:
            held = [c for c, k in zip(DEFECT_CLASSES, counts, strict=True) if k > 0]
            raise ValueError(f"config key {key}: the training split holds no "
                             f"{', '.join(map(repr, absent))} image, so the model cannot "
                             f"generate that class (it holds: {', '.join(held)})")
        ids = torch.tensor([lookup[w] for w in wanted], dtype=torch.int64)
        return ids[torch.arange(n) % len(ids)]
    p = torch.as_tensor(counts / counts.sum(), dtype=torch.float64)
    return torch.multinomial(p, n, replacement=True, generator=rng).to(torch.int64)


class ConditionalMixin:
    """What the conditional methods share: the class record and the class draws."""

    conditional: ClassVar[bool] = True

    @classmethod
    def _with_classes(cls, arch: dict[str, Any], inputs: StageInputs) -> dict[str, Any]:
        labels = inputs.sources["real"].labels(np.arange(len(inputs.sources["real"])))
        return {**arch, "class_counts": class_counts(labels.numpy())}

    def draw_classes(self, n: int, rng: torch.Generator,
                     wanted: Sequence[str] | None = None) -> torch.Tensor:
        return sampling_classes(n, self.arch["class_counts"], rng, wanted)


@register("dcgan_conditional")
class DCGANConditional(ConditionalMixin, DCGAN):
    """arch: ``{"image_size": S, "class_counts": [...]}``; section ``train.dcgan_conditional``
    (the DCGAN keys)."""

    def __init__(self, settings, arch: dict[str, Any]) -> None:
        Method.__init__(self, settings, arch)
        size, n = int(arch["image_size"]), len(DEFECT_CLASSES)
        self.nets["class_input"] = ClassInput(n)
        self.nets["generator"] = DCGANGenerator(settings.latent_dim + EMBED_DIM, size,
                                                settings.generator_channels)
        self.nets["class_channel"] = ClassChannel(n, size)
        self.nets["discriminator"] = DCGANDiscriminator(size, settings.discriminator_channels,
                                                        in_channels=2)

    sampler_nets = ("class_input", "generator")

    @classmethod
    def build(cls, settings, inputs: StageInputs, generator: torch.Generator):
        method = cls(settings, cls._with_classes({"image_size": int(inputs.image_size)}, inputs))
        init_weights(method.nets, generator)
        return method

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": [*self.nets["discriminator"].parameters(),
                                  *self.nets["class_channel"].parameters()],
                "generator": [*self.nets["generator"].parameters(),
                              *self.nets["class_input"].parameters()]}

    def _judge(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.nets["discriminator"](self.nets["class_channel"](images, labels))

    def generate(self, z: torch.Tensor, labels: torch.Tensor, nets=None) -> torch.Tensor:
        return self.net("generator", nets)(self.net("class_input", nets)(z, labels))

    def loss(self, phase: str, batch, ctx: StepContext):
        kind, labels = self.settings.gan_loss, batch["real_label"]
        if "fake" not in ctx.scratch:
            fake_labels = labels[torch.randperm(len(labels), generator=ctx.rng,
                                                device=ctx.rng.device).to(labels.device)]
            ctx.scratch["fake"] = (self.generate(self.noise(len(labels), ctx.rng), fake_labels),
                                   fake_labels)
        fake, fake_labels = ctx.scratch["fake"]
        if phase == "discriminator":
            real_logits = self._judge(ctx.augment(batch["real"], ctx.rng), labels)
            fake_logits = self._judge(ctx.augment(fake.detach(), ctx.rng), fake_labels)
            loss = discriminator_loss(real_logits, fake_logits, kind)
            return loss, {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean()}
        loss = generator_loss(self._judge(ctx.augment(fake, ctx.rng), fake_labels), kind)
        return loss, {"g_loss": loss.detach()}

    def sampling_inputs(self, n, sources, rng, classes: Sequence[str] | None = None):
        z = self.noise(n, rng)
        return {"z": z, "label": self.draw_classes(n, rng, classes).to(z.device)}

    def sample(self, inputs, nets=None):
        return self.generate(inputs["z"], inputs["label"], nets)

    def latent_walk(self, inputs, n_steps: int, nets=None) -> torch.Tensor:
        """Walk between the noise of samples 0 and 1 with the class of sample 0 held (a
        per-class latent walk: only the noise moves)."""
        t = torch.linspace(0, 1, n_steps, device=inputs["z"].device)[:, None]
        line = torch.lerp(inputs["z"][0:1], inputs["z"][1:2], t)
        return self.generate(line, inputs["label"][:1].expand(n_steps), nets)


@register("attention_gan_conditional")
class AttentionGANConditional(ConditionalMixin, AttentionGAN):
    """The attention GAN with the class as RadioGAN gives it: the generator sees
    ``[z ; c ; e(y)]``, the PatchGAN the image and the class plane. The attention perceptual
    loss compares the discriminator's features of a generated image with those of the memory
    slots' images, both seen with the plane of class ``none`` (one plane for both, so the
    loss measures the image content, as in the unconditional method). Section
    ``train.attention_gan_conditional`` (the attention GAN's keys)."""

    sampler_nets = ("encoder", "memory", "class_input", "generator")

    def __init__(self, settings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        g, d = settings.generator, settings.discriminator
        size, n = int(arch["image_size"]), len(DEFECT_CLASSES)
        self.nets["class_input"] = ClassInput(n)
        width = int(arch["latent_dim"]) + int(arch["slot_dim"]) + EMBED_DIM
        self.nets["generator"] = DenseNetGenerator(width, size, g.base_channels, g.growth_rate,
                                                   g.layers_per_block, g.compression)
        self.nets["class_channel"] = ClassChannel(n, size)
        self.nets["discriminator"] = PatchGAN(size, d.n_layers, d.base_channels, d.norm,
                                              in_channels=2)

    @classmethod
    def build(cls, settings, inputs: StageInputs, generator: torch.Generator):
        method = super().build(settings, inputs, generator)
        # from_parts made the architecture from the files; add the class record to it.
        method.arch = cls._with_classes(method.arch, inputs)
        return method

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().param_groups()
        groups["discriminator"] += list(self.nets["class_channel"].parameters())
        groups["generator"] += list(self.nets["class_input"].parameters())
        return groups

    def _generate(self, query, eps, rng, nets=None, labels=None):
        mu, logvar = self.net("encoder", nets)(query)
        z = (mu + torch.exp(0.5 * logvar) * eps) if eps is not None else (
            mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=rng,
                                                       device=rng.device).to(mu.device))
        context, weights = self.net("memory", nets)(z)
        kl = kl_divergence(mu, logvar).mean() / mu.shape[1]
        latent = self.net("class_input", nets)(torch.cat([z, context], dim=1), labels)
        return self.net("generator", nets)(latent), weights, kl

    def _judge(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.nets["discriminator"](self.nets["class_channel"](images, labels))

    def loss(self, phase: str, batch, ctx: StepContext):
        s, labels = self.settings, batch["real_label"]
        if "fake" not in ctx.scratch:
            fake_labels = labels[torch.randperm(len(labels), generator=ctx.rng,
                                                device=ctx.rng.device).to(labels.device)]
            ctx.scratch["fake"] = (*self._generate(batch["query"], None, ctx.rng,
                                                   labels=fake_labels), fake_labels)
        fake, weights, kl, fake_labels = ctx.scratch["fake"]
        if phase == "discriminator":
            real_logits = self._judge(ctx.augment(batch["real"], ctx.rng), labels)
            fake_logits = self._judge(ctx.augment(fake.detach(), ctx.rng), fake_labels)
            loss = discriminator_loss(real_logits, fake_logits, s.gan_loss, s.patch_loss)
            return loss, {"d_loss": loss.detach(), "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean()}
        l_gan = generator_loss(self._judge(ctx.augment(fake, ctx.rng), fake_labels),
                               s.gan_loss, s.patch_loss)
        l_apg = self._apg_conditional(fake, weights, fake_labels)
        loss = l_gan + s.lambda_apg * l_apg
        if s.finetune_encoder and s.encoder_kl_weight > 0:
            loss = loss + s.encoder_kl_weight * kl
        return loss, {"g_loss": loss.detach(), "g_gan": l_gan.detach(),
                      "g_apg": l_apg.detach(), "query_kl": kl.detach()}

    def _apg_conditional(self, fake, weights, labels) -> torch.Tensor:
        disc, planes = self.nets["discriminator"], self.nets["class_channel"]
        slots = self.nets["slot_images"].images
        was_training = disc.training
        disc.eval()
        try:
            with torch.no_grad():
                # Slot features with each slot seen under class 0 ("none"): the reference
                # texture of the memory, independent of the batch's classes.
                _, real = disc.features(planes(slots, torch.zeros(len(slots), dtype=torch.int64,
                                                                  device=slots.device)))
            _, generated = disc.features(planes(fake, torch.zeros_like(labels)))
        finally:
            disc.train(was_training)
        return attention_perceptual_loss(generated, real, weights, self.settings.apg_form)

    def sampling_inputs(self, n, sources, rng, classes: Sequence[str] | None = None):
        inputs = super().sampling_inputs(n, sources, rng)
        return {**inputs, "label": self.draw_classes(n, rng, classes)}

    def sample(self, inputs, nets=None):
        return self._generate(inputs["query"], inputs["eps"], None, nets, inputs["label"])[0]

    def latent_walk(self, inputs, n_steps: int, nets=None) -> torch.Tensor:
        """Walk between the queries of samples 0 and 1 with the class of sample 0 held."""
        mu, logvar = self.net("encoder", nets)(inputs["query"][:2])
        z = mu + torch.exp(0.5 * logvar) * inputs["eps"][:2]
        t = torch.linspace(0, 1, n_steps, device=z.device)[:, None]
        line = torch.lerp(z[0:1], z[1:2], t)
        context, _ = self.net("memory", nets)(line)
        latent = self.net("class_input", nets)(torch.cat([line, context], dim=1),
                                               inputs["label"][:1].expand(n_steps))
        return self.net("generator", nets)(latent)


def conditional_names() -> list[str]:
    """Names of the registered methods that can be conditioned on a class."""
    from models.methods import method_class, method_names

    return [m for m in method_names() if method_class(m).conditional]
