"""The defect figure of a dataset: for every defect type, the largest measured defect of that
type, in the truth and in every acquisition's reconstruction, on one windowing.

Each panel is the transaxial plane through the defect (the plane holding most of it), cropped
to ``crop_mm`` around it and divided by the mean of the solution's bulk in the same image, so
1 is the solution's activity in every panel and ``[0, vmax]`` is one grey scale for all: a
cold defect that reconstructs warm looks warm here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.provenance import PHANTOM_FIELDS, check_same_origin  # noqa: E402
from recon.image_io import read_recon  # noqa: E402
from recon.truth import activity_concentration, defect_fraction  # noqa: E402
from sim.phantoms.file import read_phantom  # noqa: E402

#: Window of every panel, in units of the solution's bulk activity.
VMAX = 1.6
CMAP = plt.get_cmap("gray").with_extremes(bad="tab:blue")


def _bulk_mean(image: np.ndarray, truth: np.ndarray) -> float:
    bulk = truth >= 0.99 * truth.max()
    value = float(image[bulk].mean()) if bulk.any() else 0.0
    return value if value > 0 else float("nan")


def _crop(plane: np.ndarray, centre_yx: tuple[int, int], half_px: int) -> np.ndarray:
    padded = np.pad(plane, half_px, constant_values=np.nan)
    y, x = centre_yx[0] + half_px, centre_yx[1] + half_px
    return padded[y - half_px : y + half_px + 1, x - half_px : x + half_px + 1]


def pick_defects(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(type, phantom file and label of the largest measured defect of that type), by type."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for doc in docs:
        for row in doc["defects"]:
            if row["status"] != "ok" or not doc.get("phantom_file"):
                continue
            size = float(row["size_mm"])
            if row["type"] not in best or size > best[row["type"]][0]:
                best[row["type"]] = (size, {"phantom": doc["phantom"], "label": row["label"],
                                            "phantom_file": doc["phantom_file"]})
    return [(t, best[t][1]) for t in sorted(best)]


def write_defect_figure(path: str | Path, docs: list[dict[str, Any]],
                        crop_mm: float = 40.0) -> Path:
    """Write the figure (module docstring) from the per-reconstruction detectability
    documents (:func:`recon.detectability.read_json`); a figure saying so when no defect
    could be measured."""
    path = Path(path)
    picks = pick_defects(docs)
    acquisitions = sorted({d["acquisition"] for d in docs})
    if not picks:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no defect could be measured in this dataset", ha="center")
        fig.savefig(path, dpi=100, format="png")
        plt.close(fig)
        return path
    rows = {(d["phantom"], d["acquisition"]): d for d in docs}
    fig, axes = plt.subplots(len(picks), 1 + len(acquisitions), squeeze=False,
                             figsize=(2.4 * (1 + len(acquisitions)), 2.5 * len(picks)))
    for r, (kind, pick) in enumerate(picks):
        phantom = read_phantom(pick["phantom_file"])
        images: dict[str | None, np.ndarray] = {}
        measures: dict[str, dict[str, Any]] = {}
        grid = None
        for acq in acquisitions:
            doc = rows.get((pick["phantom"], acq))
            if doc is not None:
                recon = read_recon(doc["reconstruction"])
                # The figure overlays the phantom's defect on this image: one phantom.
                check_same_origin(recon.origin(doc["reconstruction"]),
                                  phantom.origin(pick["phantom_file"]), PHANTOM_FIELDS,
                                  advice="its _defects.json names another phantom file")
                images[acq], grid = recon.image, recon.grid
                measures[acq] = next(x for x in doc["defects"] if x["label"] == pick["label"])
        defect = next((d for d in phantom.defects if int(d["label"]) == int(pick["label"])),
                      None)
        if defect is None:
            raise ValueError(f"{pick['phantom_file']}: no defect labelled {pick['label']}, "
                             "which a _defects.json of this dataset measured")
        truth = activity_concentration(phantom, grid)
        images[None] = truth
        f = defect_fraction(defect, phantom, grid).fraction
        z, y, x = np.unravel_index(np.argmax(f), f.shape)
        half = int(round(crop_mm / 2 / grid.voxel_size_mm[1]))
        outline = _crop(f[z], (y, x), half)
        for c, acq in enumerate([None, *acquisitions]):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if acq not in images:
                ax.set_title(f"{acq}: not reconstructed", fontsize=8)
                continue
            image = images[acq]
            ax.imshow(_crop(image[z] / _bulk_mean(image, truth), (y, x), half), cmap=CMAP,
                      vmin=0.0, vmax=VMAX, interpolation="nearest")
            ax.contour(outline, levels=[0.5], colors="tab:red", linewidths=0.6)
            if acq is None:
                ax.set_ylabel(f"{kind}, {measures[next(iter(measures))]['size_mm']:.1f} mm",
                              fontsize=8)
                ax.set_title(f"truth ({pick['phantom']})", fontsize=8)
            else:
                m = measures[acq]
                ax.set_title(f"{acq}: CRC {m['crc']:.2f}, CNR {m['cnr']:.1f}", fontsize=8)
    fig.suptitle(f"{crop_mm:.0f} mm crops, grey 0 to {VMAX} x the solution's activity\n"
                 "red: the defect's outline; blue: outside the image", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
