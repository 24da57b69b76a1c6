"""Training and use of the domain feature network (``feature_network`` rule,
``results/{dataset}/models/feature_net/``).

The network (:class:`models.nets.feature_cnn.FeatureCNN`) learns, on every image of the
**training split** of ``positron.h5``, to tell the acquisition (low count or reference) and
whether a defect lies in the slice: ``class = 2 * acquisition + defect present`` (4 classes
with two acquisitions). Both are properties a realistic positron image must carry (the count
level and noise texture of a scan, the disturbances a defect makes), so its features are
sensitive to what makes a generated image look like a scan of this scanner. Cross-entropy
weighted by inverse class frequency (defects are in a minority of slices), Adam, random flips
and quarter turns, seeded. Its accuracy on the held-out splits (val and test), against the
majority-class rate, is written to ``metrics.json``: a feature network that cannot tell its
classes apart gives distances that mean nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.data.image_set import check_images, open_image_set
from models.data.loaders import string_column
from models.nets.feature_cnn import FeatureCNN
from models.nets.init import init_weights
from models.training.augment import random_dihedral
from models.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.fileio import atomic_output, provenance_attrs

log = logging.getLogger(__name__)

NAME = "feature_net"


@dataclass(frozen=True)
class FeatureNetSettings:
    """The ``evaluate.feature_network`` config section, parsed."""

    epochs: int
    batch_size: int
    lr: float
    embed_dim: int
    seed: int

    @classmethod
    def from_section(cls, s: dict[str, Any]) -> FeatureNetSettings:
        return cls(int(s["epochs"]), int(s["batch_size"]), float(s["lr"]), int(s["embed_dim"]),
                   int(s["seed"]))


def labelled_images(positron_h5: Path) -> dict[str, Any]:
    """Every image of ``positron.h5`` with its class, split and acquisition."""
    with open_image_set(positron_h5, "positron image set") as f:
        for name in ("images", "split", "acquisition", "defect_count"):
            if name not in f:
                raise ValueError(f"{positron_h5}: missing dataset {name} (not a positron.h5)")
        images = f["images"][...]
        check_images(positron_h5, images)  # float, finite, in [-1, 1]
        images = images.astype(np.float32)
        acquisition = string_column(f["acquisition"])
        split = string_column(f["split"])
        defect = f["defect_count"][...] > 0
    names = sorted(set(acquisition))
    index = np.searchsorted(names, acquisition)
    classes = [f"{a}, {'defect' if d else 'no defect'}" for a in names for d in (False, True)]
    return {"images": images, "labels": (2 * index + defect).astype(np.int64), "split": split,
            "acquisition": acquisition, "classes": classes}


def _accuracy(net: FeatureCNN, images: np.ndarray, labels: np.ndarray, n_classes: int
              ) -> dict[str, Any]:
    logits = torch.cat([net(torch.from_numpy(images[i : i + 256])[:, None])
                        for i in range(0, len(images), 256)])
    predicted = logits.argmax(1).numpy()
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    present = confusion.sum(1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(1)[present]
    return {"accuracy": float(np.mean(predicted == labels)),
            "balanced_accuracy": float(recall.mean()),
            "majority_rate": float(np.bincount(labels, minlength=n_classes).max() / len(labels)),
            "confusion": confusion.tolist()}


def train_feature_network(spec: dict[str, Any], positron_h5: str | Path, out_dir: str | Path,
                          overwrite: bool = False) -> dict[str, Any]:
    """Train the network, write ``final.pt`` and ``metrics.json``; returns the metrics."""
    positron_h5, out_dir = Path(positron_h5), Path(out_dir)
    final, report = out_dir / "final.pt", out_dir / "metrics.json"
    for path in (final, report):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    s = FeatureNetSettings.from_section(spec["evaluate"]["feature_network"])
    data = labelled_images(positron_h5)
    train = data["split"] == "train"
    held = ~train
    if train.sum() < 2 or held.sum() < 1:
        raise ValueError(f"{positron_h5}: the feature network needs training images and "
                         f"held-out (val or test) images; found {train.sum()} and {held.sum()}")
    n_classes = len(data["classes"])
    arch = {"n_classes": n_classes, "embed_dim": s.embed_dim}
    torch.manual_seed(s.seed)  # batch-norm and nothing else draw from it
    net = FeatureCNN(n_classes, embed_dim=s.embed_dim)
    gen = torch.Generator().manual_seed(s.seed)
    init_weights(net, gen)
    net = net.to(memory_format=torch.channels_last)
    x = torch.from_numpy(data["images"][train])[:, None]
    y = torch.from_numpy(data["labels"][train])
    counts = torch.bincount(y, minlength=n_classes).double()
    weight = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), 0.0)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    history = []
    for epoch in range(s.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), s.batch_size):
            batch = order[start : start + s.batch_size]
            logits = net(random_dihedral(x[batch], gen))
            loss = F.cross_entropy(logits, y[batch], weight=weight.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        history.append({"epoch": epoch + 1, "loss": total / len(x)})
    net.eval()
    with torch.no_grad():
        metrics = {"held_out": _accuracy(net, data["images"][held], data["labels"][held],
                                         n_classes),
                   "train": _accuracy(net, data["images"][train], data["labels"][train],
                                      n_classes)}
    metrics.update(classes=data["classes"], n_train=int(train.sum()), n_held_out=int(held.sum()),
                   chance=1.0 / n_classes, history=history)
    provenance = provenance_attrs(spec, params={"arch": arch}, seed=s.seed)
    save_checkpoint(final, "final", {"method": NAME, "settings": {"method": spec["evaluate"][
        "feature_network"]}, "arch": arch, "step": s.epochs * int(np.ceil(len(x) / s.batch_size)),
        "nets": net.state_dict(), "provenance": provenance, "classes": data["classes"]})
    with atomic_output(report, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2))
    log.info("feature network: held-out accuracy %.3f (balanced %.3f; majority class %.3f, "
             "%d classes)", metrics["held_out"]["accuracy"],
             metrics["held_out"]["balanced_accuracy"], metrics["held_out"]["majority_rate"],
             n_classes)
    return metrics


def load_feature_network(path: str | Path) -> FeatureCNN:
    """The trained network of ``final.pt``, in evaluation mode."""
    state = load_checkpoint(path, "final", NAME)
    net = FeatureCNN(int(state["arch"]["n_classes"]), embed_dim=int(state["arch"]["embed_dim"]))
    try:
        net.load_state_dict(state["nets"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the feature network "
                         f"({str(exc).splitlines()[0]})") from None
    return net.eval()


@torch.no_grad()
def embed(net: FeatureCNN, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Feature vectors (N, embed_dim) of images (N, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    return torch.cat([net.embed(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
                     ).numpy().astype(np.float64)
