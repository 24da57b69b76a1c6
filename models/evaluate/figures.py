"""Figures of the evaluation (``results/{dataset}/eval/``).

* ``samples.png``: 16 real training images and 16 images of every method and sanity row;
* ``nearest.png``: per method, the 6 generated images closest to a training image (mean
  absolute pixel difference) above their nearest training image: what copying would look like;
* ``latent_walks.png``: per method, two walks of ``walk_steps`` images along a straight line
  in its latent space (RadioGAN): smooth change generalises, jumps between training images
  memorise;
* ``class_walks.png``: per conditional method, one walk per defect class of the training
  split with the class held and only the noise moving (RadioGAN's per-class walk);
* ``curves.png``: every method's logged losses against the step, from ``history.csv``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.methods import method_class  # noqa: E402
from models.metrics.memorisation import nearest  # noqa: E402
from models.training.generate import restore_final  # noqa: E402
from models.training.grids import tile, write_panels  # noqa: E402
from models.training.history import read_history  # noqa: E402
from models.training.loop import in_eval_mode  # noqa: E402
from pipeline.fileio import atomic_output  # noqa: E402

N_SHOWN = 16
N_PAIRS = 6


def _save(fig, path: Path) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def nearest_pairs_figure(path: Path, train: np.ndarray, sets: dict[str, np.ndarray]) -> None:
    fig, axes = plt.subplots(len(sets), 1, figsize=(2 * N_PAIRS, 4.2 * len(sets)),
                             squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], sets.items(), strict=True):
        index, distance = nearest(images, train, "pixels")
        closest = np.argsort(distance)[:N_PAIRS]
        pairs = np.concatenate([images[closest], train[index[closest]]])
        ax.imshow(tile(pairs, columns=N_PAIRS), cmap="gray_r", vmin=-1, vmax=1,
                  origin="lower", interpolation="nearest")
        ax.set_title(f"{name}: closest generated images (bottom) and their nearest training "
                     f"image (top); L1 {', '.join(f'{d:.3f}' for d in distance[closest])}",
                     fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    _save(fig, path)


def latent_walks(models: dict[str, Path], walk_steps: int, seed: int,
                 sources_for) -> dict[str, np.ndarray]:
    """Two walks per method from its ``final.pt``: (2 * walk_steps, H, W) images each."""
    walks = {}
    for name, path in models.items():
        method, _ = restore_final(path, name)
        inputs = method.sampling_inputs(4, sources_for(type(method)),
                                        torch.Generator().manual_seed(seed))
        with torch.no_grad(), in_eval_mode(method):
            rows = [method.latent_walk({k: v[2 * i : 2 * i + 2] for k, v in inputs.items()},
                                       walk_steps)[:, 0].numpy() for i in range(2)]
        walks[name] = np.concatenate(rows)
    return walks


def class_walks(models: dict[str, Path], walk_steps: int, seed: int, sources_for
                ) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per conditional method: the classes of its training split and one walk per class,
    (n_classes * walk_steps, H, W), between the same two noise draws for every class."""
    from models.data.labels import DEFECT_CLASSES

    out = {}
    for name, path in models.items():
        cls = method_class(name)
        if not cls.conditional:
            continue
        method, state = restore_final(path, name)
        classes = [k for k, n in enumerate(state["arch"]["class_counts"]) if n > 0]
        inputs = method.sampling_inputs(2, sources_for(cls), torch.Generator().manual_seed(seed))
        rows = []
        with torch.no_grad(), in_eval_mode(method):
            for k in classes:
                held = {**inputs, "label": torch.full_like(inputs["label"], k)}
                rows.append(method.latent_walk(held, walk_steps)[:, 0].numpy())
        out[name] = ([DEFECT_CLASSES[k] for k in classes], np.concatenate(rows))
    return out


def class_walks_figure(path: Path, walks: dict[str, tuple[list[str], np.ndarray]],
                       walk_steps: int) -> None:
    fig, axes = plt.subplots(max(1, len(walks)), 1, figsize=(1.3 * walk_steps, 1.6 + 1.4 * max(
        [len(c) for c, _ in walks.values()] or [1])), squeeze=False)
    for ax, (name, (classes, images)) in zip(axes[:, 0], walks.items(), strict=False):
        ax.imshow(tile(images, columns=walk_steps), cmap="gray_r", vmin=-1, vmax=1,
                  origin="lower", interpolation="nearest")
        ax.set_title(f"{name}: one walk per class, rows bottom to top: {', '.join(classes)}",
                     fontsize=8)
        ax.set_axis_off()
    if not walks:
        axes[0, 0].text(0.5, 0.5, "no conditional method in train.methods", ha="center")
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    _save(fig, path)


def curves_figure(path: Path, histories: dict[str, Path]) -> None:
    present = {m: read_history(p) for m, p in histories.items() if p and Path(p).is_file()}
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.2),
                             squeeze=False)
    for ax, (name, rows) in zip(axes[0], present.items(), strict=False):
        steps = [r["step"] for r in rows]
        for key in rows[0]:
            if key.endswith("loss") or key in ("g_gan", "g_apg", "wasserstein"):
                ax.plot(steps, [r.get(key, np.nan) for r in rows], lw=1, label=key)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def write_figures(out_dir: Path, train: np.ndarray, sets: dict[str, np.ndarray],
                  methods: list[str], models: dict[str, Path], histories: dict[str, Path],
                  settings, sources_for=None) -> None:
    """All four figures of the module docstring."""
    shown = [("real (training)", train[:: max(1, len(train) // N_SHOWN)][:N_SHOWN])]
    shown += [(name, images[:N_SHOWN]) for name, images in sets.items()]
    write_panels(out_dir / "samples.png", shown, "Table 1 sets: real and generated images")
    nearest_pairs_figure(out_dir / "nearest.png", train, {m: sets[m] for m in methods})
    if models and sources_for is not None:
        walks = latent_walks(models, settings.walk_steps, settings.seed, sources_for)
        fig, axes = plt.subplots(len(walks), 1, figsize=(1.3 * settings.walk_steps,
                                                         3.0 * len(walks)), squeeze=False)
        for ax, (name, images) in zip(axes[:, 0], walks.items(), strict=True):
            ax.imshow(tile(images, columns=settings.walk_steps), cmap="gray_r", vmin=-1, vmax=1,
                      origin="lower", interpolation="nearest")
            ax.set_title(f"{name}: two latent walks", fontsize=8)
            ax.set_axis_off()
        fig.tight_layout()
        _save(fig, out_dir / "latent_walks.png")
        class_walks_figure(out_dir / "class_walks.png",
                           class_walks(models, settings.walk_steps, settings.seed, sources_for),
                           settings.walk_steps)
    curves_figure(out_dir / "curves.png", histories)
