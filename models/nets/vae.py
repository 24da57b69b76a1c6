"""Convolutional VAE: the CT encoder of the seed paper (sec. 3.2, eq. 2-3).

The encoder maps an image to the mean and log-variance of a diagonal Gaussian posterior
``q(z | x) = N(mu, diag(sigma^2))``; a sample is drawn with the reparameterisation
``z = mu + sigma * eps``, ``eps ~ N(0, I)`` (eq. 3), so gradients reach ``mu`` and
``sigma``. The decoder maps ``z`` back to an image in [-1, 1]. Training maximises the ELBO
(eq. 2); per image we minimise

    L = sum_pixels (x - x_hat)^2 + beta * KL(q(z | x) || N(0, I)),
    KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2),

the negative ELBO of a Gaussian decoder with variance 1/2 up to a constant, and ``beta``
(``kl_weight``) = 1 the plain VAE (Kingma and Welling 2014; Higgins et al. 2017 for beta).

Architecture (DCGAN-like, for square images of 2^k pixels, k >= 4): the encoder halves the
image with 4 x 4 stride-2 convolutions (BN and LeakyReLU 0.2 after all but the first) down
to 4 x 4, then two linear heads give ``mu`` and ``logvar``; the decoder mirrors it with
transposed convolutions and ends in tanh. Channels double per level from
``base_channels`` up to ``max_channels``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.nets.init import check_image_size, n_doublings


def _channels(level: int, base: int, cap: int) -> int:
    return min(base * 2**level, cap)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over the latent dimensions, (B,)."""
    return 0.5 * torch.sum(mu.square() + logvar.exp() - 1.0 - logvar, dim=1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` drawn from ``generator``."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


class Encoder(nn.Module):
    """Image (B, 1, S, S) -> posterior mean and log-variance, (B, latent_dim) each."""

    def __init__(self, image_size: int, latent_dim: int, base_channels: int = 32,
                 max_channels: int = 256) -> None:
        super().__init__()
        size = check_image_size(image_size, "VAE encoder")
        layers: list[nn.Module] = []
        c_in = 1
        for level in range(n_doublings(size)):
            c_out = _channels(level, base_channels, max_channels)
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=level == 0))
            if level > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.mu = nn.Linear(c_in * 16, latent_dim)
        self.logvar = nn.Linear(c_in * 16, latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """Latent (B, latent_dim) -> image (B, 1, S, S) in [-1, 1]."""

    def __init__(self, image_size: int, latent_dim: int, base_channels: int = 32,
                 max_channels: int = 256) -> None:
        super().__init__()
        size = check_image_size(image_size, "VAE decoder")
        levels = n_doublings(size)
        self.c_top = _channels(levels - 1, base_channels, max_channels)
        self.project = nn.Sequential(nn.Linear(latent_dim, self.c_top * 16),
                                     nn.Unflatten(1, (self.c_top, 4, 4)),
                                     nn.BatchNorm2d(self.c_top), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = self.c_top
        for level in reversed(range(levels - 1)):
            c_out = _channels(level, base_channels, max_channels)
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers += [nn.ConvTranspose2d(c_in, 1, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))


class ConvVAE(nn.Module):
    """Encoder and decoder together; :meth:`loss` is the negative ELBO of the module
    docstring, per image."""

    def __init__(self, image_size: int, latent_dim: int = 128, base_channels: int = 32,
                 max_channels: int = 256) -> None:
        super().__init__()
        self.encoder = Encoder(image_size, latent_dim, base_channels, max_channels)
        self.decoder = Decoder(image_size, latent_dim, base_channels, max_channels)
        self.latent_dim = latent_dim

    def loss(self, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean over the batch of ``recon + kl_weight * KL``; also returns both terms."""
        mu, logvar = self.encoder(x)
        x_hat = self.decoder(reparameterise(mu, logvar, generator))
        recon = (x_hat - x).square().flatten(1).sum(dim=1)
        kl = kl_divergence(mu, logvar)
        return (recon + kl_weight * kl).mean(), {"recon": recon.mean(), "kl": kl.mean()}
