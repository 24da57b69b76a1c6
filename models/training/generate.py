"""The ``generate`` stage: ``results/{dataset}/generated/{method}.h5``.

Content (DESIGN.md's generated-set contract):

* ``images`` (N, H, W) float32 in [-1, 1], sampled in evaluation mode from ``final.pt``
  (the EMA weights when EMA was on), inputs drawn from ``generate.seed`` (for the attention
  GAN: CT images of the training split of ``ct.h5`` in a seeded order, cycled when N is
  larger, each with its own reparameterisation noise);
* ``labels`` (N,) int64 and ``defect_class`` (N,) str, for conditional and mask-to-image
  methods: the class each image was generated to (``generate.classes``: the classes to make,
  equally many of each; by default drawn with the training split's class frequencies);
* ``masks`` (N, H, W) uint8, for mask-to-image methods: the defect mask of each image;
* ``scale`` (N,) float32: each generated image gets the scale of a training image drawn at
  random (seeded), so ``models.data.positron_dataset.to_activity(images, scale)`` maps it to
  activity exactly as for ``positron.h5`` (with ``normalisation: dataset`` every scale is the
  set's one value);
* attributes: ``normalisation``, ``size_px`` and ``orientation`` copied from ``positron.h5``,
  ``method``, ``seed``, ``checkpoint_sha256`` (of ``final.pt``), ``steps``, provenance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from models.data.image_set import open_image_set
from models.data.labels import class_names
from models.data.loaders import string_column
from models.methods import method_class
from models.methods.base import Method
from models.methods.conditional import conditional_names
from models.training.checkpoint import file_sha256, load_checkpoint
from models.training.loop import sample_images
from models.training.stage import SPLIT, sampling_sources
from pipeline.fileio import atomic_output, decoded_attrs, provenance_attrs
from recon.device import resolve_device

log = logging.getLogger(__name__)

#: Attributes of positron.h5 a generated set carries over unchanged.
COPIED_ATTRS = ("normalisation", "size_px", "orientation", "dataset")


def training_scales(positron_h5: Path, acquisition: str | None) -> tuple[np.ndarray, dict]:
    """``scale`` of the training images (of one acquisition when given) and the file's
    attributes."""
    with open_image_set(positron_h5, "positron image set") as f:
        for name in ("scale", "split", "acquisition"):
            if name not in f:
                raise ValueError(f"{positron_h5}: missing dataset {name} (not a positron.h5)")
        keep = string_column(f["split"]) == SPLIT
        if acquisition:
            keep &= string_column(f["acquisition"]) == acquisition
        scales = f["scale"][...][keep].astype(np.float64)
        attrs = decoded_attrs(f)
    if len(scales) == 0 or not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"{positron_h5}: no positive, finite scale among the training images")
    return scales, attrs


def restore_final(model_pt: str | Path, expected: str) -> tuple[Method, dict[str, Any]]:
    """The trained method of a ``final.pt`` (its checkpoint must be of method ``expected``)
    and the checkpoint itself; weights that do not fit the architecture are refused with the
    file's name."""
    state = load_checkpoint(model_pt, "final", expected)
    cls = method_class(state["method"])
    settings = cls.settings_class.from_section(state["settings"]["method"])
    try:
        return cls.restore(settings, state["arch"], state["nets"]), state
    except RuntimeError as exc:
        raise ValueError(f"{model_pt}: weights do not fit the {state['method']} architecture "
                         f"({str(exc).splitlines()[0]})") from None


def run_generate(spec: dict[str, Any], model_pt: str | Path, positron_h5: str | Path,
                 ct_h5: str | Path | None, out_h5: str | Path,
                 overwrite: bool = False) -> dict[str, Any]:
    """Sample ``generate.n_images`` images from ``model_pt`` into ``out_h5``."""
    model_pt, positron_h5, out_h5 = Path(model_pt), Path(positron_h5), Path(out_h5)
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    cfg = spec["generate"]
    method, state = restore_final(model_pt, spec["method"])
    cls = type(method)
    scales, attrs = training_scales(positron_h5, spec["acquisition"])
    classes = cfg.get("classes") or None
    if classes and not cls.conditional:
        raise ValueError(f"config key generate.classes is set, but {state['method']} cannot be "
                         "conditioned on a class (conditional methods: "
                         f"{', '.join(conditional_names())}); unset it or train one of those")
    sources = sampling_sources(cls, positron_h5, ct_h5, spec["acquisition"])
    device = resolve_device(spec["device"])
    method.to(device)
    n, seed = int(cfg["n_images"]), int(cfg["seed"])
    rng = torch.Generator().manual_seed(seed)
    drawn = (method.sampling_inputs(n, sources, rng, classes) if cls.conditional
             else method.sampling_inputs(n, sources, rng))
    inputs = {k: v.to(device) for k, v in drawn.items()}
    images = sample_images(method, inputs, batch_size=int(cfg["batch_size"]))[:, 0].numpy()
    if not np.all(np.isfinite(images)):
        raise RuntimeError(f"{model_pt}: the generator produced NaN or infinite values")
    size = images.shape[-1]
    if int(attrs.get("size_px", size)) != size:
        raise ValueError(f"{model_pt} generates {size} px images but {positron_h5} holds "
                         f"{attrs.get('size_px')} px images")
    scale = np.random.default_rng(seed).choice(scales, size=n, replace=True).astype(np.float32)
    out_attrs = provenance_attrs(spec, params={"n_images": n, "method": state["method"]},
                                 seed=seed)
    out_attrs.update({k: attrs[k] for k in COPIED_ATTRS if k in attrs})
    out_attrs.update(method=state["method"], checkpoint=str(model_pt),
                     checkpoint_sha256=file_sha256(model_pt), steps=int(state["step"]),
                     source=str(positron_h5), acquisition=spec["acquisition"] or "",
                     scale_note="scale of a training image drawn at random (seeded)",
                     model_settings=json.dumps(state["settings"], sort_keys=True))
    with atomic_output(out_h5, overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("images", data=images.astype(np.float32), chunks=(1, size, size),
                         compression="gzip", compression_opts=4, shuffle=True)
        f.create_dataset("scale", data=scale)
        if "label" in drawn:  # the class each image was generated to (its label)
            labels = drawn["label"].cpu().numpy().astype(np.int64)
            f.create_dataset("labels", data=labels)
            f.create_dataset("defect_class", data=np.asarray(class_names(labels), dtype=object),
                             dtype=h5py.string_dtype())
        if "mask" in drawn:  # the defect mask each image was generated from
            f.create_dataset("masks", data=(drawn["mask"][:, 0].cpu().numpy() > 0).astype(
                np.uint8), chunks=(1, size, size), compression="gzip")
        for key, value in out_attrs.items():
            f.attrs[key] = value
    log.info("%s: %d images from %s (step %d)", out_h5, n, model_pt, state["step"])
    return {"images": n, "out": str(out_h5)}
