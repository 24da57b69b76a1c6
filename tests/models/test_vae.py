"""CT VAE (sec. 3.2, eq. 2-3): the KL term against the closed form and torch.distributions,
the reparameterisation's moments, the ELBO's parts, shapes, and learning on a toy set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.nets.init import init_weights
from models.nets.vae import ConvVAE, kl_divergence, reparameterise


def test_kl_equals_the_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(5, 7, generator=g, dtype=torch.float64)
    logvar = torch.randn(5, 7, generator=g, dtype=torch.float64)
    # Closed form written out per dimension: log(1/sigma) + (sigma^2 + mu^2) / 2 - 1/2.
    sigma = np.exp(0.5 * logvar.numpy())
    expected = np.sum(np.log(1.0 / sigma) + (sigma**2 + mu.numpy() ** 2) / 2 - 0.5, axis=1)
    np.testing.assert_allclose(kl_divergence(mu, logvar).numpy(), expected, rtol=1e-12)
    # And a maintained library's value.
    q = torch.distributions.Normal(mu, sigma_t := torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(sigma_t))
    torch.testing.assert_close(kl_divergence(mu, logvar),
                               torch.distributions.kl_divergence(q, p).sum(dim=1))
    # Zero exactly at the prior.
    assert kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_reparameterised_samples_have_the_encoders_moments():
    mu = torch.tensor([[0.5, -2.0, 3.0]], dtype=torch.float64).repeat(200_000, 1)
    logvar = torch.log(torch.tensor([[0.25, 1.0, 4.0]], dtype=torch.float64)).repeat(200_000, 1)
    z = reparameterise(mu, logvar, torch.Generator().manual_seed(3))
    n = len(z)
    var = torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    # Mean within 4 standard errors; variance within 4 standard errors of a Gaussian's
    # sample variance (sqrt(2 / n) relative).
    assert torch.all((z.mean(0) - mu[0]).abs() < 4 * torch.sqrt(var / n))
    assert torch.all((z.var(0) / var - 1).abs() < 4 * math.sqrt(2 / n))
    # Gradients reach mu and logvar (the point of the trick).
    mu1 = torch.zeros(4, 2, requires_grad=True)
    lv1 = torch.zeros(4, 2, requires_grad=True)
    reparameterise(mu1, lv1, torch.Generator().manual_seed(0)).sum().backward()
    assert torch.all(mu1.grad == 1) and lv1.grad.abs().sum() > 0


def test_loss_is_squared_error_plus_beta_kl():
    vae = ConvVAE(16, latent_dim=4, base_channels=4)
    init_weights(vae, torch.Generator().manual_seed(0))
    vae.eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    loss, parts = vae.loss(x, kl_weight=0.3, generator=torch.Generator().manual_seed(5))
    # Rebuild the same draw by hand.
    mu, logvar = vae.encoder(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    x_hat = vae.decoder(mu + torch.exp(0.5 * logvar) * eps)
    recon = ((x_hat - x) ** 2).sum(dim=(1, 2, 3))
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(dim=1)
    torch.testing.assert_close(parts["recon"], recon.mean())
    torch.testing.assert_close(parts["kl"], kl.mean())
    torch.testing.assert_close(loss, (recon + 0.3 * kl).mean())


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes(size):
    vae = ConvVAE(size, latent_dim=8, base_channels=4)
    mu, logvar = vae.encoder(torch.zeros(2, 1, size, size))
    assert mu.shape == logvar.shape == (2, 8)
    out = vae.decoder(torch.randn(2, 8))
    assert out.shape == (2, 1, size, size) and out.abs().max() <= 1


@pytest.mark.parametrize("size", [8, 24, 48, 100])
def test_unsupported_sizes_are_refused(size):
    with pytest.raises(ValueError, match=f"image size {size} px is not supported"):
        ConvVAE(size)


def _disks(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Toy images: one bright disk of random radius and position on a dark field."""
    yy, xx = np.mgrid[:16, :16]
    r = rng.uniform(2.5, 5.0, n)
    cy, cx = rng.uniform(5, 11, n), rng.uniform(5, 11, n)
    inside = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= (
        r[:, None, None] ** 2)
    return torch.from_numpy(np.where(inside, 1.0, -1.0).astype(np.float32))[:, None]


@pytest.mark.slow
def test_vae_learns_to_reconstruct_better_than_the_mean_image():
    """After 300 steps on disks, held-out reconstructions (posterior means) beat the best
    input-independent answer, the training mean image, by a wide margin."""
    rng = np.random.default_rng(0)
    train, test = _disks(256, rng), _disks(64, rng)
    torch.manual_seed(0)
    vae = ConvVAE(16, latent_dim=8, base_channels=16)
    init_weights(vae, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (32,), generator=g)]
        loss, _ = vae.loss(batch, kl_weight=0.5, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        recon = vae.decoder(vae.encoder(test)[0])
    mse_model = ((recon - test) ** 2).mean().item()
    mse_mean = ((train.mean(0, keepdim=True) - test) ** 2).mean().item()
    assert mse_model < 0.35 * mse_mean, (mse_model, mse_mean)
