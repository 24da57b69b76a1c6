"""Does enhancement help find defects, or only PSNR? The real-trained defect detector of the
downstream test (:mod:`models.evaluate.downstream`: same network, settings, steps and
seeds, trained on the real training images of ``train.acquisition``) scores the held-out
slices of the enhancement table as each image kind shows them: low-count, post-filtered,
pix2pix and reference.

Per kind: the presence AUC (score ``1 - p(none)``) and the **sensitivity at a fixed false
positive rate** per defect class: the threshold is the score that at most
:data:`FALSE_POSITIVE_RATE` of that kind's defect-free slices exceed, and a class's
sensitivity is the share of its slices above it; means over the detector seeds. A kind whose
defect-free slices are too few to set that threshold (fewer than ``1 / rate``) gets NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.data.labels import DEFECT_CLASSES
from models.evaluate.downstream import (
    DownstreamSettings,
    predict,
    real_set,
    train_detector,
    validation_set,
)
from models.metrics.detection import FALSE_POSITIVE_RATE, presence_auc, sensitivity_at_fpr
from recon.device import resolve_device


def detection_rows(spec: dict[str, Any], positron_h5, images: dict[str, np.ndarray],
                   classes: np.ndarray) -> list[dict[str, Any]]:
    """One row per image kind of ``images`` (kind: (n, H, W) in [-1, 1], the held-out slices
    whose defect classes are ``classes`` (n,)): AUC and sensitivities (module docstring)."""
    s = DownstreamSettings.from_section(spec["downstream"])
    device = resolve_device(spec["device"])
    train = real_set(positron_h5, "train", spec["acquisition"])
    steps = s.epochs * int(np.ceil(len(train) / s.batch_size))
    val = validation_set(positron_h5, spec)
    per_epoch = int(np.ceil(len(train) / s.batch_size))
    nets = [train_detector(train, steps, s, seed, device, val, per_epoch).net
            for seed in s.seeds]
    present = classes > 0
    rows = []
    for kind, x in images.items():
        per_seed = []
        for net in nets:
            presence = 1.0 - predict(net, np.asarray(x, np.float32), device)[0][:, 0]
            auc = (presence_auc(presence, present) if 0 < present.sum() < len(present)
                   else float("nan"))
            per_seed.append({"auc": auc, **sensitivity_at_fpr(presence, classes,
                                                              FALSE_POSITIVE_RATE)})
        keys = sorted({k for r in per_seed for k in r})
        rows.append({"images": kind, "n_slices": int(len(x)), "n_defect_slices": int(
            present.sum()), **{k: float(np.mean([r.get(k, np.nan) for r in per_seed]))
                               for k in keys}, "seeds": list(s.seeds)})
    return rows


def detection_markdown(rows: list[dict[str, Any]]) -> str:
    """The detection table and its caption."""
    classes = [c for c in (*DEFECT_CLASSES[1:], "all") if any(c in r for r in rows)]
    head = ("| images | presence AUC | " + " | ".join(f"sensitivity {c}" for c in classes)
            + " |\n|" + "---|" * (2 + len(classes)) + "\n")

    def f(v) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{v:.2f}"

    body = "".join(f"| {r['images']} | {f(r.get('auc'))} | "
                   + " | ".join(f(r.get(c)) for c in classes) + " |\n" for r in rows)
    return ("\n## Detection by the real-trained detector\n\n" + head + body + "\n"
            f"The downstream test's detector trained on the real training images (seeds "
            f"{rows[0]['seeds']}, means over them) scores the same {rows[0]['n_slices']} "
            f"held-out slices ({rows[0]['n_defect_slices']} with a defect) as each image kind "
            "shows them. Sensitivity: share of a class's slices above the score that at most "
            f"{FALSE_POSITIVE_RATE:.0%} of that kind's defect-free slices exceed (n/a: too "
            "few defect-free slices). Enhancement that raises PSNR but not these numbers does "
            "not help an inspector find defects.\n")
