"""The attention GAN of the seed paper (sec. 3 and 4.1).

Data flow of one generated image:

1. a CT image (``query`` batch) goes through the CT encoder pretrained as a VAE
   (:mod:`models.nets.vae`, sec. 3.2, eq. 2-3); ``z = mu + sigma * eps`` is the query;
2. the attention memory (:mod:`models.nets.attention`, eq. 6) scores ``z`` against the
   positron feature slots (PCANet + PCA of the training images, eq. 4-5) and returns the
   context ``c`` and the weights ``a``;
3. the DenseNet generator (:mod:`models.nets.densenet`, eq. 7) maps ``[z ; c]`` to an image;
4. the PatchGAN (:mod:`models.nets.patchgan`, eq. 8) judges it against the real images:
   ``real_domain: positron`` (default: the generator must produce positron images) or ``ct``
   (the paper's literal text: the real samples are the medical images, and only the
   attention perceptual loss pulls towards positron features);
5. generator loss ``L_GAN + lambda_APG * L_APG`` (eq. 9-10, :mod:`models.methods.losses`),
   with ``L_APG`` measured against the memory slots' representative positron images, plus,
   while the encoder is fine-tuned, ``encoder_kl_weight`` times the queries' KL divergence
   from the prior per latent dimension (the VAE's own regulariser, sec. 3.2). Without it the
   fine-tuned encoder moves every query by one common offset (measured: the mean query's
   norm grew from 2 to 17 in 30 steps), after which every image attends the same slot.

Joint training (sec. 4.1): two Adam optimisers, ``discriminator`` and ``generator``; the
latter updates the generator, ``W_a`` and (``finetune_encoder``, default) the CT encoder
together, so the discriminator's gradient reaches the front end. Each training step updates
the discriminator once, then the generator once; as in pix2pix the images are generated once
per step (in the discriminator phase, kept in ``ctx.scratch``) and the generator phase
back-propagates through that same forward pass, judged by the just-updated discriminator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.data.image_set import check_images, open_image_set
from models.data.positron_features import read_positron_features
from models.methods import register
from models.methods.base import Method, StageInputs, StepContext
from models.methods.losses import (
    APG_FORMS,
    GAN_LOSSES,
    PATCH_LOSSES,
    attention_perceptual_loss,
    discriminator_loss,
    generator_loss,
)
from models.methods.vae import VAESettings
from models.nets.attention import AttentionMemory
from models.nets.densenet import DenseNetGenerator
from models.nets.init import init_weights
from models.nets.patchgan import NORMS, PatchGAN
from models.nets.vae import Encoder, kl_divergence, reparameterise
from models.training.checkpoint import load_checkpoint
from pipeline.fileio import decoded_attrs

REAL_DOMAINS = ("positron", "ct")


def _choice(value: str, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ValueError(f"train.attention_gan.{key}: {value!r} is not one of "
                         f"{', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class GeneratorSettings:
    base_channels: int
    growth_rate: int
    layers_per_block: int
    compression: float


@dataclass(frozen=True)
class DiscriminatorSettings:
    base_channels: int
    n_layers: int | None
    norm: str


@dataclass(frozen=True)
class AttentionGANSettings:
    """The ``train.attention_gan`` config section, parsed."""

    real_domain: str
    lambda_apg: float
    apg_form: str
    gan_loss: str
    patch_loss: str
    finetune_encoder: bool
    encoder_kl_weight: float
    generator: GeneratorSettings
    discriminator: DiscriminatorSettings

    @classmethod
    def from_section(cls, s: Mapping[str, Any]) -> AttentionGANSettings:
        g, d = s["generator"], s["discriminator"]
        return cls(
            real_domain=_choice(s["real_domain"], REAL_DOMAINS, "real_domain"),
            lambda_apg=float(s["lambda_apg"]),
            apg_form=_choice(s["apg_form"], APG_FORMS, "apg_form"),
            gan_loss=_choice(s["gan_loss"], GAN_LOSSES, "gan_loss"),
            patch_loss=_choice(s["patch_loss"], PATCH_LOSSES, "patch_loss"),
            finetune_encoder=bool(s["finetune_encoder"]),
            encoder_kl_weight=float(s["encoder_kl_weight"]),
            generator=GeneratorSettings(int(g["base_channels"]), int(g["growth_rate"]),
                                        int(g["layers_per_block"]), float(g["compression"])),
            discriminator=DiscriminatorSettings(
                int(d["base_channels"]), None if d["n_layers"] is None else int(d["n_layers"]),
                _choice(d["norm"], NORMS, "discriminator.norm")))


def _slot_images(positron_h5, features_h5, rows: np.ndarray, feature_attrs: dict,
                 image_size: int) -> torch.Tensor:
    """The slots' representative images from ``positron.h5``, (S, 1, H, W), after checking
    that ``features.h5`` was computed from this very file."""
    with open_image_set(positron_h5, "positron image set") as f:
        attrs = decoded_attrs(f)
        for key in ("config_sha256", "created_utc"):
            if str(attrs.get(key, "")) != str(feature_attrs.get(f"source_{key}", "")):
                raise ValueError(f"{features_h5} was computed from another positron image set "
                                 f"than {positron_h5} ({key} differs); run positron_features "
                                 "again")
        n, h, w = f["images"].shape
        if h != image_size or rows.min(initial=0) < 0 or rows.max(initial=0) >= n:
            raise ValueError(f"{features_h5}: slot_rows do not index the {n} images of "
                             f"{positron_h5}")
        order = np.argsort(rows)
        unique, inverse = np.unique(rows[order], return_inverse=True)
        images = f["images"][unique][inverse]
    check_images(positron_h5, images)  # the memory's images enter every generated one
    out = np.empty_like(images)
    out[order] = images
    return torch.from_numpy(out)[:, None]


class ImageBank(nn.Module):
    """The memory slots' representative positron images, (S, 1, H, W), as a buffer (saved
    with the checkpoint, so sampling and resuming need no data file)."""

    def __init__(self, n: int, image_size: int) -> None:
        super().__init__()
        self.register_buffer("images", torch.zeros(n, 1, image_size, image_size))


@register("attention_gan")
class AttentionGAN(Method):
    """arch keys: ``image_size``, ``latent_dim``, ``encoder_image_size``,
    ``encoder_base_channels``, ``encoder_max_channels``, ``n_slots``, ``slot_dim``."""

    sources = ("real", "query")
    sampler_nets = ("encoder", "memory", "generator")
    settings_class = AttentionGANSettings
    #: Which mechanism this class removes (:data:`ABLATIONS`); ``none`` for the full model.
    ablation: ClassVar[str] = "none"

    def __init__(self, settings: AttentionGANSettings, arch: dict[str, Any]) -> None:
        super().__init__(settings, arch)
        g, d = settings.generator, settings.discriminator
        latent, size = int(arch["latent_dim"]), int(arch["image_size"])
        self.nets["encoder"] = Encoder(int(arch["encoder_image_size"]), latent,
                                       int(arch["encoder_base_channels"]),
                                       int(arch["encoder_max_channels"]))
        self.nets["memory"] = AttentionMemory(int(arch["n_slots"]), int(arch["slot_dim"]),
                                              latent)
        self.nets["generator"] = DenseNetGenerator(latent + int(arch["slot_dim"]), size,
                                                   g.base_channels, g.growth_rate,
                                                   g.layers_per_block, g.compression)
        self.nets["discriminator"] = PatchGAN(size, d.n_layers, d.base_channels, d.norm)
        self.nets["slot_images"] = ImageBank(int(arch["n_slots"]), size)
        if not settings.finetune_encoder:
            self.nets["encoder"].requires_grad_(False)

    # -- building from the stage's inputs ------------------------------------------------
    @classmethod
    def build(cls, settings: AttentionGANSettings, inputs: StageInputs,
              generator: torch.Generator) -> AttentionGAN:
        """Encoder from the CT VAE's ``final.pt``, slots from ``features.h5`` and their
        images from ``positron.h5``; every file checked against the others first."""
        files = inputs.files
        vae = load_checkpoint(files["encoder"], "final", "vae")
        vae_settings = VAESettings.from_section(vae["settings"]["method"])
        encoder_arch = {"image_size": int(vae["arch"]["image_size"]),
                        "latent_dim": vae_settings.latent_dim,
                        "base_channels": vae_settings.base_channels,
                        "max_channels": vae_settings.max_channels}
        query_size = int(inputs.sources["query"].batch([0]).shape[-1])
        if query_size != encoder_arch["image_size"]:
            raise ValueError(f"{files['encoder']}: the CT encoder takes "
                             f"{encoder_arch['image_size']} px images but {files['ct']} holds "
                             f"{query_size} px images; run pretrain_vae again on this ct.h5")
        memory = read_positron_features(files["features"])
        slot_images = _slot_images(files["positron"], files["features"], memory.slot_rows,
                                   memory.attrs, inputs.image_size)
        encoder_state = {k.removeprefix("vae.encoder."): v for k, v in vae["nets"].items()
                         if k.startswith("vae.encoder.")}
        return cls.from_parts(settings, encoder_arch, encoder_state, memory.slots, slot_images,
                              inputs.image_size, generator)

    @classmethod
    def from_parts(cls, settings: AttentionGANSettings, encoder_arch: Mapping[str, Any],
                   encoder_state: Mapping[str, torch.Tensor] | None, slots: np.ndarray,
                   slot_images: torch.Tensor, image_size: int,
                   generator: torch.Generator) -> AttentionGAN:
        """A new method from its parts: weights drawn from ``generator``, then the encoder
        weights (when given), the memory slots (and a fresh ``W_a``) and the slot images."""
        method = cls(settings, cls.arch_from_inputs(encoder_arch, slots, image_size))
        init_weights(method.nets, generator)
        with torch.no_grad():
            if encoder_state is not None:
                method.nets["encoder"].load_state_dict(encoder_state)
            method.nets["memory"].set_slots(torch.as_tensor(slots, dtype=torch.float32),
                                            generator)
            method.nets["slot_images"].images.copy_(slot_images)
        return method

    @staticmethod
    def arch_from_inputs(encoder_arch: Mapping[str, Any], slots: np.ndarray,
                         image_size: int) -> dict[str, Any]:
        """The architecture record from the VAE checkpoint's and the memory's shapes."""
        return {"image_size": int(image_size), "latent_dim": int(encoder_arch["latent_dim"]),
                "encoder_image_size": int(encoder_arch["image_size"]),
                "encoder_base_channels": int(encoder_arch["base_channels"]),
                "encoder_max_channels": int(encoder_arch["max_channels"]),
                "n_slots": int(slots.shape[0]), "slot_dim": int(slots.shape[1])}

    # -- the verbs ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        front = list(self.nets["generator"].parameters()) + list(
            self.nets["memory"].parameters())
        if self.settings.finetune_encoder:
            front += list(self.nets["encoder"].parameters())
        return {"discriminator": list(self.nets["discriminator"].parameters()),
                "generator": front}

    def phases(self) -> list[tuple[str, int]]:
        return [("discriminator", 1), ("generator", 1)]

    def _query(self, query: torch.Tensor, eps: torch.Tensor | None,
               rng: torch.Generator | None, nets=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries ``z`` (B, q) of CT images ``query`` and the KL per latent dimension;
        the ``random_query`` ablation draws ``z`` from N(0, I) (``eps`` itself) instead."""
        if self.ablation == "random_query":
            if eps is None:
                eps = torch.randn((len(query), int(self.arch["latent_dim"])), generator=rng,
                                  device=rng.device).to(query.device)
            return eps, torch.zeros((), device=eps.device)
        mu, logvar = self.net("encoder", nets)(query)
        z = (mu + torch.exp(0.5 * logvar) * eps) if eps is not None else reparameterise(
            mu, logvar, rng)
        return z, kl_divergence(mu, logvar).mean() / mu.shape[1]

    def _context(self, z: torch.Tensor, permutation: torch.Tensor | None,
                 rng: torch.Generator | None, nets=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``c`` and attention weights of queries ``z``, with the ablations of the
        memory: ``no_context`` gives the generator ``c = 0``; ``shuffled_slots`` applies
        each image's weights to the slots in a random order (``permutation``, else drawn
        from ``rng``)."""
        memory = self.net("memory", nets)
        if self.ablation == "shuffled_slots" and permutation is None:
            n_slots = int(self.arch["n_slots"])
            permutation = torch.argsort(torch.rand((len(z), n_slots), generator=rng,
                                                   device=rng.device), dim=1).to(z.device)
        context, weights = memory(z, permutation if self.ablation == "shuffled_slots"
                                  else None)
        if self.ablation == "no_context":
            context = torch.zeros_like(context)
        return context, weights

    def _generate(self, query: torch.Tensor, eps: torch.Tensor | None,
                  rng: torch.Generator | None, nets=None,
                  permutation: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, attention weights and the queries' KL per latent dimension."""
        z, kl = self._query(query, eps, rng, nets)
        context, weights = self._context(z, permutation, rng, nets)
        return self.net("generator", nets)(torch.cat([z, context], dim=1)), weights, kl

    def loss(self, phase: str, batch, ctx: StepContext):
        s = self.settings
        disc = self.nets["discriminator"]
        if "fake" not in ctx.scratch:
            ctx.scratch["fake"] = self._generate(batch["query"], None, ctx.rng)
        fake, weights, kl = ctx.scratch["fake"]
        if phase == "discriminator":
            real_logits = disc(ctx.augment(batch["real"], ctx.rng))
            fake_logits = disc(ctx.augment(fake.detach(), ctx.rng))
            loss = discriminator_loss(real_logits, fake_logits, s.gan_loss, s.patch_loss)
            return loss, {"d_loss": loss.detach(),
                          "d_real": real_logits.detach().mean(),
                          "d_fake": fake_logits.detach().mean()}
        l_gan = generator_loss(disc(ctx.augment(fake, ctx.rng)), s.gan_loss, s.patch_loss)
        l_apg = self._apg(fake, weights)
        loss = l_gan + (0.0 if self.ablation == "no_apg" else s.lambda_apg) * l_apg
        values = {"g_gan": l_gan.detach(), "g_apg": l_apg.detach(),
                  "attention_max": weights.detach().max(dim=1).values.mean(),
                  "query_kl": kl.detach()}
        if s.finetune_encoder and s.encoder_kl_weight > 0:
            loss = loss + s.encoder_kl_weight * kl
        return loss, {"g_loss": loss.detach(), **values}

    def _apg(self, fake: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """L_APG with the discriminator as a fixed feature extractor (running statistics)."""
        disc = self.nets["discriminator"]
        was_training = disc.training
        disc.eval()
        try:
            with torch.no_grad():
                _, real = disc.features(self.nets["slot_images"].images)
            _, generated = disc.features(fake)
        finally:
            disc.train(was_training)
        return attention_perceptual_loss(generated, real, weights, self.settings.apg_form)

    def sampling_inputs(self, n: int, sources, rng: torch.Generator):
        query = sources["query"]
        order = torch.randperm(len(query), generator=rng).numpy()
        picks = order[np.arange(n) % len(order)]
        inputs = {"query": query.batch(picks),
                  "eps": torch.randn((n, int(self.arch["latent_dim"])), generator=rng)}
        if self.ablation == "shuffled_slots":
            inputs["permutation"] = torch.argsort(
                torch.rand((n, int(self.arch["n_slots"])), generator=rng), dim=1)
        return inputs

    def sample(self, inputs, nets=None):
        return self._generate(inputs["query"], inputs["eps"], None, nets,
                              inputs.get("permutation"))[0]

    def latent_walk(self, inputs, n_steps: int, nets=None) -> torch.Tensor:
        """Walk between the queries ``z`` of samples 0 and 1 (encoder mean plus their noise);
        the memory attends each point of the line and the generator draws it."""
        z, _ = self._query(inputs["query"][:2], inputs["eps"][:2], None, nets)
        t = torch.linspace(0, 1, n_steps, device=z.device)[:, None]
        line = torch.lerp(z[0:1], z[1:2], t)
        permutation = inputs.get("permutation")
        if permutation is not None:  # one order along the walk: only the query moves
            permutation = permutation[:1].expand(n_steps, -1)
        context, _ = self._context(line, permutation, None, nets)
        return self.net("generator", nets)(torch.cat([line, context], dim=1))

    def queries(self, inputs, nets=None) -> torch.Tensor:
        """The queries ``z`` (n, q) of sampling inputs."""
        return self._query(inputs["query"], inputs["eps"], None, nets)[0]

    def attention(self, inputs, nets=None) -> torch.Tensor:
        """Attention weights (n, S) of sampling inputs (which slots each image attends)."""
        return self.net("memory", nets)(self.queries(inputs, nets))[1]


#: The seed paper's mechanisms, each removed by one ablation (``train.methods`` entry, same
#: ``train.attention_gan`` settings and budget as the full model; Table 1 rows).
ABLATIONS = {
    "attention_gan_no_context": "no_context",
    "attention_gan_random_query": "random_query",
    "attention_gan_no_apg": "no_apg",
    "attention_gan_shuffled_slots": "shuffled_slots",
}


def _ablated(name: str, ablation: str) -> type[AttentionGAN]:
    doc = {"no_context": "the generator sees ``[z ; 0]``: no context from the memory",
           "random_query": "the query ``z`` is drawn from N(0, I), not encoded from a CT image",
           "no_apg": "lambda_APG = 0: no attention perceptual loss",
           "shuffled_slots": "each image's attention weights fall on the slots in a random "
                             "order, so its context does not depend on what it attended"}
    cls = type(name, (AttentionGAN,), {"ablation": ablation, "__doc__":
               f"Ablation of the attention GAN: {doc[ablation]}. Settings: "
               "``train.attention_gan``."})
    return register(name)(cls)


for _name, _ablation in ABLATIONS.items():
    _ablated(_name, _ablation)
