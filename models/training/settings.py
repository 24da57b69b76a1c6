"""Loop settings, parsed once from a config section (``train`` or ``pretrain_vae``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Keys of a section that may change without invalidating a checkpoint: a run resumed with
#: a larger ``steps`` continues; the others only change the bookkeeping.
RESUMABLE_KEYS = ("steps", "sample_every", "checkpoint_every", "log_every")


@dataclass(frozen=True)
class LoopSettings:
    """How the loop trains (every field documented in ``config/schema.yaml``).

    Attributes
    ----------
    steps : int
        Optimisation steps (each step runs every phase of the method once).
    batch_size : int
        Images per batch of every source.
    lr : float
        Adam learning rate of every optimiser.
    betas : tuple of float
        Adam (beta1, beta2).
    seed : int
        Seed of initial weights, batch order and every random draw of training.
    diffaugment : tuple of str
        DiffAugment policies applied to every image a discriminator sees.
    flips : bool
        Random flips and quarter turns of the real images.
    ema_decay : float or None
        Decay of the exponential moving average of the sampling networks (None: off).
    sample_every, checkpoint_every, log_every : int
        Steps between sample grids, checkpoints and history rows.
    n_samples : int
        Images in a sample grid.
    amp : bool
        Mixed precision (float16 autocast), used only on CUDA.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    """

    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float]
    seed: int
    diffaugment: tuple[str, ...] = ()
    flips: bool = False
    ema_decay: float | None = None
    sample_every: int = 100
    checkpoint_every: int = 100
    log_every: int = 10
    n_samples: int = 64
    amp: bool = True
    device: str = "auto"

    @classmethod
    def from_section(cls, s: Mapping[str, Any], device: str) -> LoopSettings:
        ema = s.get("ema_decay")
        return cls(steps=int(s["steps"]), batch_size=int(s["batch_size"]), lr=float(s["lr"]),
                   betas=(float(s["betas"][0]), float(s["betas"][1])), seed=int(s["seed"]),
                   diffaugment=tuple(s.get("diffaugment", ())), flips=bool(s.get("flips")),
                   ema_decay=None if not ema else float(ema),
                   sample_every=int(s["sample_every"]),
                   checkpoint_every=int(s["checkpoint_every"]),
                   log_every=int(s["log_every"]), n_samples=int(s.get("n_samples", 64)),
                   amp=bool(s.get("amp", True)), device=device)
