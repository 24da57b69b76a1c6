"""The data-scarcity curve (``scarcity`` rule, ``results/{dataset}/eval/scarcity.*``): how
well the defect detector finds the held-out phantoms' defects when it learns from n real
training phantoms, and whether classical augmentation helps at each n.

For every size n of ``scarcity.sizes`` (and the whole training split, ``all``),
``scarcity.draws`` random subsets of n training phantoms are drawn; the subsets of one
draw are nested (draw d takes the first n phantoms of its own random order, so each size
adds phantoms to the smaller ones), and the whole split is one draw. On each subset two
arms are trained, once per seed of ``downstream.seeds``, with the downstream test's
detector, loss and early stopping (:mod:`.downstream`):

* ``real``: the subset's images, with the random flips and quarter turns every detector of
  the project gets;
* ``real + augmentation``: the same with classical intensity augmentation on top, the
  baseline a generator must beat: each image's activity scaled by a factor uniform in
  ``1 +- scarcity.intensity`` (the background stays at -1) and Gaussian noise of
  ``scarcity.noise_sd`` (image units) added;
* for each labelled generator of ``scarcity.methods``, ``real + {method}`` and ``{method}
  only``: the generator trained on the subset's images alone (the ``scarcity_train`` and
  ``scarcity_generate`` rules train and sample it on the subset's image set,
  :mod:`models.data.subset`; on the whole split, the DAG's own generated set), its
  labelled images added to the subset's, or alone.

Every detector trains the same number of steps (``downstream.epochs`` passes over the whole
training split), so a small subset is not also a short training. Scores on the held-out
split: the AUC of the presence scores averaged over draws and seeds, with a 95 % interval by
bootstrap over held-out phantoms; the spread of the per-draw AUCs; balanced accuracy and
Dice as means over draws and seeds; and every other arm's paired clustered DeLong test
against the real arm at the same n (:func:`.downstream.ensemble_comparison`), whose verdict
is ``helps``, ``no evidence`` or ``hurts``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.loaders import PositronImages
from models.evaluate.downstream import (
    DownstreamSettings,
    LabelledSet,
    ensemble_comparison,
    generated_set,
    real_set,
    score,
    train_detector,
    validation_set,
)
from models.evaluate.table1 import counted
from pipeline.fileio import atomic_output

log = logging.getLogger(__name__)

BASE_ARMS = ("real", "real + augmentation")
#: Name of the subset of draw ``d`` of ``n`` phantoms (a folder under ``scarcity/``); the
#: whole training split is ``all``.
SUBSET_PATTERN = r"n[0-9]+_d[0-9]+"


def subset_name(n: int, draw: int) -> str:
    """The folder of draw ``draw`` of ``n`` training phantoms."""
    return f"n{n}_d{draw}"


def subset_names(settings: ScarcitySettings, whole: int) -> list[str]:
    """Every subset below the whole training split of ``whole`` phantoms the settings ask
    for (a size equal to the whole split is the split itself, ``all``)."""
    return [subset_name(n, d) for n in settings.sizes if n < whole
            for d in range(settings.draws)]


def subset_phantoms(train_phantoms: Sequence[str], settings: ScarcitySettings, name: str
                    ) -> tuple[str, ...]:
    """The training phantoms of subset ``name`` (:func:`subset_name`)."""
    whole = len(set(train_phantoms))
    if name not in subset_names(settings, whole):
        raise ValueError(f"subset {name!r} is not one of scarcity.sizes (below the "
                         f"{whole} training phantoms) x scarcity.draws")
    n, d = (int(x) for x in name[1:].split("_d"))
    return nested_subsets(train_phantoms, [n], settings.draws, settings.seed)[n][d]


OUTPUTS = ("scarcity.csv", "scarcity.md", "scarcity.json", "scarcity.png")


def arms_of(methods: Sequence[str]) -> tuple[str, ...]:
    """The arms: real, real + augmentation, and per method real + it and it alone."""
    return BASE_ARMS + tuple(a for m in methods for a in (f"real + {m}", f"{m} only"))


@dataclass(frozen=True)
class ScarcitySettings:
    """The ``scarcity`` config section, parsed.

    Attributes
    ----------
    sizes : tuple of int
        Numbers of real training phantoms below the whole split, ascending, distinct.
    draws : int
        Random subsets per size.
    noise_sd : float
        Gaussian noise of the augmentation arm, image units ([-1, 1] images).
    intensity : float
        Half-width of the augmentation arm's activity scale factors around 1.
    seed : int
        Seed of the subsets, the augmentation and the bootstrap.
    """

    sizes: tuple[int, ...]
    draws: int
    noise_sd: float
    intensity: float
    seed: int

    @classmethod
    def from_section(cls, s: dict[str, Any], train_phantoms: int | None = None
                     ) -> ScarcitySettings:
        """Parse and check ``s``; with ``train_phantoms`` (the training split's phantoms)
        sizes larger than it are refused. Errors name the key."""
        sizes = s.get("sizes")
        if not isinstance(sizes, list | tuple) or not sizes:
            raise ValueError("config key scarcity.sizes: must be a non-empty list of whole "
                             f"numbers of phantoms, got {sizes!r}")
        for n in sizes:
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
                raise ValueError(f"config key scarcity.sizes: {n!r} is not a whole number of "
                                 "phantoms >= 1")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"config key scarcity.sizes: {list(sizes)} repeats a size")
        if train_phantoms is not None and max(sizes) > train_phantoms:
            raise ValueError(f"config key scarcity.sizes: {max(sizes)} phantoms asked, the "
                             f"training split holds {train_phantoms}")
        draws = s.get("draws")
        if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
            raise ValueError(f"config key scarcity.draws: {draws!r} is not a whole number "
                             ">= 1")
        noise, intensity = (float(s[k]) for k in ("noise_sd", "intensity"))
        for key, value, top in (("noise_sd", noise, 1.0), ("intensity", intensity, 0.9)):
            if not np.isfinite(value) or not 0 <= value <= top:
                raise ValueError(f"config key scarcity.{key}: {value} must be between 0 and "
                                 f"{top}")
        return cls(tuple(sorted(int(n) for n in sizes)), int(draws), noise, intensity,
                   int(s["seed"]))


def nested_subsets(phantoms: Sequence[str], sizes: Sequence[int], draws: int, seed: int
                   ) -> dict[int, list[tuple[str, ...]]]:
    """Training phantoms of each (size, draw): draw d orders the phantoms with
    ``default_rng([seed, d])`` and takes the first n for every size n (nested within the
    draw); the whole set (key ``len(phantoms)``) is one draw. Sizes equal to the whole set
    are that one draw."""
    names = sorted(set(phantoms))
    out: dict[int, list[tuple[str, ...]]] = {}
    orders = [np.random.default_rng([seed, d]).permutation(len(names)) for d in range(draws)]
    for n in sizes:
        if n > len(names):
            raise ValueError(f"scarcity.sizes: {n} phantoms asked, {len(names)} given")
        if n < len(names):
            out[n] = [tuple(names[i] for i in sorted(order[:n])) for order in orders]
    out[len(names)] = [tuple(names)]
    return out


def intensity_augmentation(noise_sd: float, intensity: float
                           ) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A batch transform (B, 1, H, W) in [-1, 1]: ``(x + 1) s - 1`` with ``s`` uniform in
    ``1 +- intensity`` per image (activity scaled, background kept at -1), plus Gaussian
    noise of ``noise_sd``, clipped to [-1, 1]."""

    def apply(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        scale = 1.0 + intensity * (2.0 * torch.rand((len(images), 1, 1, 1), generator=gen)
                                   - 1.0)
        noise = noise_sd * torch.randn(images.shape, generator=gen)
        return ((images + 1.0) * scale.to(images) - 1.0 + noise.to(images)).clamp(-1.0, 1.0)

    return apply


def _subset(data: LabelledSet, phantoms: np.ndarray, keep: Sequence[str]) -> LabelledSet:
    mine = np.isin(phantoms, list(keep))
    return LabelledSet(data.images[mine], data.classes[mine], data.masks[mine],
                       data.has_mask[mine])


def run_scarcity(spec: dict[str, Any], positron_h5: str | Path, out_dir: str | Path,
                 generated: dict[str, Path] | None = None, overwrite: bool = False
                 ) -> list[dict[str, Any]]:
    """Write ``scarcity.{csv,md,json,png}`` into ``out_dir`` (module docstring).

    ``generated`` maps ``{subset}/{method}`` (``subset`` from :func:`subset_name`, or
    ``all`` for the whole split) to the generated set of that method trained on that
    subset, for every method of ``spec["methods"]``."""
    from recon.device import resolve_device

    positron_h5, out_dir = Path(positron_h5), Path(out_dir)
    for name in OUTPUTS:
        if (out_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{out_dir / name} exists; pass --overwrite to replace it")
    s = DownstreamSettings.from_section(spec["downstream"])
    acquisition = spec["acquisition"]
    train = real_set(positron_h5, "train", acquisition)
    train_phantoms = PositronImages(positron_h5, "train", acquisition=acquisition).phantoms()
    settings = ScarcitySettings.from_section(spec["scarcity"],
                                             len(np.unique(train_phantoms)))
    test = real_set(positron_h5, spec["held_out_split"], acquisition)
    test_phantoms = PositronImages(positron_h5, spec["held_out_split"],
                                   acquisition=acquisition).phantoms()
    device = resolve_device(spec["device"])
    val = validation_set(positron_h5, spec)
    per_epoch = int(np.ceil(len(train) / s.batch_size))
    steps = s.epochs * per_epoch
    augment = intensity_augmentation(settings.noise_sd, settings.intensity)
    subsets = nested_subsets(train_phantoms, settings.sizes, settings.draws, settings.seed)
    methods = list(spec.get("methods", []))
    arms = arms_of(methods)
    generated = dict(generated or {})
    whole = len(np.unique(train_phantoms))
    needed = [f"{'all' if n == whole else subset_name(n, d)}/{m}"
              for n, draws in subsets.items() for d in range(len(draws)) for m in methods]
    missing = [k for k in needed if k not in generated]
    if missing:
        raise ValueError(f"config key scarcity.methods: no generated set given for "
                         f"{', '.join(missing[:3])} (pass --generated SUBSET/METHOD=PATH)")
    size = train.images.shape[-1]
    present = test.classes > 0
    rows = []
    for n, draws in subsets.items():
        per_arm: dict[str, dict[str, list]] = {a: {"scores": [], "runs": [], "draw_auc": []}
                                               for a in arms}
        for d, keep in enumerate(draws):
            data = _subset(train, train_phantoms, keep)
            name = "all" if n == whole else subset_name(n, d)
            made = {m: generated_set(Path(generated[f"{name}/{m}"]), m, size)
                    for m in methods}
            sets = {"real": data, "real + augmentation": data}
            for m in methods:
                sets[f"real + {m}"] = LabelledSet.join(data, made[m])
                sets[f"{m} only"] = made[m]
            for arm in arms:
                draw_scores = []
                for seed in s.seeds:
                    trained = train_detector(
                        sets[arm], steps, s, seed, device, val, per_epoch,
                        augment=augment if arm == "real + augmentation" else None,
                        augment_seed=settings.seed + d)
                    scored = score(trained.net, test, device)
                    draw_scores.append(scored.pop("scores"))
                    per_arm[arm]["runs"].append({**scored, "draw": d,
                                                 "selected_step": trained.step})
                mean = np.mean(draw_scores, axis=0)
                per_arm[arm]["scores"].append(mean)
                per_arm[arm]["draw_auc"].append(
                    ensemble_comparison(mean, None, present, test_phantoms, 0,
                                        settings.seed)["ensemble_auc"])
            log.info("%d phantoms, draw %d: %s", n, d, {
                a: round(per_arm[a]["draw_auc"][-1], 3) for a in arms})
        real_mean = np.mean(per_arm["real"]["scores"], axis=0)
        for arm in arms:
            runs = per_arm[arm]["runs"]
            compared = ensemble_comparison(
                np.mean(per_arm[arm]["scores"], axis=0),
                None if arm == "real" else real_mean, present, test_phantoms,
                int(spec["bootstrap"]), settings.seed)
            draw_auc = np.asarray(per_arm[arm]["draw_auc"])
            rows.append({
                "phantoms": n, "whole_split": n == len(np.unique(train_phantoms)),
                "arm": arm, "draws": len(draws), "detectors": len(runs),
                "images": int(np.mean([len(_subset(train, train_phantoms, k)) for k in draws]))
                if not arm.endswith(" only") else 0,
                **compared,
                "draw_auc_min": float(np.nanmin(draw_auc)) if np.isfinite(draw_auc).any()
                else float("nan"),
                "draw_auc_max": float(np.nanmax(draw_auc)) if np.isfinite(draw_auc).any()
                else float("nan"),
                "balanced_accuracy": float(np.mean([r["balanced_accuracy"] for r in runs])),
                "dice": float(np.mean([r["dice"] for r in runs])),
                "subsets": [list(k) for k in draws]})
    _write(out_dir, rows, spec, settings, s, steps, len(test), int(present.sum()),
           len(np.unique(test_phantoms)), arms)
    return rows


CSV_KEYS = ("phantoms", "arm", "draws", "detectors", "images", "ensemble_auc", "auc_lo",
            "auc_hi", "draw_auc_min", "draw_auc_max", "balanced_accuracy", "dice",
            "delta_auc_ensemble", "p_vs_real", "verdict")


def _write(out_dir: Path, rows: list[dict[str, Any]], spec: dict[str, Any],
           settings: ScarcitySettings, s: DownstreamSettings, steps: int, n_test: int,
           n_test_defects: int, n_test_phantoms: int, arms: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)

    def cell(v: Any) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    with atomic_output(out_dir / "scarcity.csv", overwrite=True) as tmp:
        Path(tmp).write_text(",".join(CSV_KEYS) + "\n" + "".join(
            ",".join(cell(r[k]) for k in CSV_KEYS) + "\n" for r in rows))
    with atomic_output(out_dir / "scarcity.md", overwrite=True) as tmp:
        Path(tmp).write_text(format_markdown(rows, spec["dataset"], settings, s, steps,
                                             n_test, n_test_defects, n_test_phantoms))
    with atomic_output(out_dir / "scarcity.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps({"rows": rows, "steps": steps, "n_test": n_test,
                                         "n_test_defects": n_test_defects,
                                         "n_test_phantoms": n_test_phantoms}, indent=2))
    with atomic_output(out_dir / "scarcity.png", overwrite=True) as tmp:
        plot(rows, tmp, arms)


def _fmt(v: float, d: int = 3) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.{d}f}"


def format_markdown(rows: list[dict[str, Any]], dataset: str, settings: ScarcitySettings,
                    s: DownstreamSettings, steps: int, n_test: int, n_test_defects: int,
                    n_test_phantoms: int) -> str:
    """The table and its caption."""
    head = ("| training phantoms | arm | draws x seeds | images | AUC [95 %] | per-draw AUC "
            "range | balanced accuracy | Dice | vs real: Δ AUC, p (verdict) |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        auc = _fmt(r["ensemble_auc"]) + (f" [{_fmt(r['auc_lo'])}, {_fmt(r['auc_hi'])}]"
                                         if np.isfinite(r["auc_lo"]) else "")
        versus = ("" if r["arm"] == "real" else "n/a" if not np.isfinite(r["p_vs_real"]) else
                  f"{r['delta_auc_ensemble']:+.3f}, {r['p_vs_real']:.3g} ({r['verdict']})")
        size = f"{r['phantoms']}" + (" (all)" if r["whole_split"] else "")
        body += (f"| {size} | {r['arm']} | {r['draws']} x {r['detectors'] // r['draws']} | "
                 f"{r['images']} | {auc} | {_fmt(r['draw_auc_min'])} - "
                 f"{_fmt(r['draw_auc_max'])} | {_fmt(r['balanced_accuracy'])} | "
                 f"{_fmt(r['dice'])} | {versus} |\n")
    return (f"# Data-scarcity curve: {dataset}\n\n{head}{body}\n"
            f"Detectors trained on n real training phantoms "
            f"({counted(settings.draws, 'nested random draw')} per size below the whole "
            f"split), {steps} steps of {s.batch_size} images "
            f"each whatever n, seeds {list(s.seeds)}; scored on {n_test} held-out images of "
            f"{counted(n_test_phantoms, 'phantom')}, {n_test_defects} with a defect. AUC: "
            "presence scores "
            "averaged over draws and seeds, with the 2.5 and 97.5 percentiles of resamples "
            "of whole held-out phantoms (n/a below two phantoms). Augmentation: activity "
            f"scaled by 1 ± {settings.intensity:g} and Gaussian noise of "
            f"{settings.noise_sd:g}, on top of flips and quarter turns. p: paired DeLong "
            "test against the real arm at the same n, phantoms as clusters (Obuchowski "
            "1997). A generator arm's generator learnt from the same n phantoms only; "
            "'images' counts the real ones.\n")


def plot(rows: list[dict[str, Any]], path: str | Path, arms: Sequence[str] = BASE_ARMS
         ) -> None:
    """AUC against training phantoms, one line per arm with its intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, arm in enumerate(arms):
        mine = [r for r in rows if r["arm"] == arm]
        n = np.array([r["phantoms"] for r in mine], float) * (1.0 + 0.03 * k)
        auc = np.array([r["ensemble_auc"] for r in mine])
        lo = np.array([r["auc_lo"] for r in mine])
        hi = np.array([r["auc_hi"] for r in mine])
        err = np.where(np.isfinite(lo), np.stack([auc - lo, hi - auc]), 0.0)
        ax.errorbar(n, auc, yerr=err, marker="o", capsize=3, label=arm)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("real training phantoms")
    ax.set_ylabel("presence AUC on held-out phantoms")
    ax.set_ylim(0.0, 1.02)
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
