"""The ``pretrain_vae`` and ``train`` stages: inputs checked, method built, loop run,
outputs written.

Both write into one folder (``results/{dataset}/models/{name}/``):

* ``final.pt`` (:mod:`models.training.checkpoint`), ``history.csv`` and ``losses.png``
  (:mod:`models.training.history`), ``checkpoint.pt`` and ``samples/step_*.png`` (the loop);
* ``train``: ``samples.png``, the final samples (from the run's fixed inputs) beside as many
  real training images;
* ``pretrain_vae``: ``reconstructions.png``, held-out CT images, their reconstructions
  (decoded posterior means) and decoded prior samples.

Every input is checked before any training (existence, kind, image size, values), and an
existing ``final.pt`` is not replaced without ``overwrite``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.loaders import CTImages, PositronImages, PositronPairs
from models.methods import method_class
from models.methods.base import Method, StageInputs
from models.methods.vae import VAE, VAESettings
from models.nets.init import check_image_size
from models.training.checkpoint import compat_key, file_sha256, save_checkpoint
from models.training.grids import write_panels
from models.training.history import plot_history, write_history
from models.training.loop import Trainer, TrainResult, loop_record, sample_images
from models.training.settings import RESUMABLE_KEYS, LoopSettings
from pipeline.fileio import provenance_attrs
from recon.device import resolve_device

log = logging.getLogger(__name__)

SPLIT = "train"


def _checked_images(dataset, path: Path, what: str) -> Any:
    """A split of an image set that is non-empty, square, of a supported size and finite."""
    if len(dataset) == 0:
        raise ValueError(f"{path}: no {what} images in the {SPLIT} split")
    first = dataset.batch(np.arange(min(len(dataset), 256)))
    size = first.shape[-1]
    if first.shape[-2] != size:
        raise ValueError(f"{path}: images are {tuple(first.shape[-2:])}, not square")
    check_image_size(size, f"{path} ({what} images)")
    memory = getattr(dataset, "_memory", None)
    values = memory if memory is not None else first
    if not torch.isfinite(values).all() or values.abs().max() > 1.0 + 1e-6:
        raise ValueError(f"{path}: {what} images hold NaN, infinite or out-of-range values "
                         "(expected [-1, 1]); rebuild the image set")
    return dataset


def positron_images(path: Path, acquisition: str | None, with_masks: bool = False
                    ) -> PositronImages:
    """Training-split positron images (of one acquisition when given), checked."""
    data = PositronImages(path, SPLIT, acquisition=acquisition, with_masks=with_masks)
    which = f"positron ({acquisition})" if acquisition else "positron"
    return _checked_images(data, path, which)


def positron_pairs(path: Path) -> PositronPairs:
    """Training-split (low-count, reference) pairs, checked."""
    pairs = PositronPairs(path, SPLIT)
    if len(pairs) == 0:
        raise ValueError(f"{path}: no (low-count, reference) pairs in the {SPLIT} split; "
                         "enhancement needs datasets with both positron_images.low_count and "
                         "positron_images.reference acquisitions")
    _checked_images(PositronImages(path, SPLIT), path, "positron")
    return pairs


def ct_images(path: Path) -> CTImages:
    """Training-split CT images, checked."""
    return _checked_images(CTImages(path, SPLIT), path, "CT")


def sampling_sources(cls: type[Method], positron_h5: Path, ct_h5: Path | None,
                     acquisition: str | None) -> dict[str, Any]:
    """The image sets a trained method samples from: CT queries (attention GAN), training
    masks with their classes (mask-to-image), training pairs (enhancement)."""
    sources: dict[str, Any] = {}
    if "query" in cls.sources:
        if ct_h5 is None:
            raise ValueError(f"method {cls.name} samples from CT queries: give --ct")
        sources["query"] = ct_images(Path(ct_h5))
    if cls.data == "masked":
        sources["real"] = positron_images(Path(positron_h5), acquisition, with_masks=True)
    elif cls.data == "paired":
        sources["real"] = positron_pairs(Path(positron_h5))
    return sources


def _with_optimiser(loop: LoopSettings, section: dict[str, Any]) -> LoopSettings:
    """The loop settings with a method's own Adam learning rate and betas, where its section
    sets them (WGAN-GP's 1e-4 and (0, 0.9), the VAE's 1e-3 and (0.9, 0.999))."""
    changes = {}
    if section.get("lr") is not None:
        changes["lr"] = float(section["lr"])
    if section.get("betas") is not None:
        changes["betas"] = (float(section["betas"][0]), float(section["betas"][1]))
    return replace(loop, **changes)


def _refuse_existing(out_dir: Path, names: tuple[str, ...], overwrite: bool) -> None:
    for name in names:
        path = out_dir / name
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def _require(files: dict[str, Path | None], roles: tuple[str, ...], method: str
             ) -> dict[str, Path]:
    """The input files a method needs, each existing (checked before any work)."""
    out = {}
    for role in roles:
        path = files.get(role)
        if path is None:
            raise ValueError(f"method {method} needs the {role} file (--{role})")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{role} file {path} does not exist (run the rule that "
                                    "makes it first)")
        out[role] = Path(path)
    return out


def _final_state(trainer: Trainer, result: TrainResult) -> dict[str, torch.Tensor]:
    """Every network's state, the sampling networks' from their EMA copies when enabled."""
    state = dict(trainer.method.nets.state_dict())
    for name, module in result.sampler.items():
        for key, value in module.state_dict().items():
            state[f"{name}.{key}"] = value
    return state


def _run(method: Method, sources: dict[str, Any], loop: LoopSettings, method_section: dict,
         files: dict[str, Path], out_dir: Path, spec: dict, title: str
         ) -> tuple[Trainer, TrainResult]:
    """Train ``method`` in ``out_dir`` and write final.pt, history.csv and losses.png."""
    record = {"loop": loop_record(loop), "method": method_section}
    frozen = {"loop": {k: v for k, v in record["loop"].items() if k not in RESUMABLE_KEYS},
              "method": method_section}
    fingerprints = {role: file_sha256(path) for role, path in sorted(files.items())}
    compat = compat_key(method.name, frozen, method.arch, fingerprints)
    device = resolve_device(loop.device)
    trainer = Trainer(method, sources, loop, out_dir, compat, record, device, title)
    result = trainer.train()
    write_history(out_dir / "history.csv", result.history)
    plot_history(out_dir / "losses.png", result.history, f"{title}: training history")
    provenance = provenance_attrs(spec, params={"method": method.name, "steps": result.step,
                                                "inputs": fingerprints}, seed=loop.seed)
    save_checkpoint(out_dir / "final.pt", "final", {
        "method": method.name, "settings": record, "arch": method.arch, "step": result.step,
        "nets": _final_state(trainer, result), "provenance": provenance})
    last = result.history[-1] if result.history else {}
    log.info("%s: %d steps in %.0f s (%.1f images/s at the end); %s", method.name, result.step,
             trainer.seconds, last.get("images_per_s", float("nan")), out_dir / "final.pt")
    return trainer, result


def run_pretrain_vae(spec: dict[str, Any], ct_h5: str | Path, out_dir: str | Path,
                     overwrite: bool = False) -> dict[str, Any]:
    """Pretrain the CT VAE (sec. 3.2) on the training split of ``ct.h5``."""
    out_dir, ct_h5 = Path(out_dir), Path(ct_h5)
    _refuse_existing(out_dir, ("final.pt",), overwrite)
    section = spec["pretrain_vae"]
    settings = VAESettings.from_section(section)
    loop = LoopSettings.from_section(section, spec["device"])
    ct = ct_images(_require({"ct": ct_h5}, ("ct",), "vae")["ct"])
    size = int(ct.batch([0]).shape[-1])
    method = VAE.build(settings, StageInputs({"real": ct}, size, {"ct": ct_h5}),
                       torch.Generator().manual_seed(loop.seed))
    trainer, result = _run(method, {"real": ct}, loop, dict(section), {"ct": ct_h5}, out_dir,
                           spec, "CT VAE (pretraining)")
    held_out = CTImages(ct_h5, "val")
    shown = held_out if len(held_out) else ct
    pick = np.arange(min(16, len(shown)))
    originals = shown.batch(pick).to(trainer.device)
    with torch.no_grad():
        method.nets.eval()
        recon = method.reconstruct(originals).cpu()
        method.nets.train()
    prior = sample_images(method, {"z": result.fixed_inputs["z"][:16]}, result.sampler)
    write_panels(out_dir / "reconstructions.png", [
        ("CT images (val split)" if len(held_out) else "CT images (train split)",
         originals[:, 0].cpu().numpy()),
        ("reconstructions (posterior means)", recon[:, 0].numpy()),
        ("decoded prior samples z ~ N(0, I)", prior[:, 0].numpy())],
        f"CT VAE after {result.step} steps", cmap="gray", origin="upper")
    return {"steps": result.step, "final": str(out_dir / "final.pt")}


def run_train(spec: dict[str, Any], files: dict[str, Path | None], out_dir: str | Path,
              overwrite: bool = False) -> dict[str, Any]:
    """Train the method ``spec["method"]`` on the training split and write its folder."""
    out_dir = Path(out_dir)
    name = spec["method"]
    cls = method_class(name)
    _refuse_existing(out_dir, ("final.pt",), overwrite)
    section = dict(spec["method_settings"])
    settings = cls.settings_class.from_section(section)
    loop = _with_optimiser(LoopSettings.from_section(spec["train"], spec["device"]), section)
    real_domain = getattr(settings, "real_domain", "positron")
    uses_ct = "query" in cls.sources or real_domain == "ct"
    roles = ("positron", *(("ct",) if uses_ct else ()),
             *(r for r in cls.needs if r not in ("positron", "ct")))
    if real_domain == "ct" and (cls.conditional or cls.data != "images"):
        raise ValueError(f"config key train.{name}.real_domain: {name} learns labelled positron "
                         "images; real_domain ct has no defect labels or masks")
    paths = _require(files, roles, name)
    positron = positron_images(paths["positron"], spec["acquisition"], cls.data == "masked")
    ct = ct_images(paths["ct"]) if uses_ct else None
    real = positron_pairs(paths["positron"]) if cls.data == "paired" else positron
    available = {"real": ct if real_domain == "ct" else real, "query": ct}
    sources = {k: available[k] for k in cls.sources}
    size = int(sources["real"].batch([0]).shape[-1])
    method = cls.build(settings, StageInputs(sources, size, paths),
                       torch.Generator().manual_seed(loop.seed))
    trainer, result = _run(method, sources, loop, section, paths, out_dir, spec, name)
    generated = sample_images(method, result.fixed_inputs, result.sampler)[:, 0].numpy()
    pick = np.random.default_rng(loop.seed).permutation(len(positron))[: len(generated)]
    which = f", {spec['acquisition']}" if spec["acquisition"] else ""
    write_panels(out_dir / "samples.png", [
        (f"generated ({name}, step {result.step})", generated),
        (f"real positron images (train split{which})", positron.batch(np.sort(pick))[:, 0]
         .numpy())], f"{name} on {spec['dataset']}")
    return {"steps": result.step, "final": str(out_dir / "final.pt")}
