"""Train on synthetic, test on real (``downstream`` rule, ``results/{dataset}/eval/
downstream.*``): does generated data help a defect detector find real defects?

A :class:`~models.nets.detector.DefectDetector` (defect class per image, presence score
``1 - p(none)``, defect mask per pixel) is trained on each training set:

* ``real``: the real training images (``train.acquisition``) with their classes and masks;
* ``real + {method}``: those plus the method's generated images with their labels (the
  class each was generated to; the mask too for mask-to-image methods);
* ``{method} only``: the generated images alone.

Every set gets the same number of optimisation steps (``epochs`` passes over the real
training images), batches drawn uniformly from the set, random flips and quarter turns
(image and mask together), Adam, cross-entropy with inverse-frequency class weights of that
set plus ``segmentation_weight`` times the mask loss (per-pixel BCE plus soft Dice,
:func:`mask_loss`) on the images that have a mask (conditional methods give a class but no
mask). Each set is trained once per seed of
``downstream.seeds``. Scores on the real held-out split (:mod:`models.metrics.detection`):
presence AUC, balanced accuracy over the classes present and the accuracy of each, and the
mean Dice of the predicted masks (logit > 0) on the held-out images with a defect. Numbers
are means over the seeds with their standard deviation; ``delta_auc`` is a set's AUC minus
the real set's, seed by seed.

The detectors trained on real images alone also classify every conditional method's
generated images: the share of images of class k the detector calls k is the method's
per-class **class agreement** (chance is the detector's rate of calling k on real images).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.data.image_set import check_images, open_image_set
from models.data.labels import DEFECT_CLASSES
from models.data.loaders import PositronImages
from models.metrics.detection import (
    FALSE_POSITIVE_RATE,
    auc_standard_error,
    dice_per_image,
    paired_auc_test,
    per_class_accuracy,
    presence_auc,
    sensitivity_at_fpr,
)
from models.nets.detector import DefectDetector
from models.nets.init import init_weights
from models.training.augment import random_dihedral
from pipeline.fileio import atomic_output

log = logging.getLogger(__name__)

N_CLASSES = len(DEFECT_CLASSES)


@dataclass(frozen=True)
class DownstreamSettings:
    """The ``downstream`` config section, parsed."""

    epochs: int
    batch_size: int
    lr: float
    channels: int
    segmentation_weight: float
    seeds: tuple[int, ...]
    early_stopping: bool = True

    @classmethod
    def from_section(cls, s: dict[str, Any]) -> DownstreamSettings:
        weight = float(s["segmentation_weight"])
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"config key downstream.segmentation_weight: {weight} must be a "
                             "finite number >= 0")
        return cls(int(s["epochs"]), int(s["batch_size"]), float(s["lr"]), int(s["channels"]),
                   weight, tuple(int(x) for x in s["seeds"]),
                   bool(s.get("early_stopping", True)))


@dataclass
class LabelledSet:
    """Images (n, H, W) float32 in [-1, 1], classes (n,) int64, masks (n, H, W) bool and
    whether each image has a mask (n,) bool."""

    images: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def join(a: LabelledSet, b: LabelledSet) -> LabelledSet:
        return LabelledSet(*(np.concatenate([x, y]) for x, y in (
            (a.images, b.images), (a.classes, b.classes), (a.masks, b.masks),
            (a.has_mask, b.has_mask))))


def real_set(positron_h5: Path, split: str, acquisition: str | None) -> LabelledSet:
    """The real images of a split with their classes and masks."""
    data = PositronImages(positron_h5, split, acquisition=acquisition, with_masks=True)
    if len(data) == 0:
        raise ValueError(f"{positron_h5}: no {acquisition or ''} images in the {split} split")
    every = np.arange(len(data))
    both = data.batch(every).numpy()
    return LabelledSet(both[:, 0].astype(np.float32), data.labels(every).numpy(),
                       both[:, 1] > 0, np.ones(len(data), bool))


def validation_set(positron_h5: Path, spec: dict[str, Any]) -> LabelledSet | None:
    """The real images early stopping watches: the ``val`` split, unless it is the split the
    detector is scored on (``held_out_split: val``) or ``downstream.early_stopping`` is off;
    None then, or when the split holds no image."""
    s = spec["downstream"]
    if not s.get("early_stopping", True) or spec.get("held_out_split", "test") == "val":
        return None
    if len(PositronImages(positron_h5, "val", acquisition=spec["acquisition"])) == 0:
        return None
    return real_set(positron_h5, "val", spec["acquisition"])


def generated_set(path: Path, method: str, size_px: int) -> LabelledSet:
    """A generated set's images and labels; a set without labels is refused naming the
    config key (its method cannot be conditioned)."""
    with open_image_set(path, "generated image set") as f:
        if "images" not in f:
            raise ValueError(f"{path}: missing dataset images (not a generated set)")
        if "labels" not in f:
            raise ValueError(f"config key downstream.methods: {method} cannot be conditioned on "
                             f"a defect class ({path} holds no labels); use a conditional or "
                             "mask-to-image method")
        images = f["images"][...]
        classes = f["labels"][...].astype(np.int64)
        masks = f["masks"][...] > 0 if "masks" in f else np.zeros(images.shape, bool)
        has_mask = np.full(len(images), "masks" in f)
    check_images(path, images)
    if images.shape[1:] != (size_px, size_px) or masks.shape != images.shape:
        raise ValueError(f"{path}: images {images.shape[1:]} and masks {masks.shape[1:]} do "
                         f"not match the real images' {size_px} x {size_px} px")
    if len(classes) != len(images) or classes.min(initial=0) < 0 or classes.max(
            initial=0) >= N_CLASSES:
        raise ValueError(f"{path}: labels must be {len(images)} class numbers in "
                         f"[0, {N_CLASSES})")
    return LabelledSet(images.astype(np.float32), classes, masks, has_mask)


def mask_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
              ) -> torch.Tensor:
    """Per-pixel BCE plus soft Dice (Milletari et al. 2016) over the images with a mask
    (``weight`` (B,) 1 or 0): defects cover a few per cent of the pixels, and BCE alone
    settles on an empty mask; the Dice term is over the batch, so images without a defect
    count through their false positives."""
    per_image = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(
        dim=(1, 2, 3))
    bce = (per_image * weight).sum() / weight.sum()
    p = torch.sigmoid(logits) * weight.view(-1, 1, 1, 1)
    t = target * weight.view(-1, 1, 1, 1)
    dice = (2 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + (1.0 - dice)


@dataclass
class TrainedDetector:
    """A trained detector and, with early stopping, the step whose weights it keeps and
    their validation presence AUC (None without a usable validation split)."""

    net: DefectDetector
    step: int
    val_auc: float | None = None


def train_detector(train: LabelledSet, steps: int, s: DownstreamSettings, seed: int,
                   device: torch.device, val: LabelledSet | None = None,
                   check_every: int | None = None,
                   augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
                   | None = None, augment_seed: int = 0) -> TrainedDetector:
    """A detector trained for ``steps`` batches drawn uniformly from ``train``. With ``val``
    (images with and without defects) the presence AUC on it is measured every
    ``check_every`` steps and the weights of the best check are kept (early stopping on the
    validation split; ties keep the earlier check). ``augment`` transforms each batch's
    images (B, 1, H, W) after the flips, with its own generator seeded ``augment_seed`` (so
    the batches drawn are those of the same seed without it)."""
    gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(augment_seed)
    torch.manual_seed(seed)
    net = DefectDetector(N_CLASSES, s.channels)
    init_weights(net, gen)
    net = net.to(device)
    x = torch.from_numpy(train.images)[:, None]
    m = torch.from_numpy(train.masks)[:, None].float()
    y = torch.from_numpy(train.classes)
    has = torch.from_numpy(train.has_mask).float()
    counts = torch.bincount(y, minlength=N_CLASSES).double()
    weight = torch.where(counts > 0, counts.sum() / (N_CLASSES * counts.clamp(min=1)), 0.0)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    usable = val is not None and 0 < (val.classes > 0).sum() < len(val)
    best: tuple[float, int, dict] | None = None
    net.train()
    for step in range(1, steps + 1):
        pick = torch.randint(0, len(train), (s.batch_size,), generator=gen)
        both = random_dihedral(torch.cat([x[pick], m[pick]], dim=1), gen).to(device)
        if augment is not None:
            both = torch.cat([augment(both[:, :1], augment_gen), both[:, 1:]], dim=1)
        logits, mask_logits = net(both[:, :1])
        loss = F.cross_entropy(logits, y[pick].to(device), weight=weight.float().to(device))
        if s.segmentation_weight > 0 and has[pick].any():
            loss = loss + s.segmentation_weight * mask_loss(mask_logits, both[:, 1:],
                                                            has[pick].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if usable and check_every and (step % check_every == 0 or step == steps):
            net.eval()
            auc = presence_auc(1.0 - predict(net, val.images, device)[0][:, 0],
                               val.classes > 0)
            net.train()
            if best is None or auc > best[0]:
                best = (auc, step, {k: v.detach().clone() for k, v in net.state_dict().items()})
    if best is None:
        return TrainedDetector(net.eval(), steps)
    net.load_state_dict(best[2])
    return TrainedDetector(net.eval(), best[1], float(best[0]))


@torch.no_grad()
def predict(net: DefectDetector, images: np.ndarray, device: torch.device, batch: int = 128
            ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (n, N_CLASSES) and predicted masks (n, H, W) bool."""
    probs, masks = [], []
    for i in range(0, len(images), batch):
        logits, mask_logits = net(torch.from_numpy(images[i : i + batch])[:, None].to(device))
        probs.append(torch.softmax(logits, 1).cpu())
        masks.append((mask_logits[:, 0] > 0).cpu())
    return torch.cat(probs).numpy(), torch.cat(masks).numpy()


def score(net: DefectDetector, test: LabelledSet, device: torch.device) -> dict[str, Any]:
    """Presence AUC, balanced and per-class accuracy, and Dice on the defect images."""
    probs, masks = predict(net, test.images, device)
    present = test.classes > 0
    try:
        auc = presence_auc(1.0 - probs[:, 0], present)
    except ValueError as exc:  # a held-out split without (or with only) defects
        log.warning("presence AUC undefined on the held-out split: %s", exc)
        auc = float("nan")
    per_class = per_class_accuracy(probs.argmax(1), test.classes, N_CLASSES)
    dice = dice_per_image(masks[present], test.masks[present]) if present.any() else np.array(
        [np.nan])
    return {"scores": 1.0 - probs[:, 0], "auc": auc,
            "balanced_accuracy": float(np.nanmean(per_class)),
            "per_class": {c: float(a) for c, a in zip(DEFECT_CLASSES, per_class, strict=True)},
            "dice": float(np.mean(dice)),
            "sensitivity": sensitivity_at_fpr(1.0 - probs[:, 0], test.classes,
                                              FALSE_POSITIVE_RATE)}


def class_agreement(nets: list[DefectDetector], data: LabelledSet, device: torch.device
                    ) -> dict[str, float]:
    """Share of each class's generated images the real-trained detectors call that class
    (mean over the detectors); NaN for a class the set does not hold."""
    out = {}
    calls = np.stack([predict(net, data.images, device)[0].argmax(1) for net in nets])
    for k, name in enumerate(DEFECT_CLASSES):
        of_k = data.classes == k
        out[name] = float(np.mean(calls[:, of_k] == k)) if of_k.any() else float("nan")
    return out


#: Significance level of the paired comparisons with the real set.
ALPHA = 0.05


def ensemble_comparison(scores: np.ndarray, real_scores: np.ndarray | None,
                        present: np.ndarray, phantoms: np.ndarray, replicates: int,
                        seed: int) -> dict[str, Any]:
    """The presence AUC of a set's detectors (their scores averaged over the seeds, (n,))
    with a 95 % interval by bootstrap over the held-out phantoms (percentiles of
    ``replicates`` resamples of whole phantoms), and, given the real set's averaged scores,
    the paired clustered DeLong test of the difference (:func:`paired_auc_test`, phantoms
    as clusters) with its verdict: ``helps`` or ``hurts`` where p < :data:`ALPHA`, ``no
    evidence`` otherwise. NaN and ``n/a`` with one label only; with one held-out phantom
    the AUC alone (no interval, no test)."""
    out: dict[str, Any] = {"ensemble_auc": float("nan"), "auc_lo": float("nan"),
                           "auc_hi": float("nan"), "p_vs_real": float("nan"),
                           "delta_auc_ensemble": float("nan"), "verdict": "n/a"}
    names, cluster = np.unique(phantoms, return_inverse=True)
    if present.all() or not present.any():
        return out
    out["ensemble_auc"] = presence_auc(scores, present)
    if real_scores is not None:
        out["delta_auc_ensemble"] = out["ensemble_auc"] - presence_auc(real_scores, present)
    if names.size < 2:
        return out
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(replicates):
        counts = np.bincount(rng.integers(0, names.size, names.size), minlength=names.size)
        weight = counts[cluster]
        take = np.repeat(np.arange(scores.size), weight)
        if 0 < present[take].sum() < take.size:
            draws.append(presence_auc(scores[take], present[take]))
    if draws:
        out["auc_lo"], out["auc_hi"] = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    if real_scores is not None:
        test = paired_auc_test(scores, real_scores, present, cluster)
        out["delta_auc_ensemble"], out["p_vs_real"] = test.difference, test.p
        out["verdict"] = ("no evidence" if not test.p < ALPHA
                          else "helps" if test.difference > 0 else "hurts")
    return out


def _summary(runs: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("auc", "balanced_accuracy", "dice"):
        v = np.asarray([r[key] for r in runs], np.float64)
        out[key], out[f"{key}_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(
            v) > 1 else 0.0
    for c in DEFECT_CLASSES:
        out[f"accuracy_{c}"] = float(np.mean([r["per_class"][c] for r in runs]))
    for c in (*DEFECT_CLASSES[1:], "all"):
        out[f"sensitivity_{c}"] = float(np.mean([r["sensitivity"].get(c, np.nan)
                                                 for r in runs]))
    out["selected_step"] = float(np.mean([r["selected_step"] for r in runs]))
    if base is not None:
        d = np.asarray([r["auc"] - b["auc"] for r, b in zip(runs, base, strict=True)])
        out["delta_auc"], out["delta_auc_std"] = float(np.mean(d)), float(
            np.std(d, ddof=1)) if len(d) > 1 else 0.0
    return out


def format_markdown(rows: list[dict[str, Any]], n_train: int, n_test: int, test_classes: list,
                    s: DownstreamSettings, steps: int, n_test_defects: int,
                    early_stopped: bool = False) -> str:
    present = [c for c in DEFECT_CLASSES if c in test_classes]
    defects = [c for c in present if c != "none"]

    def pm(row, key, d=3):
        v = row.get(key, float("nan"))
        if not np.isfinite(v):
            return "n/a"
        sd = row.get(f"{key}_std")
        return f"{v:.{d}f}" + (f" ± {sd:.{d}f}" if sd is not None and len(s.seeds) > 1 else "")

    def f2(v):
        return "n/a" if not np.isfinite(v) else f"{v:.2f}"

    def interval(row):
        v, lo, hi = (row.get(k, float("nan")) for k in ("ensemble_auc", "auc_lo", "auc_hi"))
        if not np.isfinite(v):
            return "n/a"
        return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else "")

    def versus(row):
        p = row.get("p_vs_real", float("nan"))
        return "n/a" if not np.isfinite(p) else f"{p:.3g} ({row['verdict']})"

    head = ("| training set | images | presence AUC | Δ AUC vs real | seed-mean AUC [95 %] | "
            "vs real: p (verdict) | balanced accuracy | Dice | "
            + " | ".join(f"acc. {c}" for c in present) + " | "
            + " | ".join(f"sens. {c}" for c in defects) + " |\n|"
            + "---|" * (8 + len(present) + len(defects)) + "\n")
    body = "".join(
        f"| {r['training_set']} | {r['n_images']} | {pm(r, 'auc')} | {pm(r, 'delta_auc')} | "
        f"{interval(r)} | {versus(r)} | "
        f"{pm(r, 'balanced_accuracy')} | {pm(r, 'dice')} | "
        + " | ".join(f"{r[f'accuracy_{c}']:.2f}" for c in present) + " | "
        + " | ".join(f2(r.get(f"sensitivity_{c}", np.nan)) for c in defects) + " |\n"
        for r in rows)
    stopping = (f" Early stopping: the weights of the epoch with the best presence AUC on the "
                f"validation split (mean selected step of the real set "
                f"{rows[0].get('selected_step', steps):.0f} of {steps})." if early_stopped else
                " No early stopping (downstream.early_stopping off, no validation images, or "
                "the validation split is the held-out one): the last weights.")
    return (f"{head}{body}\nDetector trained {steps} steps of {s.batch_size} images per set "
            f"({s.epochs} passes over the {n_train} real training images), seeds "
            f"{list(s.seeds)} (mean ± standard deviation); scored on {n_test} real held-out "
            f"images, {n_test_defects} with a defect.{stopping} Sensitivity: share of a class's "
            f"images above the score that at most {FALSE_POSITIVE_RATE:.0%} of the defect-free "
            "held-out images exceed. Δ AUC: the set's AUC minus the real set's, "
            "seed by seed. Seed-mean AUC: the AUC of the presence scores averaged over the "
            "seeds, with the 2.5 and 97.5 percentiles of resamples of whole held-out phantoms "
            "(slices of one phantom are not independent); p: the paired DeLong test of that "
            "AUC against the real set's on the same images with the phantoms as clusters "
            f"(Obuchowski 1997), 'helps' or 'hurts' where p < {ALPHA}, 'no evidence' "
            "otherwise; n/a with fewer than two held-out phantoms. "
            "Resolution of this test set: an AUC of 0.5 has a standard error of "
            + (f"{auc_standard_error(0.5, n_test_defects, n_test - n_test_defects):.3f}"
               if 0 < n_test_defects < n_test else "n/a")
            + " (Hanley and McNeil 1982); differences smaller than about twice that are not "
            "evidence either way.\n")


def run_downstream(spec: dict[str, Any], positron_h5: str | Path, generated: dict[str, Path],
                   out_dir: str | Path, overwrite: bool = False) -> list[dict[str, Any]]:
    """Write ``downstream.csv``, ``downstream.md`` and ``downstream.json`` into ``out_dir``."""
    from recon.device import resolve_device

    positron_h5, out_dir = Path(positron_h5), Path(out_dir)
    for name in ("downstream.csv", "downstream.md", "downstream.json"):
        if (out_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{out_dir / name} exists; pass --overwrite to replace it")
    s = DownstreamSettings.from_section(spec["downstream"])
    missing = [m for m in spec["methods"] if m not in generated]
    if missing:
        raise ValueError(f"config key downstream.methods: no generated set given for "
                         f"{', '.join(missing)} (pass --generated METHOD=PATH)")
    device = resolve_device(spec["device"])
    train = real_set(positron_h5, "train", spec["acquisition"])
    test = real_set(positron_h5, spec["held_out_split"], spec["acquisition"])
    size = train.images.shape[-1]
    synthetic = {m: generated_set(Path(generated[m]), m, size) for m in spec["methods"]}
    steps = s.epochs * int(np.ceil(len(train) / s.batch_size))
    sets = {"real": train}
    for m, data in synthetic.items():
        sets[f"real + {m}"] = LabelledSet.join(train, data)
        sets[f"{m} only"] = data
    runs: dict[str, list[dict[str, Any]]] = {}
    scores: dict[str, list[np.ndarray]] = {}
    real_nets = []
    val = validation_set(positron_h5, spec)
    per_epoch = int(np.ceil(len(train) / s.batch_size))
    for name, data in sets.items():
        runs[name] = []
        for seed in s.seeds:
            trained = train_detector(data, steps, s, seed, device, val, per_epoch)
            scored = score(trained.net, test, device)
            scores.setdefault(name, []).append(scored.pop("scores"))
            runs[name].append({**scored, "selected_step": trained.step,
                               "val_auc": trained.val_auc})
            if name == "real":
                real_nets.append(trained.net)
        log.info("%s: AUC %.3f, balanced accuracy %.3f, Dice %.3f", name,
                 np.mean([r["auc"] for r in runs[name]]),
                 np.mean([r["balanced_accuracy"] for r in runs[name]]),
                 np.mean([r["dice"] for r in runs[name]]))
    phantoms = PositronImages(positron_h5, spec["held_out_split"],
                              acquisition=spec["acquisition"]).phantoms()
    real_mean = np.mean(scores["real"], axis=0)
    rows = []
    for name, data in sets.items():
        row = {"training_set": name, "n_images": len(data),
               **_summary(runs[name], None if name == "real" else runs["real"]),
               **ensemble_comparison(np.mean(scores[name], axis=0),
                                     None if name == "real" else real_mean, test.classes > 0,
                                     phantoms, int(spec["bootstrap"]), s.seeds[0]),
               "runs": runs[name]}
        rows.append(row)
    agreement = {m: class_agreement(real_nets, data, device) for m, data in synthetic.items()}
    test_classes = sorted({DEFECT_CLASSES[k] for k in test.classes})
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ["n_images", "auc", "auc_std", "delta_auc", "delta_auc_std", "balanced_accuracy",
            "balanced_accuracy_std", "dice", "dice_std", *(f"accuracy_{c}" for c in
                                                           DEFECT_CLASSES),
            *(f"sensitivity_{c}" for c in (*DEFECT_CLASSES[1:], "all")), "selected_step",
            "ensemble_auc", "auc_lo", "auc_hi", "delta_auc_ensemble", "p_vs_real"]
    with atomic_output(out_dir / "downstream.csv", overwrite=True) as tmp:
        Path(tmp).write_text("training_set," + ",".join(keys) + ",verdict\n" + "".join(
            f"{r['training_set']}," + ",".join(f"{r.get(k, float('nan')):.6g}" for k in keys)
            + f",{r.get('verdict', 'n/a')}\n" for r in rows))
    with atomic_output(out_dir / "downstream.md", overwrite=True) as tmp:
        Path(tmp).write_text(f"# Train on synthetic, test on real: {spec['dataset']}\n\n"
                             + format_markdown(rows, len(train), len(test), test_classes, s,
                                               steps, int((test.classes > 0).sum()),
                                               val is not None))
    with atomic_output(out_dir / "downstream.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps({
            "rows": rows, "class_agreement": agreement, "steps": steps,
            "n_train": len(train), "n_test": len(test), "test_classes": test_classes,
            "n_test_defects": int((test.classes > 0).sum()),
            "train_class_counts": np.bincount(train.classes, minlength=N_CLASSES).tolist(),
            "real_call_rate": {c: float(np.mean(np.concatenate([
                predict(n, test.images, device)[0].argmax(1) for n in real_nets]) == k))
                for k, c in enumerate(DEFECT_CLASSES)}}, indent=2))
    return rows
