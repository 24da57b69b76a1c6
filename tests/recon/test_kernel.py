"""The kernel method and the image-space resolution model (:mod:`recon.kernel`) against dense
matrices written here from the formulas, scipy's Gaussian filter, plain EM, and a noisy toy
scan where the mu map knows the cold disc."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from pipeline.config import load_schema
from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid
from recon.kernel import KERNEL_METHODS, GaussianPSF, ImageKernel, ImageModel, KernelSettings
from recon.mlem import osem_sinogram, view_subsets
from recon.projector import FWHM_PER_SIGMA
from recon.recon2d import EMSettings, plane_weights, reconstruct_2d
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix
from sim.scanner.geometry import Scanner


def dense_kernel(prior, mask, voxel_mm, settings: KernelSettings) -> np.ndarray:
    """K (voxels, voxels) from the module docstring's formula, voxel pair by voxel pair."""
    shape = prior.shape
    n = prior.size
    width = settings.sigma_mu * prior[mask].std()
    k = np.zeros((n, n))
    for j in np.ndindex(shape):
        if not mask[j]:
            continue
        for d in np.ndindex(*(2 * w + 1 for w in settings.window)):
            o = np.array(d) - np.array(settings.window)
            q = tuple(np.array(j) + o)
            if any(c < 0 or c >= s for c, s in zip(q, shape, strict=True)) or not mask[q]:
                continue
            r2 = float(np.sum((o * np.asarray(voxel_mm)) ** 2))
            g = np.exp(-(prior[j] - prior[q]) ** 2 / (2 * width ** 2)
                       - r2 / (2 * settings.sigma_mm ** 2))
            # The module's floor against float32 denormals (its own weight is 1).
            k[np.ravel_multi_index(j, shape), np.ravel_multi_index(q, shape)] = g * (g >= 1e-6)
    total = k.sum(axis=1, keepdims=True)
    return np.divide(k, total, out=np.zeros_like(k), where=total > 0)


def small_kernel(seed: int = 1):
    rng = np.random.default_rng(seed)
    shape = (3, 5, 6)
    prior = rng.choice([0.0, 0.0096, 0.023, 0.06], size=shape) + rng.normal(0, 1e-3, shape)
    mask = rng.random(shape) > 0.2
    settings = KernelSettings("mu", (1, 2, 1), 0.5, 3.0)
    voxel = (2.0, 1.5, 1.0)
    return prior, mask, voxel, settings


def test_kernel_and_its_adjoint_equal_the_dense_matrix():
    prior, mask, voxel, settings = small_kernel()
    k = dense_kernel(prior, mask, voxel, settings)
    ours = ImageKernel(prior, mask, voxel, settings, dtype=torch.float64)
    rng = np.random.default_rng(2)
    alpha, v = rng.random(prior.shape), rng.random(prior.shape)
    np.testing.assert_allclose(ours.apply(torch.as_tensor(alpha)).numpy().ravel(),
                               k @ alpha.ravel(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.adjoint(torch.as_tensor(v)).numpy().ravel(),
                               k.T @ v.ravel(), rtol=1e-5, atol=1e-9)
    # Rows sum to one inside the mask, the image is zero outside it.
    ones = ours.apply(torch.ones(prior.shape, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ones[mask], 1.0, rtol=1e-12)
    assert np.all(ones[~mask] == 0)


def test_a_zero_window_is_the_identity_and_materials_do_not_mix():
    prior, mask, voxel, settings = small_kernel()
    identity = ImageKernel(prior, mask, voxel, KernelSettings("mu", (0, 0, 0)),
                           dtype=torch.float64)
    alpha = torch.rand(prior.shape, dtype=torch.float64)
    np.testing.assert_allclose(identity.apply(alpha).numpy(), np.where(mask, alpha, 0.0))
    # Two materials far apart in mu, a sharp feature width: no weight crosses the boundary.
    two = np.zeros((1, 6, 6))
    two[:, :, 3:] = 0.06
    sharp = ImageKernel(two, np.ones_like(two, bool), (1.0, 1.0, 1.0),
                        KernelSettings("mu", (0, 2, 2), 0.05, 10.0), dtype=torch.float64)
    image = sharp.apply(torch.as_tensor(np.where(two > 0, 5.0, 1.0))).numpy()
    np.testing.assert_allclose(image, np.where(two > 0, 5.0, 1.0), rtol=1e-12)


def test_psf_is_scipys_gaussian_inside_and_its_own_adjoint():
    fwhm, voxel = 4.0, (2.0, 1.0, 1.5)
    psf = GaussianPSF(fwhm, voxel, dtype=torch.float64)
    image = np.zeros((15, 31, 25))
    image[7, 15, 12] = 1.0
    ours = psf.apply(torch.as_tensor(image)).numpy()
    sigma = [fwhm / FWHM_PER_SIGMA / v for v in voxel]
    expected = scipy.ndimage.gaussian_filter(image, sigma, mode="constant", truncate=3.0)
    # The two truncate the taps a little differently (at 3 sigma, rounded).
    np.testing.assert_allclose(ours, expected, atol=5e-3 * expected.max())
    # The spread of a point: variance sigma^2 along each axis (the 3-sigma taps keep 99.7 %).
    z, y, x = np.indices(image.shape)
    for axis, coords, centre, size in ((0, z, 7, voxel[0]), (1, y, 15, voxel[1]),
                                       (2, x, 12, voxel[2])):
        variance = float((ours * ((coords - centre) * size) ** 2).sum() / ours.sum())
        assert variance == pytest.approx((fwhm / FWHM_PER_SIGMA) ** 2, rel=0.05), axis
    rng = np.random.default_rng(3)
    a, b = (torch.as_tensor(rng.random((6, 7, 8))) for _ in range(2))
    assert float((psf.apply(a) * b).sum()) == pytest.approx(float((a * psf.adjoint(b)).sum()),
                                                            rel=1e-12)


def toy_scan():
    scanner = Scanner(rings=1, crystals_per_module_axial=1)
    geometry = SinogramGeometry(scanner, scanner_doi_mm(scanner))
    grid = ImageGrid((1, 24, 24), (2.0, 4.0, 4.0), (0.0, -48.0, -48.0))
    y, x = np.meshgrid(grid.centres_mm(1), grid.centres_mm(2), indexing="ij")
    solution = np.hypot(x, y) < 40.0
    cold = np.hypot(x - 14.0, y) < 10.0
    activity = np.where(solution & ~cold, 1.0, 0.0)[None]
    mu = np.where(cold, 0.06, np.where(solution, 0.0096, 0.0))[None]
    core = np.hypot(x - 14.0, y) < 6.0
    return geometry, grid, activity, mu, core, solution & ~cold & (np.hypot(x + 14, y) < 14)


def test_em_with_an_identity_image_model_is_plain_em():
    geometry, grid, activity, mu, _, _ = toy_scan()
    system = build_system_matrix(geometry, grid)
    weights = plane_weights(geometry, grid, 0, None)
    counts = np.random.default_rng(4).poisson(
        200 * weights.numpy() * (system.matrix @ activity.reshape(-1, 1)))
    mask = torch.as_tensor(grid.fov_mask(geometry.fov_radius_mm()).ravel())
    plain = reconstruct_2d(counts, weights, system, geometry, grid, EMSettings(4, 4))
    kernel = ImageKernel(mu, np.broadcast_to(mask.reshape(1, 24, 24).numpy(), mu.shape),
                         grid.voxel_size_mm, KernelSettings("mu", (0, 0, 0)))
    with_model = reconstruct_2d(counts, weights, system, geometry, grid, EMSettings(4, 4),
                                image_model=ImageModel(grid.shape, kernel))
    np.testing.assert_allclose(with_model.image.numpy(), plain.image.numpy(), rtol=1e-5,
                               atol=1e-6 * float(plain.image.max()))
    np.testing.assert_allclose(with_model.loglik, plain.loglik, rtol=1e-6)
    # Without any model the EM call is unchanged too.
    direct = osem_sinogram(torch.as_tensor(counts, dtype=torch.float32), system.matrix,
                           weights, mask[:, None], 4, view_subsets(geometry.shape, 4))
    np.testing.assert_allclose(direct.image.T.reshape(grid.shape).numpy(),
                               plain.image.numpy(), rtol=1e-6)


def test_the_mu_kernel_recovers_a_cold_disc_from_few_counts_with_less_noise():
    """Noisy scans of a disc of solution with a cold (steel) disc: over 8 noise draws, at the
    same iterations, the kernel method's background noise is several times lower than plain
    EM's, its cold core as cold, so its contrast-to-noise ratio is several times higher; the
    solution's mean is unchanged (the kernel's rows sum to one)."""
    geometry, grid, activity, mu, cold, background = toy_scan()
    system = build_system_matrix(geometry, grid)
    weights = plane_weights(geometry, grid, 0, None)
    expected = weights.numpy() * (system.matrix @ activity.reshape(-1, 1))
    expected *= 4000.0 / expected.sum()  # few counts: a noisy scan
    mask = grid.fov_mask(geometry.fov_radius_mm())
    kernel = ImageKernel(mu, np.broadcast_to(mask, mu.shape), grid.voxel_size_mm,
                         KernelSettings("mu", (0, 2, 2), 0.2, 8.0))
    rng = np.random.default_rng(5)
    ratio, noise = {"plain": [], "kernel": []}, {"plain": [], "kernel": []}
    level = {"plain": [], "kernel": []}
    for _ in range(8):
        counts = rng.poisson(expected).astype(float)
        for name, model in (("plain", None), ("kernel", ImageModel(grid.shape, kernel))):
            image = reconstruct_2d(counts, weights, system, geometry, grid, EMSettings(10, 4),
                                   image_model=model).image.numpy()[0]
            bg = image[background]
            ratio[name].append(image[cold].mean() / bg.mean())
            noise[name].append(bg.std() / bg.mean())
            level[name].append(image[activity[0] > 0].mean())
    assert np.mean(noise["kernel"]) < np.mean(noise["plain"]) / 3
    assert np.mean(ratio["kernel"]) < min(np.mean(ratio["plain"]) + 0.03, 0.2)
    cnr = {k: (1 - np.mean(ratio[k])) / np.mean(noise[k]) for k in ratio}
    assert cnr["kernel"] > 3 * cnr["plain"]
    assert np.mean(level["kernel"]) == pytest.approx(np.mean(level["plain"]), rel=0.05)


def test_kernel_refuses_bad_priors():
    mask = np.ones((2, 3, 3), bool)
    with pytest.raises(ValueError, match="NaN or infinity"):
        ImageKernel(np.full((2, 3, 3), np.nan), mask, (1, 1, 1), KernelSettings("mu"))
    with pytest.raises(ValueError, match="same 3D shape"):
        ImageKernel(np.zeros((3, 3)), mask[0], (1, 1, 1), KernelSettings("mu"))
    with pytest.raises(ValueError, match="positive"):
        GaussianPSF(0.0, (1, 1, 1))


def test_kernel_methods_are_the_schemas_and_others_are_refused():
    recon = load_schema()["properties"]["recon"]["properties"]
    assert tuple(recon["kernel"]["enum"]) == KERNEL_METHODS
    assert KernelSettings.from_config({"kernel": "mu"}).enabled
    with pytest.raises(ValueError, match="recon.kernel must be one of none, mu, got 'mri'"):
        KernelSettings.from_config({"kernel": "mri"})
