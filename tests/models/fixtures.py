"""Phantom and reconstruction files written directly with h5py and the recon writer: small,
known content, no simulation."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from models.data.ct_dataset import build_ct_dataset
from models.data.positron_dataset import build_positron_dataset
from models.data.positron_features import build_positron_features
from models.training.stage import run_pretrain_vae
from pipeline.config import load_config, validate_config
from pipeline.specs import (
    ct_dataset_spec,
    phantom_names,
    positron_dataset_spec,
    positron_features_spec,
    pretrain_vae_spec,
)
from recon.grid import ImageGrid
from recon.image_io import write_recon

#: Phantom grid (z, y, x): 12 slices of 2 mm (odd z), 16 x 16 pixels of 2 mm.
PHANTOM_SHAPE = (12, 16, 16)
PHANTOM_VOXEL = (2.0, 2.0, 2.0)
PHANTOM_ORIGIN = tuple(-(np.array(PHANTOM_SHAPE) - 1) / 2 * np.array(PHANTOM_VOXEL))
#: Reconstruction grid: rebinning planes at even z inside the phantom, same transaxial box.
RECON_GRID = ImageGrid((11, 16, 16), (2.0, 2.0, 2.0), (-10.0, -15.0, -15.0))


def recon_grid(slices: int = PHANTOM_SHAPE[0]) -> ImageGrid:
    """The reconstruction grid of a fixture phantom of ``slices`` slices (RECON_GRID for 12)."""
    return ImageGrid((slices - 1, 16, 16), (2.0, 2.0, 2.0), (-(slices - 2.0), -15.0, -15.0))


def write_phantom_file(path: Path, defect_planes: tuple[int, int] = (4, 6),
                       slices: int = PHANTOM_SHAPE[0]) -> Path:
    """Activity in a disk over phantom slices 1..slices-2 (the first and last are end caps); a
    'hole' defect (label 1) at pixels (y 3-4, x 8-9) in phantom slices ``defect_planes``."""
    shape = (slices, *PHANTOM_SHAPE[1:])
    y, x = np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")
    disk = (x**2 + y**2 <= 36).astype(np.float32)
    activity = np.zeros(shape, np.float32)
    activity[1:-1] = disk
    activity /= activity.sum()
    labels = np.zeros(shape, np.uint8)
    labels[defect_planes[0] : defect_planes[1], 3:5, 8:10] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["material"] = np.zeros(shape, np.uint8)
        f["activity"] = activity
        f["mu511"] = np.zeros(shape, np.float32)
        f["labels"] = labels
        f.attrs["voxel_size_mm"] = np.array(PHANTOM_VOXEL)
        f.attrs["origin_mm"] = -(np.array(shape) - 1) / 2 * np.array(PHANTOM_VOXEL)
        f.attrs["materials"] = json.dumps({"0": {"name": "air"}})
        f.attrs["defects"] = json.dumps([{"label": 1, "type": "hole"}])
        f.attrs["phantom"] = json.dumps({})
    return path


def write_recon_file(path: Path, image: np.ndarray, duration_s: float,
                     grid: ImageGrid = RECON_GRID) -> Path:
    """A reconstruction file holding ``image``; plane counts = 100 x plane number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = 100.0 * np.arange(grid.shape[0])
    return write_recon(path, image.astype(np.float32), grid, [0.0],
                       {"duration_s": duration_s, "activity_bq": 1.0}, counts)


def make_results(root: Path, phantoms: list[str], rng: np.random.Generator,
                 durations=(("short", 0.1), ("reference", 10.0)),
                 slices: int = PHANTOM_SHAPE[0]) -> dict:
    """results/{dataset} layout with phantom and reconstruction files; returns the images."""
    images = {}
    grid = recon_grid(slices)
    for name in phantoms:
        write_phantom_file(root / "phantoms" / f"{name}.h5", slices=slices)
        for acq, duration in durations:
            image = rng.gamma(2.0, 1.0, grid.shape) * duration
            write_recon_file(root / "recon" / name / f"{acq}.h5", image, duration, grid)
            images[name, acq] = image
    return images


def tiny_generative_config(**train) -> dict:
    """The default config shrunk for the generative stage at 16 px: 8 phantoms, small
    memory, a few steps of everything; ``train`` overrides keys of the ``train`` section."""
    cfg = load_config()
    cfg["datasets"]["tubes"]["n_phantoms"] = 8
    cfg["positron_images"]["size_px"] = 16
    cfg["ct_images"].update(size_px=16, n_images=24)
    cfg["positron_features"].update(memory_dim=4, memory_slots=6, block_px=8)
    cfg["pretrain_vae"].update(steps=3, sample_every=3, checkpoint_every=3, base_channels=4,
                               latent_dim=8, batch_size=8)
    cfg["train"].update(steps=6, sample_every=3, checkpoint_every=2, log_every=2, batch_size=8,
                        n_samples=8, ema_decay=0.9, methods=["attention_gan"])
    cfg["train"]["attention_gan"]["generator"].update(base_channels=8, growth_rate=4)
    cfg["train"]["attention_gan"]["discriminator"].update(base_channels=4)
    cfg["train"].update(train)
    cfg["generate"].update(n_images=20, batch_size=8)
    cfg["evaluate"]["msssim"].update(scales=1, window_px=7, pairs=50)
    cfg["evaluate"].update(kid_subset_size=8, kid_subsets=10, walk_steps=4)
    cfg["evaluate"]["feature_network"].update(epochs=2)
    return validate_config(cfg)


def make_generative_inputs(root: Path, cfg: dict) -> dict[str, Path]:
    """positron.h5, ct.h5, features.h5 and the CT VAE's final.pt of ``cfg`` under ``root``."""
    make_results(root, phantom_names(cfg, "tubes"), np.random.default_rng(0))
    files = {"positron": root / "datasets" / "positron.h5", "ct": root / "datasets" / "ct.h5",
             "features": root / "models" / "features.h5",
             "encoder": root / "models" / "vae_ct" / "final.pt"}
    build_positron_dataset(positron_dataset_spec(cfg, "tubes"), root, files["positron"])
    build_ct_dataset(ct_dataset_spec(cfg), files["ct"])
    build_positron_features(positron_features_spec(cfg, "tubes"), files["positron"],
                            files["features"])
    run_pretrain_vae(pretrain_vae_spec(cfg, "tubes"), files["ct"], files["encoder"].parent)
    return files


class LabelledImages:
    """An in-memory image source with classes, what the loop draws from: ``batch`` gives
    (B, C, H, W) (a mask or a pair as extra channels), ``labels`` the classes (B,)."""

    def __init__(self, images, labels) -> None:
        self.images, self.classes = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices):
        import torch

        return self.images[torch.as_tensor(np.asarray(indices))]

    def labels(self, indices):
        import torch

        return self.classes[torch.as_tensor(np.asarray(indices))]


def train_in_memory(method, source, loop) -> None:
    """``loop.steps`` steps of the training loop on an in-memory ``real`` source, no files
    (the loop's step bookkeeping without checkpoints)."""
    import torch

    from models.training.loop import Trainer

    trainer = Trainer(method, {"real": source}, loop, "/nonexistent", "x", {},
                      torch.device("cpu"), "toy")
    for step in range(loop.steps):
        trainer.step = step
        trainer.train_step()
