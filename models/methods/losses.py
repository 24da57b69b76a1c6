"""Adversarial losses and the attention perceptual loss of the seed paper (eq. 9-10).

GAN losses take discriminator logits (a PatchGAN's (B, 1, h, w) map or a (B,) decision):

* ``bce``: the original GAN (Goodfellow et al. 2014) with the non-saturating generator loss,
  ``L_D = softplus(-D(x)) + softplus(D(G(z)))``, ``L_G = softplus(-D(G(z)))``
  (``softplus(-t) = -log sigmoid(t)``), the paper's "L_GAN similar as the original GAN";
* ``lsgan``: least squares (Mao et al. 2017), ``1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2`` and
  ``1/2 (D(G(z)) - 1)^2``;
* ``hinge``: ``relu(1 - D(x)) + relu(1 + D(G(z)))`` and ``-D(G(z))``.

``patch_loss``: ``per_patch`` applies the loss to every patch logit and averages (pix2pix);
``mean`` applies it to the mean of the map, the paper's decision (sec. 3.4).

Attention perceptual loss (eq. 9): over the discriminator's hidden layers ``i`` with ``W_i``
elements per image,

    L_APG = E_b sum_i (1 / W_i) sum_s a_b(s) || D'_i(x_s) - D_i(G(a_b)) ||_1

where ``a_b`` are generated image b's attention weights over the memory slots and ``x_s`` the
slots' positron images (``attended`` form, eq. 9 read per image). ``D'`` is the
discriminator seen as a fixed feature extractor: its features of the real images carry no
gradient, and the method evaluates both sides with batch-norm running statistics, so a
feature does not depend on which images share its batch. The ``batch_mean`` form (the
default) replaces the per-sample weighted distances by the distance of the means,
``sum_i (1/W_i) || mean_s D'_i(x_s) - mean_b D_i(G(a_b)) ||_1`` (feature matching, Salimans
et al. 2016): the paper's "distribution distance between the generated data and the positron
images". Per image, eq. 9 pulls each generated image towards the few memory images it
attends to; on the default set that halved the samples' diversity (mean pairwise L1 0.068
against 0.151 between real images, 600-1200 steps), while the batch-mean form kept it (0.143)
and a plain GAN loss collapsed (0.006). Eq. 10: ``L_G = L_GAN + lambda_APG * L_APG``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_LOSSES = ("bce", "lsgan", "hinge")
PATCH_LOSSES = ("per_patch", "mean")
APG_FORMS = ("attended", "batch_mean")


def _decisions(logits: torch.Tensor, patch_loss: str) -> torch.Tensor:
    if patch_loss == "mean" and logits.dim() > 1:
        return logits.flatten(1).mean(dim=1)
    if patch_loss not in PATCH_LOSSES:
        raise ValueError(f"patch_loss must be one of {', '.join(PATCH_LOSSES)}, got {patch_loss!r}")
    return logits


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "bce",
                       patch_loss: str = "per_patch") -> torch.Tensor:
    """Loss of the discriminator given its logits on real and generated images."""
    real, fake = _decisions(real, patch_loss), _decisions(fake, patch_loss)
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "lsgan":
        return 0.5 * (real - 1.0).square().mean() + 0.5 * fake.square().mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    raise ValueError(f"gan_loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")


def generator_loss(fake: torch.Tensor, kind: str = "bce",
                   patch_loss: str = "per_patch") -> torch.Tensor:
    """Adversarial loss of the generator given the discriminator's logits on its images."""
    fake = _decisions(fake, patch_loss)
    if kind == "bce":
        return F.softplus(-fake).mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).square().mean()
    if kind == "hinge":
        return -fake.mean()
    raise ValueError(f"gan_loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")


def attention_perceptual_loss(fake_features: list[torch.Tensor],
                              real_features: list[torch.Tensor], weights: torch.Tensor,
                              form: str = "attended") -> torch.Tensor:
    """L_APG (eq. 9) of a batch.

    Parameters
    ----------
    fake_features : list of (B, ...) tensors
        Discriminator activations of the generated images, one per hidden layer.
    real_features : list of (S, ...) tensors
        The same layers for the memory slots' positron images.
    weights : (B, S) tensor
        Attention weights of each generated image over the slots (rows sum to 1).
    form : {"attended", "batch_mean"}
    """
    if form not in APG_FORMS:
        raise ValueError(f"apg_form must be one of {', '.join(APG_FORMS)}, got {form!r}")
    total = fake_features[0].new_zeros(())
    for fake, real in zip(fake_features, real_features, strict=True):
        n_elements = fake[0].numel()  # W_i
        if form == "attended":
            distance = torch.cdist(fake.flatten(1), real.flatten(1), p=1)  # (B, S) L1
            total = total + (weights * distance).sum(dim=1).mean() / n_elements
        else:
            total = total + (real.mean(dim=0) - fake.mean(dim=0)).abs().sum() / n_elements
    return total
