"""Positron feature memory: ``models/features.h5`` (``positron_features`` rule).

The seed paper's memory module (sec. 3.3) holds feature vectors of the scarce positron
images. They are computed here, deterministically, from the **training split** of
``positron.h5`` only (of one acquisition when ``acquisition`` is given, the images the
generator is asked to produce):

1. PCANet (:mod:`models.nets.pcanet`): two learned filter banks, hashing, block histograms;
   tens to hundreds of thousands of counts per image;
2. square root of the counts (the Hellinger map, which evens out the heavy-tailed bins),
   then PCA (eq. 4-5, :mod:`models.nets.pca`) to ``memory_dim`` numbers per image;
3. memory slots: with as many training images as ``memory_slots``, the slots are the
   images' feature vectors; with more, the slots are the k-means centres (scikit-learn,
   k-means++ with ``n_init`` 10, seeded) of the feature vectors in PCA space, and each slot's
   **representative image** is the training image nearest its centre (the positron image
   the attention perceptual loss compares with when a generated image attends that slot).
   Fewer training images than slots is an error.

File content: ``stage1_filters`` (L1, k, k), ``stage2_filters`` (L2, k, k), ``pca_mean``
(D,), ``pca_components`` (memory_dim, D), ``explained_variance`` and
``explained_variance_ratio`` (memory_dim,), ``features`` (N, memory_dim) of every training
image, ``image_rows`` (N,) their rows in ``positron.h5``, ``slots`` (S, memory_dim),
``slot_rows`` (S,) the representative images' rows, ``slot_of_image`` (N,); attributes
``raw_feature_dim``, ``slot_mode`` (``images`` or ``kmeans``), the source file and its
``config_sha256`` / ``created_utc``, and provenance.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from models.data.image_set import open_image_set
from models.data.loaders import PositronImages
from models.nets.pca import fit_pca
from models.nets.pcanet import PCANet
from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5, provenance_attrs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSettings:
    """The ``positron_features`` config section, parsed (see ``config/schema.yaml``)."""

    patch_px: int
    filters: tuple[int, int]
    block_px: int
    block_overlap: float
    sqrt: bool
    memory_dim: int
    memory_slots: int
    seed: int
    acquisition: str | None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FeatureSettings:
        s = spec["positron_features"]
        return cls(patch_px=int(s["patch_px"]), filters=(int(s["filters"][0]),
                                                         int(s["filters"][1])),
                   block_px=int(s["block_px"]), block_overlap=float(s["block_overlap"]),
                   sqrt=bool(s["sqrt"]), memory_dim=int(s["memory_dim"]),
                   memory_slots=int(s["memory_slots"]), seed=int(s["seed"]),
                   acquisition=spec.get("acquisition"))


@dataclass(frozen=True)
class PositronFeatures:
    """What ``features.h5`` holds, as arrays (see the module docstring)."""

    features: np.ndarray
    image_rows: np.ndarray
    slots: np.ndarray
    slot_rows: np.ndarray
    explained_variance_ratio: np.ndarray
    attrs: dict[str, Any]


def training_images(positron_h5: Path, acquisition: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Training-split images (N, H, W) and their rows in ``positron.h5``."""
    data = PositronImages(positron_h5, "train", acquisition=acquisition)
    rows = data.rows
    images = data.batch(np.arange(len(rows)))[:, 0].numpy() if len(rows) else np.zeros((0, 1, 1))
    if not np.all(np.isfinite(images)) or (images.size and np.abs(images).max() > 1.0 + 1e-6):
        raise ValueError(f"{positron_h5}: images hold NaN, infinite or out-of-range values "
                         "(expected [-1, 1]); rebuild the positron image set")
    return images, rows


def check_enough_images(n_images: int, settings: FeatureSettings, positron_h5: Path) -> None:
    """The memory needs at least ``memory_slots`` training images and ``memory_dim + 1``
    (PCA of m centred samples has at most m - 1 directions)."""
    which = f"of acquisition {settings.acquisition!r} " if settings.acquisition else ""
    need = max(settings.memory_slots, settings.memory_dim + 1)
    if n_images < need:
        raise ValueError(
            f"{positron_h5}: {n_images} training images {which}but the memory needs at least "
            f"{need} (positron_features.memory_slots = {settings.memory_slots}, "
            f"positron_features.memory_dim = {settings.memory_dim}); lower them or add phantoms")


def memory_slots(features: np.ndarray, n_slots: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Slots (S, d), the index of each slot's representative image, the slot of every image,
    and the mode (``images`` or ``kmeans``)."""
    n = len(features)
    if n == n_slots:
        return features.copy(), np.arange(n), np.arange(n), "images"
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_slots, n_init=10, random_state=seed).fit(features)
    centres = km.cluster_centers_
    distance = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # (N, S)
    return centres, np.argmin(distance, axis=0), km.labels_.astype(np.int64), "kmeans"


def build_positron_features(spec: dict[str, Any], positron_h5: str | Path, out_h5: str | Path,
                            overwrite: bool = False) -> dict[str, Any]:
    """Fit PCANet and PCA on the training images and write ``features.h5``; returns a
    summary (images, raw and reduced dimensions, explained variance)."""
    positron_h5, out_h5 = Path(positron_h5), Path(out_h5)
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    settings = FeatureSettings.from_spec(spec)
    images, rows = training_images(positron_h5, settings.acquisition)
    check_enough_images(len(images), settings, positron_h5)
    with open_image_set(positron_h5, "positron image set") as f:
        source = decoded_attrs(f)
    net = PCANet.fit(images, settings.patch_px, settings.filters, settings.block_px,
                     settings.block_overlap)
    raw = net.features(images).astype(np.float64)
    if settings.sqrt:
        raw = np.sqrt(raw)
    basis = fit_pca(raw, settings.memory_dim)
    coords = basis.project(raw)
    slots, slot_index, slot_of_image, mode = memory_slots(coords, settings.memory_slots,
                                                          settings.seed)
    params = {"raw_feature_dim": raw.shape[1], "n_images": len(images), "slot_mode": mode}
    attrs = provenance_attrs(spec, params=params, seed=settings.seed)
    attrs.update(raw_feature_dim=raw.shape[1], slot_mode=mode, source=str(positron_h5),
                 source_config_sha256=str(source.get("config_sha256", "")),
                 source_created_utc=str(source.get("created_utc", "")),
                 acquisition=settings.acquisition or "", settings=json.dumps(
                     spec["positron_features"], sort_keys=True))
    with atomic_output(out_h5, overwrite) as tmp, h5py.File(tmp, "w") as f:
        f["stage1_filters"] = net.stage1.numpy()
        f["stage2_filters"] = net.stage2.numpy()
        f["pca_mean"] = basis.mean.astype(np.float32)
        f["pca_components"] = basis.components.astype(np.float32)
        f["explained_variance"] = basis.explained_variance
        f["explained_variance_ratio"] = basis.explained_variance_ratio
        f["features"] = coords.astype(np.float32)
        f["image_rows"] = rows.astype(np.int64)
        f["slots"] = slots.astype(np.float32)
        f["slot_rows"] = rows[slot_index].astype(np.int64)
        f["slot_of_image"] = slot_of_image
        for key, value in attrs.items():
            f.attrs[key] = value
    kept = float(basis.explained_variance_ratio.sum())
    log.info("%s: %d training images, %d raw features -> %d (%.1f %% of the variance), "
             "%d slots (%s)", out_h5, len(images), raw.shape[1], settings.memory_dim,
             100 * kept, settings.memory_slots, mode)
    return {"images": len(images), "raw_feature_dim": raw.shape[1],
            "explained_variance_kept": kept, "slot_mode": mode}


def read_positron_features(path: str | Path) -> PositronFeatures:
    """Read ``features.h5``; a missing dataset or inconsistent shapes give one error naming
    the file and the field."""
    path = Path(path)
    with open_hdf5(path, "positron feature file") as f:
        for name in ("features", "image_rows", "slots", "slot_rows", "explained_variance_ratio"):
            if name not in f:
                raise ValueError(f"{path}: missing dataset {name} (not a features.h5; run the "
                                 "positron_features rule)")
        out = PositronFeatures(features=f["features"][...], image_rows=f["image_rows"][...],
                               slots=f["slots"][...], slot_rows=f["slot_rows"][...],
                               explained_variance_ratio=f["explained_variance_ratio"][...],
                               attrs=decoded_attrs(f))
    if out.slots.ndim != 2 or out.slots.shape[1] != out.features.shape[1] or len(
            out.slot_rows) != len(out.slots):
        raise ValueError(f"{path}: slots {out.slots.shape}, slot_rows {out.slot_rows.shape} and "
                         f"features {out.features.shape} do not agree")
    if not np.all(np.isfinite(out.slots)):
        raise ValueError(f"{path}: slots hold NaN or infinite values")
    return out
