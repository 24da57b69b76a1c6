"""Image grids of the generative stage (sample grids, real-versus-generated panels)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.fileio import atomic_output  # noqa: E402


def tile(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(N, H, W) images as one (rows H + gaps, columns W + gaps) mosaic; gaps are -1."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    cols = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), -1.0, np.float32)
    for i in range(n):  # one copy per image, not per pixel
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i]
    return out


def write_panels(path: str | Path, panels: list[tuple[str, np.ndarray]], title: str,
                 overwrite: bool = True, cmap: str = "gray_r", origin: str = "lower") -> Path:
    """PNG with one tiled panel per (caption, (N, H, W) images in [-1, 1]) entry; positron
    images are shown as the image sets' contact sheets show them (``gray_r``, row 0 at the
    bottom), CT images with ``cmap="gray", origin="upper"``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (caption, images) in zip(axes[0], panels, strict=True):
        ax.imshow(tile(images), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest",
                  origin=origin)
        ax.set_title(caption, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
