"""Training throughput of the attention GAN against a plain DCGAN of the same image size.

Both are trained by the same loop (:class:`models.training.loop.Trainer`) with the default
``train`` settings of ``config/config.yaml`` (batch size, DiffAugment, flips, Adam) on the
same synthetic images (noisy disks, the look of the positron set; ``--size`` px), so the
numbers compare the methods' networks and losses, nothing else. The attention GAN is built
with its default networks, a CT encoder of the default ``pretrain_vae`` shape and a memory of
the default size filled with random features (the cost does not depend on their values).
Steps alternate between the two methods in rounds, so a change in machine load hits both.

Prints training images per second (real images drawn per second of training-step time) for
each, their ratio, the goal of 100 images/s for the attention GAN at 64 px, the torch thread
count (``train.threads``, the rule's, by default) and the load average before and after.

Run: ``python benchmarks/bench_train.py [--size 64] [--steps 30] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from models.methods import method_class
from models.methods.base import StageInputs
from models.methods.vae import VAESettings
from models.training.loop import Trainer
from models.training.settings import LoopSettings
from pipeline.config import load_config

GOAL_IMAGES_PER_S = 100.0


class Images:
    """An in-memory image source: (N, 1, S, S) tensors, ``batch(indices)``."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices) -> torch.Tensor:
        return self.images[torch.as_tensor(np.asarray(indices))]


def disks(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Noisy disks in [-1, 1]: dark field, speckled bright solution."""
    yy, xx = np.mgrid[:size, :size] / size
    r = rng.uniform(0.3, 0.4, n)[:, None, None]
    inside = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 <= r**2
    values = np.where(inside, rng.uniform(0.2, 1.0, (n, size, size)), 0.0)
    return torch.from_numpy((2 * values - 1).astype(np.float32))[:, None]


def build(name: str, cfg: dict, size: int, sources: dict) -> object:
    cls = method_class(name)
    settings = cls.settings_class.from_section(cfg["train"][name])
    generator = torch.Generator().manual_seed(0)
    if name != "attention_gan":
        return cls.build(settings, StageInputs(sources, size), generator)
    vae = VAESettings.from_section(cfg["pretrain_vae"])
    feats = cfg["positron_features"]
    slots = np.random.default_rng(1).normal(size=(feats["memory_slots"], feats["memory_dim"]))
    encoder = {"image_size": size, "latent_dim": vae.latent_dim,
               "base_channels": vae.base_channels, "max_channels": vae.max_channels}
    return cls.from_parts(settings, encoder, None, slots,
                          sources["real"].batch(np.arange(len(slots))), size, generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dcgan-channels", type=int, default=None,
                        help="DCGAN widths (default: train.dcgan's; Radford et al. use 64)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: train.threads, the rule's)")
    args = parser.parse_args()
    cfg = load_config()
    torch.set_num_threads(args.threads or cfg["train"]["threads"])
    if args.dcgan_channels:
        cfg["train"]["dcgan"].update(generator_channels=args.dcgan_channels,
                                     discriminator_channels=args.dcgan_channels)
    rng = np.random.default_rng(0)
    real = Images(disks(256, args.size, rng))
    query = Images(disks(256, args.size, rng))  # stands in for CT images
    loop = LoopSettings.from_section(cfg["train"], "cpu")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"images {args.size} px, batch {loop.batch_size}, DiffAugment "
          f"{list(loop.diffaugment)}, flips {loop.flips}")
    trainers = {}
    for name in ("attention_gan", "dcgan"):
        sources = {"real": real, "query": query}
        method = build(name, cfg, args.size, sources)
        sources = {k: sources[k] for k in method.sources}
        trainers[name] = Trainer(method, sources, loop, "/nonexistent", "bench", {},
                                 torch.device("cpu"), name)
        for _ in range(3):  # warm-up
            trainers[name].train_step()
            trainers[name].step += 1
    seconds = dict.fromkeys(trainers, 0.0)
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                trainer.train_step()
                trainer.step += 1
            seconds[name] += time.perf_counter() - t0
    rates = {n: loop.batch_size * per_round * args.rounds / s for n, s in seconds.items()}
    for name, rate in rates.items():
        params = sum(p.numel() for p in trainers[name].method.nets.parameters())
        print(f"{name:14s} {rate:7.1f} images/s  ({params / 1e6:.2f} M parameters)")
    print(f"attention GAN / DCGAN: {rates['attention_gan'] / rates['dcgan']:.2f}x; goal "
          f"{GOAL_IMAGES_PER_S:.0f} images/s at 64 px: "
          f"{'reached' if rates['attention_gan'] >= GOAL_IMAGES_PER_S else 'not reached'}")
    print(f"load average after {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
