"""The one training loop of every generative method.

Per step: draw the batches of every source the method needs (seeded order,
:mod:`models.training.batches`; random flips of the real images when ``flips``), then for
each phase of the method in order (for a GAN: discriminator, then generator): freeze the
parameters of the earlier phases' optimisers (pix2pix's ``set_requires_grad``: no weight
gradients are computed for a discriminator while the generator learns through it), zero the
gradients, compute the method's loss (under float16 autocast on CUDA when ``amp``),
back-propagate, step (through a gradient scaler on CUDA). Then update the EMA copies, and
every ``log_every`` / ``sample_every`` / ``checkpoint_every`` steps write a history row, a
sample grid (``samples/step_*.png``, from inputs fixed for the run) and ``checkpoint.pt``.
A loss that is NaN or infinite stops the run with an error (the last checkpoint is kept).

Resuming: when ``checkpoint.pt`` exists in the output folder and was written with the same
compatibility fingerprint (method, settings except ``steps`` and the bookkeeping intervals,
architecture, input files), the run continues from its step with every state restored,
and gives the weights an uninterrupted run would have given. A checkpoint written with other
settings or inputs, or past the requested ``steps``, is renamed aside
(``checkpoint.stale-*.pt``, never deleted) and training starts over; so is one whose networks
have other layers or shapes than this code builds.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from models.methods.base import Method, StepContext
from models.training.augment import DiffAugment, random_dihedral
from models.training.batches import BatchOrder
from models.training.checkpoint import load_checkpoint, save_checkpoint
from models.training.ema import make_ema, update_ema
from models.training.grids import write_panels
from models.training.history import write_history
from models.training.settings import LoopSettings
from pipeline.interrupts import raise_if_stopped

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    """A set of images the loop draws batches from (``models.data.loaders`` datasets)."""

    def __len__(self) -> int: ...

    def batch(self, indices) -> torch.Tensor: ...


@dataclass
class TrainResult:
    """What a finished run leaves for the stage to write: the step reached, the history
    rows, the networks to sample with (EMA copies where enabled) and the fixed inputs."""

    step: int
    history: list[dict[str, float]]
    sampler: dict[str, torch.nn.Module]
    fixed_inputs: dict[str, torch.Tensor] = field(default_factory=dict)


def _to(inputs: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


@contextlib.contextmanager
def in_eval_mode(method: Method, nets: Mapping[str, torch.nn.Module] | None = None):
    """The sampling networks in evaluation mode (batch-norm running statistics) for the
    duration; their training modes are restored afterwards."""
    modules = [method.net(n, nets) for n in method.sampler_nets]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


@torch.no_grad()
def sample_images(method: Method, inputs: Mapping[str, torch.Tensor],
                  nets: Mapping[str, torch.nn.Module] | None = None,
                  batch_size: int = 64) -> torch.Tensor:
    """Samples of ``method`` in evaluation mode, in batches, (n, 1, H, W) on CPU."""
    n = len(next(iter(inputs.values())))
    with in_eval_mode(method, nets):
        out = [method.sample({k: v[i : i + batch_size] for k, v in inputs.items()}, nets).cpu()
               for i in range(0, n, batch_size)]
    return torch.cat(out)


class Trainer:
    """Runs :meth:`train` for one method, sources, settings and output folder."""

    def __init__(self, method: Method, sources: Mapping[str, ImageSource],
                 settings: LoopSettings, out_dir: str | Path, compat: str,
                 settings_record: dict[str, Any], device: torch.device, title: str) -> None:
        self.method = method
        self.sources = dict(sources)
        self.s = settings
        self.out_dir = Path(out_dir)
        self.compat = compat
        self.settings_record = settings_record
        self.device = device
        self.title = title
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        method.to(device)
        self.groups = method.param_groups()
        self.optimizers = {name: torch.optim.Adam(params, lr=settings.lr, betas=settings.betas)
                           for name, params in self.groups.items()}
        self.amp = settings.amp and device.type == "cuda"
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=self.amp)
                        for name in self.groups}
        self.ema = make_ema({n: method.nets[n] for n in method.sampler_nets},
                            settings.ema_decay) if settings.ema_decay else {}
        self.rng = torch.Generator(device).manual_seed(settings.seed)
        self.orders = {src: BatchOrder(len(self.sources[src]), settings.batch_size,
                                       settings.seed, src) for src in method.sources}
        self.augment = DiffAugment(settings.diffaugment)
        self.draws_per_step = max(r for _, r in method.phases())
        # The budget is in real batches drawn: a method drawing several per step (a WGAN
        # critic) makes correspondingly fewer steps.
        self.total_steps = -(-settings.steps // self.draws_per_step)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0

    # -- checkpoints ---------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"method": self.method.name, "settings": self.settings_record,
                "arch": self.method.arch, "step": self.step, "compat": self.compat,
                "nets": self.method.nets.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
                "ema": {k: e.state_dict() for k, e in self.ema.items()},
                "rng": {"loop": self.rng.get_state()}, "history": self.history,
                "seconds": self.seconds}

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, "checkpoint", self._state())
        write_history(self.out_dir / "history.csv", self.history)

    def _set_aside(self, state: dict[str, Any], why: str) -> None:
        aside = self.checkpoint_path.with_name(
            f"checkpoint.stale-{str(state['compat'])[:12]}-step{int(state['step'])}.pt")
        self.checkpoint_path.rename(aside)
        log.warning("%s %s; moved to %s, training starts over", self.checkpoint_path, why, aside)

    def resume(self) -> None:
        """Restore every state from ``checkpoint.pt`` when it fits this run (module doc)."""
        if not self.checkpoint_path.exists():
            return
        state = load_checkpoint(self.checkpoint_path, "checkpoint", self.method.name,
                                map_location=self.device)
        if state["compat"] != self.compat:
            self._set_aside(state, "was written with other settings or inputs")
            return
        if int(state["step"]) > self.total_steps:
            self._set_aside(state, f"is at step {state['step']}, past the {self.total_steps} "
                            "steps of this run")
            return
        own = self.method.nets.state_dict()
        saved = state["nets"]
        if set(own) != set(saved) or any(own[k].shape != saved[k].shape for k in own):
            self._set_aside(state, "holds networks of another shape (written by other code)")
            return
        try:
            self.method.nets.load_state_dict(state["nets"])
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
            for k, scaler in self.scalers.items():
                scaler.load_state_dict(state["scalers"][k])
            for k, averaged in self.ema.items():
                averaged.load_state_dict(state["ema"][k])
            self.rng.set_state(state["rng"]["loop"].cpu())
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"{self.checkpoint_path}: checkpoint does not fit this model "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.seconds = float(state.get("seconds", 0.0))
        log.info("resuming %s from %s at step %d", self.method.name, self.checkpoint_path,
                 self.step)

    # -- one step ------------------------------------------------------------------------
    def _batch(self, draw: int) -> dict[str, torch.Tensor]:
        batch = {}
        for src, order in self.orders.items():
            indices = order.indices(draw)
            images = self.sources[src].batch(indices).to(self.device)
            if src == "real" and self.s.flips:  # every channel (mask, pair) turns together
                images = random_dihedral(images, self.rng)
            batch[src] = images
            if src == "real" and getattr(self.method, "conditional", False):
                batch["real_label"] = self.sources[src].labels(indices).to(self.device)
        return batch

    def _freeze(self, frozen: set[str]) -> None:
        for name, params in self.groups.items():
            for p in params:
                p.requires_grad_(name not in frozen)

    def train_step(self) -> dict[str, float]:
        # Layers that draw from torch's global stream (the U-Net's dropout) get a seed that is a
        # pure function of (seed, step): a rerun, or a run resumed at this step, draws the same.
        torch.manual_seed(int(np.random.SeedSequence([self.s.seed, self.step]).generate_state(
            1, np.uint64)[0] >> np.uint64(1)))
        ctx = StepContext(self.rng, self.augment, self.step)
        batches = [self._batch(self.step * self.draws_per_step + r)
                   for r in range(self.draws_per_step)]
        logged: dict[str, float] = {}
        done: set[str] = set()
        for phase, repeats in self.method.phases():
            self._freeze(done - {phase})
            done.add(phase)
            opt, scaler = self.optimizers[phase], self.scalers[phase]
            for r in range(repeats):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    loss, values = self.method.loss(phase, batches[r], ctx)
                if not torch.isfinite(loss):
                    raise RuntimeError(
                        f"training of {self.method.name} diverged: the {phase} loss is "
                        f"{loss.item()} at step {self.step} (lower the learning rate or change "
                        f"the loss; the last checkpoint is {self.checkpoint_path})")
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                self.method.after_step(phase)
                for k, v in values.items():
                    logged[k] = logged.get(k, 0.0) + float(v) / repeats
        self._freeze(set())
        if self.ema:
            update_ema(self.ema, self.method.nets)
        return logged

    # -- the run -------------------------------------------------------------------------
    def sampler(self) -> dict[str, torch.nn.Module]:
        """Networks to sample with: the EMA copies when enabled, else the trained ones."""
        return {n: (self.ema[n].module if n in self.ema else self.method.nets[n])
                for n in self.method.sampler_nets}

    def write_grid(self, fixed: dict[str, torch.Tensor]) -> None:
        images = sample_images(self.method, fixed, self.sampler())[:, 0].numpy()
        write_panels(self.out_dir / "samples" / f"step_{self.step:06d}.png",
                     [(f"{self.method.name}, step {self.step}", images)], self.title)

    def train(self) -> TrainResult:
        """Train from the current step to ``steps``; returns the result."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        fixed = _to(self.method.sampling_inputs(
            self.s.n_samples, self.sources, torch.Generator().manual_seed(self.s.seed + 1)),
            self.device)
        images_per_step = self.s.batch_size * self.draws_per_step
        window: dict[str, float] = {}
        window_steps, window_seconds = 0, 0.0
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.method.name,
                   disable=not sys.stderr.isatty(), leave=False)
        while self.step < self.total_steps:
            raise_if_stopped()  # a stop whose exception was swallowed (pipeline.interrupts)
            t0 = time.perf_counter()
            values = self.train_step()
            self.step += 1
            spent = time.perf_counter() - t0
            self.seconds += spent
            window_seconds += spent
            for k, v in values.items():
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            bar.update(1)
            last = self.step == self.total_steps
            if self.step % self.s.log_every == 0 or last:
                row = {"step": self.step, **{k: v / window_steps for k, v in window.items()},
                       **{f"lr_{k}": o.param_groups[0]["lr"] for k, o in self.optimizers.items()},
                       "seconds": round(self.seconds, 3),
                       "images_per_s": round(images_per_step * window_steps / window_seconds, 2)}
                self.history.append(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in row.items()
                                 if k not in ("step", "seconds") and not k.startswith("lr_")})
                window, window_steps, window_seconds = {}, 0, 0.0
            if self.step % self.s.sample_every == 0 or last:
                self.write_grid(fixed)
                log.info("%s step %d/%d: %s", self.method.name, self.step, self.total_steps,
                         ", ".join(f"{k} {v:.4g}" for k, v in self.history[-1].items()
                                   if k != "step"))
            if self.step % self.s.checkpoint_every == 0 or last:
                self.save()
        bar.close()
        if not self.history:  # resumed at the end: nothing new to log
            self.save()
        return TrainResult(self.step, self.history, self.sampler(), fixed)


def loop_record(settings: LoopSettings) -> dict[str, Any]:
    """The loop settings as plain JSON-able values (device excluded: a run may move)."""
    record = asdict(settings)
    record.pop("device")
    record["betas"] = list(record["betas"])
    record["diffaugment"] = list(record["diffaugment"])
    return record
