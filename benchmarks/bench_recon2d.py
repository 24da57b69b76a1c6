"""2D MLEM at 128 x 128: this project against GimnTools on the same events, side by side.

Events: a 2D activity map (water-filled tube with hot and cold inserts, 1 mm pixels) emits
back-to-back photon pairs in random in-plane directions; each photon is detected in the
crystal of the 184-crystal ring that contains its ray at mid-depth (no attenuation, no
scatter; independent of both projectors). The same coincidences are

* binned by this project into its ring sinogram (exact crystal LORs) and reconstructed with
  ``recon.recon2d`` (torch sparse system matrix);
* binned into a parallel-beam sinogram (92 angles, 2 mm radial bins, each LOR at its normal
  angle and distance) and reconstructed with GimnTools' ``siddon_reconstructor.mlem``
  (numba Siddon, its default sub-ray sampling).

``--slices N`` reconstructs a stack of N copies of the slice (a volume after rebinning):
this project does every plane in one sparse-dense product, GimnTools loops over slices.
Per-iteration time is ``(T(n2) - T(n1)) / (n2 - n1)`` of whole runs, so set-up costs (system
matrix, numba compilation, sensitivity) cancel. Error: normalised RMSE against the true
activity inside the tube after a least-squares scale (the two images have different units).

GimnTools is installed for this benchmark only: ``pip install gimntools==2.0.0``.
Run: ``python benchmarks/bench_recon2d.py [--counts 2e6] [--iterations 20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import time

import numpy as np
import torch

from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid
from recon.recon2d import EMSettings, plane_weights, reconstruct_2d, sinogram_stack
from recon.sinogram import SinogramGeometry
from recon.system_matrix import build_system_matrix
from sim.scanner.geometry import Scanner

N_PIX, PIXEL_MM = 128, 1.0


def truth_image() -> np.ndarray:
    """Activity (y, x) on the 128 x 128 grid: a 35 mm water disk with two hot and two cold
    rods (supersampled 4 x 4 for partial volume)."""
    sub = 4
    c = (np.arange(N_PIX * sub) + 0.5) / sub * PIXEL_MM - N_PIX * PIXEL_MM / 2
    y, x = np.meshgrid(c, c, indexing="ij")
    img = np.where(np.hypot(x, y) < 35, 1.0, 0.0)
    for cx, cy, r, value in ((15, 10, 6, 3.0), (-12, 14, 4, 2.0), (-10, -15, 7, 0.0),
                             (14, -12, 3, 0.0)):
        img = np.where(np.hypot(x - cx, y - cy) < r, value, img)
    return img.reshape(N_PIX, sub, N_PIX, sub).mean(axis=(1, 3))


def simulate_events(scanner: Scanner, truth: np.ndarray, n: int, rng: np.random.Generator):
    """Crystal pairs of ``n`` emissions from ``truth`` in the plane z = 0."""
    p = truth.ravel() / truth.sum()
    pix = rng.choice(p.size, size=n, p=p)
    iy, ix = np.divmod(pix, N_PIX)
    x0 = (ix + rng.random(n)) * PIXEL_MM - N_PIX * PIXEL_MM / 2
    y0 = (iy + rng.random(n)) * PIXEL_MM - N_PIX * PIXEL_MM / 2
    phi = rng.uniform(0, np.pi, n)
    d = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    radius = scanner.inner_radius_mm + scanner.crystal_depth_mm / 2
    ids = []
    for sign in (1.0, -1.0):
        b = sign * (x0 * d[:, 0] + y0 * d[:, 1])
        t = -b + np.sqrt(b * b - (x0 * x0 + y0 * y0 - radius**2))
        pts = np.stack([x0 + sign * t * d[:, 0], y0 + sign * t * d[:, 1], np.zeros(n)], axis=1)
        ids.append(scanner.crystal_id_at(pts))
    ok = (ids[0] >= 0) & (ids[1] >= 0)
    return ids[0][ok], ids[1][ok]


def nrmse(image: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    a, t = image[region], truth[region]
    scale = float(a @ t / (a @ a))
    return float(np.sqrt(np.mean((scale * a - t) ** 2)) / t.mean())


def ours(c1, c2, geometry, slices):
    grid = ImageGrid((1, N_PIX, N_PIX), (2.0, PIXEL_MM, PIXEL_MM),
                     (0.0, -(N_PIX - 1) / 2 * PIXEL_MM, -(N_PIX - 1) / 2 * PIXEL_MM))
    system = build_system_matrix(geometry, grid)
    counts = np.repeat(sinogram_stack(c1, c2, geometry, grid, 0), slices, axis=1)
    weights = plane_weights(geometry, grid, 0, None).repeat(1, slices)
    grid = grid.with_planes(slices, 2.0, 0.0)

    def run(n):
        start = time.perf_counter()
        image = reconstruct_2d(counts, weights, system, geometry, grid, EMSettings(n, 1)).image
        return time.perf_counter() - start, image[0].numpy()

    return run


def gimntools(c1, c2, scanner, geometry, slices):
    from Gimntools.GimnRec.reconstructor import siddon_reconstructor

    from recon.geometry import lor_endpoints_mm

    p1, p2 = lor_endpoints_mm(scanner, c1, c2, geometry.doi_mm)
    d = p2[:, :2] - p1[:, :2]
    normal = np.stack([d[:, 1], -d[:, 0]], axis=1) / np.linalg.norm(d, axis=1)[:, None]
    theta = np.arctan2(normal[:, 1], normal[:, 0])
    r = (p1[:, :2] * normal).sum(axis=1)
    flip = (theta < 0) | (theta >= np.pi)
    theta = np.where(flip, theta + np.pi, theta) % np.pi
    r = np.where(flip, -r, r)
    n_ang, bin_mm, n_r = 92, 2.0, 64
    angle_bin = np.floor(theta / (np.pi / n_ang)).astype(int) % n_ang
    r_bin = np.floor(r / bin_mm + n_r / 2).astype(int)
    keep = (r_bin >= 0) & (r_bin < n_r)
    sino = np.zeros((n_r, n_ang))
    np.add.at(sino, (r_bin[keep], angle_bin[keep]), 1.0)
    angles_deg = np.degrees((np.arange(n_ang) + 0.5) * np.pi / n_ang)
    recon = siddon_reconstructor.for_volume(np.repeat(sino[None], slices, axis=0), n_img=N_PIX,
                                            voxel_mm=PIXEL_MM, sino_range_mm=n_r * bin_mm,
                                            verbose=False)

    def run(n):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            image = recon.mlem(angles_deg, iterations=n, verbose=False)
        return time.perf_counter() - start, image[0]

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=float, default=2e6, help="emissions simulated")
    parser.add_argument("--iterations", type=int, default=20, help="MLEM iterations")
    parser.add_argument("--slices", type=int, default=1,
                        help="reconstruct a stack of this many copies of the slice")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    scanner = Scanner(rings=1, crystals_per_module_axial=1)
    geometry = SinogramGeometry(scanner, scanner_doi_mm(scanner))
    truth = truth_image()
    c1, c2 = simulate_events(scanner, truth, int(args.counts), np.random.default_rng(args.seed))
    c = (np.arange(N_PIX) + 0.5) * PIXEL_MM - N_PIX * PIXEL_MM / 2
    region = np.hypot(*np.meshgrid(c, c, indexing="ij")) < 33
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{len(c1)} coincidences, {N_PIX} x {N_PIX} pixels of {PIXEL_MM} mm, "
          f"{args.iterations} MLEM iterations, {args.slices} slice(s)")

    runners = {"positron-nde": ours(c1, c2, geometry, args.slices)}
    try:
        runners["GimnTools"] = gimntools(c1, c2, scanner, geometry, args.slices)
    except ImportError:
        print("GimnTools is not installed (pip install gimntools==2.0.0): ours only")
    results = {}
    n1, n2 = 2, args.iterations
    for name, run in runners.items():
        run(1)  # warm-up (numba compilation, allocator)
        t1, _ = run(n1)
        t2, image = run(n2)
        results[name] = ((t2 - t1) / (n2 - n1), nrmse(image, truth, region))
        print(f"{name:>13}: {1e3 * results[name][0]:8.2f} ms per iteration, "
              f"NRMSE {results[name][1]:.4f} after {n2} iterations")
    if len(results) == 2:
        (t_ours, e_ours), (t_gimn, e_gimn) = results["positron-nde"], results["GimnTools"]
        print(f"speed-up per iteration: {t_gimn / t_ours:.1f}x; "
              f"error ratio (ours / GimnTools): {e_ours / e_gimn:.3f}")


if __name__ == "__main__":
    main()
