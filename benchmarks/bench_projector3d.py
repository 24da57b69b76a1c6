"""Throughput of the 3D list-mode projector (events per second per direction) on the CPU.

Events: back-to-back photon pairs from a uniform cylinder (radius 35 mm, length 100 mm, the
solution of the default tube) in random 3D directions, each photon detected in the crystal of
the 184 x 64 scanner that contains its ray at mid-depth; LORs run between crystal axes at
the mean depth of interaction, as in a reconstruction. Forward and back projection through
the default tube image grid at 2 mm and at 1 mm transaxial voxels, without and with TOF,
against the target of 1e5 events per second per direction.

Run: ``python benchmarks/bench_projector3d.py [--events 200000]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid, recon_grid
from recon.projector import HALF_C_MM_PER_NS, Projector, TOFKernel
from recon.recon3d import select_events
from recon.sinogram import SinogramGeometry
from sim.scanner.geometry import Scanner

TARGET_PER_S = 1e5


def cylinder_events(scanner: Scanner, n: int, rng: np.random.Generator) -> dict:
    """Crystal pairs and times of ``n`` emissions from a uniform water cylinder."""
    r = 35.0 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    src = np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(-50, 50, n)], axis=1)
    u = rng.normal(size=(n, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    radius = scanner.inner_radius_mm + scanner.crystal_depth_mm / 2
    ids, times = [], []
    for sign in (1.0, -1.0):
        d = sign * u
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = src[:, 0] * d[:, 0] + src[:, 1] * d[:, 1]
        c = src[:, 0] ** 2 + src[:, 1] ** 2 - radius**2
        t = (-b + np.sqrt(b * b - a * c)) / a
        ids.append(scanner.crystal_id_at(src + t[:, None] * d))
        times.append(t / (2 * HALF_C_MM_PER_NS))
    ok = (ids[0] >= 0) & (ids[1] >= 0)
    return {"crystal1": ids[0][ok], "crystal2": ids[1][ok], "time1_ns": times[0][ok],
            "time2_ns": times[1][ok]}


def rate(fn, n_events: int, repeats: int = 2) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_events * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200000, help="emissions simulated")
    parser.add_argument("--chunk", type=int, default=20000, help="LORs per projector chunk")
    args = parser.parse_args()
    scanner = Scanner()
    geometry = SinogramGeometry(scanner, scanner_doi_mm(scanner))
    events = select_events(cylinder_events(scanner, args.events, np.random.default_rng(2)),
                           geometry, 63)
    n = len(events.p1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{n} events (all ring differences), chunks of {args.chunk}")
    phantom = ImageGrid((56, 96, 96), (2.0, 1.0, 1.0), (-55.0, -47.5, -47.5))
    kernel = TOFKernel.from_fwhm_ps(np.sqrt(2) * 300.0)
    p1 = torch.as_tensor(events.p1, dtype=torch.float32)
    p2 = torch.as_tensor(events.p2, dtype=torch.float32)
    tof = torch.as_tensor(events.tof_mm, dtype=torch.float32)
    ones = torch.ones(n)
    for voxel_mm in (2.0, 1.0):
        grid = recon_grid(phantom, scanner, voxel_mm)
        projector = Projector(grid, chunk=args.chunk)
        image = torch.rand(grid.shape, generator=torch.Generator().manual_seed(0))
        for label, tof_mm, k in (("non-TOF", None, None), ("TOF", tof, kernel)):
            fwd = rate(lambda pr=projector, im=image, t=tof_mm, kk=k:
                       pr.forward(im, p1, p2, t, kk), n)
            back = rate(lambda pr=projector, t=tof_mm, kk=k: pr.back(ones, p1, p2, t, kk), n)
            print(f"grid {grid.shape} ({voxel_mm} mm) {label:>7}: forward {fwd:9.3g} /s "
                  f"({fwd / TARGET_PER_S:.2f}x target), back {back:9.3g} /s "
                  f"({back / TARGET_PER_S:.2f}x target)")


if __name__ == "__main__":
    main()
