"""PNG preview of a phantom: central slices of mu511 and activity, and defect labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.fileio import atomic_output  # noqa: E402


def _extent(origin_mm, voxel_mm, shape, axes: tuple[int, int]) -> list[float]:
    """imshow extent (left, right, bottom, top) for an image with rows = axes[0]."""
    row, col = axes
    lo = origin_mm - voxel_mm / 2.0
    hi = lo + voxel_mm * np.asarray(shape)
    return [lo[col], hi[col], lo[row], hi[row]]


def write_preview(
    path: str | Path,
    mu511_per_mm: np.ndarray,
    activity: np.ndarray,
    labels: np.ndarray,
    voxel_size_mm: np.ndarray,
    origin_mm: np.ndarray,
    title: str,
    overwrite: bool = False,
) -> Path:
    """Write a 3 x 3 figure: rows are the transaxial (z), coronal (y) and sagittal (x) central
    slices; columns are mu511 (1/cm), relative activity, and the defect labels projected
    (maximum) along the viewing axis so that every defect shows. Arrays are (z, y, x)."""
    voxel = np.asarray(voxel_size_mm, dtype=float)
    origin = np.asarray(origin_mm, dtype=float)
    nz, ny, nx = mu511_per_mm.shape
    views = [
        ("transaxial z = centre", lambda a: a[nz // 2], lambda a: a.max(axis=0), (1, 2), "x", "y"),
        ("coronal y = centre", lambda a: a[:, ny // 2], lambda a: a.max(axis=1), (0, 2), "x", "z"),
        ("sagittal x = centre", lambda a: a[:, :, nx // 2], lambda a: a.max(axis=2), (0, 1), "y",
         "z"),
    ]
    fig, axes = plt.subplots(3, 3, figsize=(11, 10), constrained_layout=True)
    n_labels = max(int(labels.max()), 1)
    for row, (name, cut, project, ax_pair, xl, yl) in enumerate(views):
        extent = _extent(origin, voxel, mu511_per_mm.shape, ax_pair)
        panels = [
            (cut(mu511_per_mm) * 10.0, "magma", f"{name}: mu511 (1/cm)", None),
            (cut(activity), "inferno", f"{name}: activity", None),
            (np.ma.masked_equal(project(labels), 0), "tab10", "defects (max projection)",
             (0.5, n_labels + 0.5)),
        ]
        for col, (img, cmap, label, lim) in enumerate(panels):
            ax = axes[row, col]
            vmin, vmax = lim if lim else (None, None)
            if col == 2:  # labels drawn over the projected attenuation, in grey
                ax.imshow(project(mu511_per_mm), origin="lower", extent=extent, cmap="gray_r",
                          interpolation="nearest", aspect="equal")
            im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax,
                           interpolation="nearest", aspect="equal")
            ax.set_title(label, fontsize=9)
            ax.set_xlabel(f"{xl} (mm)")
            ax.set_ylabel(f"{yl} (mm)")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)
