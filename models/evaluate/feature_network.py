"""Training and use of the domain feature network (``feature_network`` rule,
``results/{dataset}/models/feature_net/``), and the untrained second feature space.

The network (:class:`models.nets.feature_cnn.FeatureCNN`) learns, on the **training split**'s
images of ``train.acquisition`` (the images Table 1 compares), to tell the defect classes
apart (:data:`models.data.labels.DEFECT_CLASSES`: no defect, or the type of the defect the
slice shows): so its features carry what the table is about, the defects, rather than the
count level that separates acquisitions. Cross-entropy weighted by inverse class frequency
(defects are in a minority of slices), Adam, random flips and quarter turns, seeded. Its
held-out (val and test) accuracy against the majority-class rate and its **defect-presence
AUC** (1 - the probability of ``none``, scikit-learn's ``roc_auc_score``) go to
``metrics.json``; below :data:`INFORMATIVE_AUC` Table 1 states that the features do not see
defects and ranks nothing on them.

:func:`random_feature_network` is the second, independent feature space: the same
architecture with torch's default (Kaiming-uniform) initialisation from a fixed seed and no
training, so nothing the DAG learns can move it. A ranking that holds in one space and flips
in the other is a finding the table states.
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
from sklearn.metrics import roc_auc_score

from models.data.image_set import check_images, open_image_set
from models.data.labels import DEFECT_CLASSES, image_classes
from models.data.loaders import string_column
from models.nets.feature_cnn import FeatureCNN
from models.nets.init import init_weights
from models.training.augment import random_dihedral
from models.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.fileio import atomic_output, provenance_attrs

log = logging.getLogger(__name__)

NAME = "feature_net"
#: Held-out defect-presence AUC below which the domain features are called uninformative.
INFORMATIVE_AUC = 0.8
#: Seed of the untrained feature space (fixed: no config can tune it toward a method).
RANDOM_FEATURES_SEED = 20260


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


def labelled_images(positron_h5: Path, acquisition: str | None) -> dict[str, Any]:
    """The images of ``acquisition`` (every image when None) of ``positron.h5`` with their
    defect class and split."""
    with open_image_set(positron_h5, "positron image set") as f:
        for name in ("images", "split", "acquisition"):
            if name not in f:
                raise ValueError(f"{positron_h5}: missing dataset {name} (not a positron.h5)")
        keep = (string_column(f["acquisition"]) == acquisition if acquisition is not None
                else np.ones(len(f["images"]), bool))
        images = f["images"][...][keep]
        check_images(positron_h5, images)  # float, finite, in [-1, 1]
        split = string_column(f["split"])[keep]
    if not keep.any():
        raise ValueError(f"{positron_h5}: no {acquisition} images (train.acquisition)")
    return {"images": images.astype(np.float32), "labels": image_classes(positron_h5)[keep],
            "split": split, "classes": list(DEFECT_CLASSES)}


def _accuracy(net: FeatureCNN, images: np.ndarray, labels: np.ndarray, n_classes: int
              ) -> dict[str, Any]:
    logits = torch.cat([net(torch.from_numpy(images[i : i + 256])[:, None])
                        for i in range(0, len(images), 256)])
    predicted = logits.argmax(1).numpy()
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    present = confusion.sum(1) > 0
    recall = np.diag(confusion)[present] / confusion.sum(1)[present]
    present_defect = labels != 0
    p_defect = 1.0 - torch.softmax(logits, 1)[:, 0].numpy()
    auc = (float(roc_auc_score(present_defect, p_defect))
           if 0 < present_defect.sum() < len(labels) else float("nan"))
    return {"accuracy": float(np.mean(predicted == labels)),
            "balanced_accuracy": float(recall.mean()), "presence_auc": auc,
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
    data = labelled_images(positron_h5, spec.get("acquisition"))
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
             "%d classes), defect-presence AUC %.3f", metrics["held_out"]["accuracy"],
             metrics["held_out"]["balanced_accuracy"], metrics["held_out"]["majority_rate"],
             n_classes, metrics["held_out"]["presence_auc"])
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


def random_feature_network(embed_dim: int) -> FeatureCNN:
    """The untrained feature space: :class:`FeatureCNN` with torch's default initialisation
    drawn from :data:`RANDOM_FEATURES_SEED` (the global generator is left as it was), in
    evaluation mode (batch norm then passes its input through)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_FEATURES_SEED)
        net = FeatureCNN(len(DEFECT_CLASSES), embed_dim=embed_dim)
    return net.eval()


@torch.no_grad()
def embed(net: FeatureCNN, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Feature vectors (N, embed_dim) of images (N, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    return torch.cat([net.embed(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
                     ).numpy().astype(np.float64)
