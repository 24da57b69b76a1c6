"""Defect detectability of a reconstruction: contrast recovery against the phantom's truth and
contrast-to-noise against the local background, for every defect of the phantom.

Regions, on the image grid (:mod:`recon.truth` gives the sub-voxel fraction ``f`` of each
defect and the truth image ``T``, the phantom's activity averaged over each voxel):

* **defect ROI**: voxels with ``f >= roi_fraction * max f`` (the defect's own voxels at this
  grid; half of the largest share by default, so a 1 mm crack in 2 mm voxels still has one);
  the **core** is the voxels wholly inside (``f >= 0.99``), when there are any.
* **background**: the shell of voxels ``guard_mm`` to ``guard_mm + width`` from the defect
  (``width`` = the defect's size, at least ``2 guard_mm``) made wholly of the material the
  defect replaced (solution for inclusions and bubbles, wall metal for cracks, holes and pits)
  and at least ``guard_mm`` from every other defect. The guard keeps the resolution blur of
  the defect's own edge out of the background, as NEMA NU 2 places its background ROIs away
  from the spheres.
* **bulk**: voxels at the fill's full activity (``T >= 0.99 max T``, eroded by one voxel)
  away from every defect; ``scale = mean(image) / mean(T)`` there puts the image in the
  truth's units.

Measures, with ``C`` the mean image value and ``T`` the mean truth over a region:

* ``ratio = C_defect / C_background`` (and ``core_ratio`` on the core): what an inspector
  reads off the image; 0 for a perfectly recovered cold defect, 1 for an invisible one;
* ``crc = (C_defect - C_background) / (scale (T_defect - T_background))``, the contrast
  recovery coefficient against the truth at this grid (1 = full recovery). It is NEMA's
  ``1 - C_c / C_B`` for a cold sphere in the solution and ``(C_H / C_B - 1) / (a_H / a_B - 1)``
  for a hot one, and stays defined for a hot defect in a cold wall (``T_background`` 0);
* ``cnr = |C_defect - C_background| / sigma_roi``, with ``sigma_roi`` the standard deviation
  of the mean of the defect's own ROI moved to every placement around it where it lies
  wholly in the host material, beyond the guard from every defect and within
  ``guard_mm + width + size`` of this one (NEMA NU 2's background variability: the spread
  of ROI means of the sphere's size, which keeps the noise's correlation between voxels;
  the Rose criterion, visible above 3 to 5, applies to this CNR). With fewer than
  ``min_placements`` placements it is NaN, never the white-noise guess;
* ``cnr_voxel = |C_defect - C_background| / sigma_background``, with ``sigma`` the standard
  deviation of the background voxels (per-voxel noise; the per-voxel CNR).

A defect that cannot be measured (outside the image grid, a background shell with fewer than
``min_background_voxels`` voxels, no contrast in the truth, a phantom without labels) gets
``status`` ``missing: <reason>`` and NaN measures, never a number that looks valid.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from recon.grid import ImageGrid
from recon.truth import activity_concentration, defect_fraction, material_fraction
from sim.phantoms.file import PhantomData

#: Columns of a detectability row, in CSV order.
MEASURES = ("ratio", "core_ratio", "crc", "cnr", "cnr_voxel", "std_roi", "contrast",
            "mean_defect", "mean_core", "mean_background", "std_background", "truth_defect",
            "truth_background")
COLUMNS = ("label", "type", "material", "host", "size_mm", "max_fraction", "roi_voxels",
           "core_voxels", "background_voxels", *MEASURES, "status")


@dataclass(frozen=True)
class DetectabilitySettings:
    """Region settings (module docstring); lengths in mm."""

    guard_mm: float = 4.0
    roi_fraction: float = 0.5
    host_fraction: float = 0.99
    min_background_voxels: int = 10
    min_placements: int = 10


def roi_mean_spread(image: np.ndarray, roi: np.ndarray, allowed: np.ndarray
                    ) -> tuple[float, int]:
    """Standard deviation of the mean of ``roi`` (bool, the image's shape) moved by whole
    voxels to every placement where it lies wholly inside ``allowed`` (bool), and the number
    of placements; (NaN, 0) when there are fewer than two."""
    index = np.nonzero(roi)
    lo = [int(i.min()) for i in index]
    kernel = roi[tuple(slice(a, int(i.max()) + 1) for a, i in zip(lo, index, strict=True))]
    weights = kernel / kernel.sum()
    # origin=-(n // 2) puts the kernel's first voxel at the output voxel: output[p] is the
    # mean over the ROI shifted by p - lo.
    origin = [-(n // 2) for n in kernel.shape]
    means = scipy.ndimage.correlate(image, weights, mode="constant", origin=origin)
    inside = scipy.ndimage.correlate(allowed.astype(np.float64), weights, mode="constant",
                                     origin=origin) > 1 - 1e-9
    if inside.sum() < 2:
        return float("nan"), int(inside.sum())
    return float(means[inside].std(ddof=1)), int(inside.sum())


def defect_size_mm(defect: dict[str, Any]) -> float:
    """The defect's characteristic size: its diameter, else its length (cracks), mm."""
    for key in ("diameter_mm", "length_mm"):
        if key in defect:
            return float(defect[key])
    return float("nan")


def _missing_row(defect: dict[str, Any], reason: str) -> dict[str, Any]:
    row = {"label": int(defect.get("label", -1)), "type": str(defect.get("type", "unknown")),
           "material": str(defect.get("material", "")),
           "host": "+".join(defect.get("replaces", [])), "size_mm": defect_size_mm(defect),
           "max_fraction": float("nan"), "roi_voxels": 0, "core_voxels": 0,
           "background_voxels": 0}
    row.update({m: float("nan") for m in MEASURES})
    row["status"] = f"missing: {reason}"
    return row


def _bulk_scale(image: np.ndarray, truth: np.ndarray, near_defects: np.ndarray) -> float:
    full = truth >= 0.99 * truth.max()
    bulk = scipy.ndimage.binary_erosion(full) & ~near_defects
    if not bulk.any():
        bulk = full & ~near_defects
    t = float(truth[bulk].mean()) if bulk.any() else 0.0
    return float(image[bulk].mean()) / t if t > 0 else float("nan")


def measure_defects(image: np.ndarray, grid: ImageGrid, phantom: PhantomData,
                    settings: DetectabilitySettings = DetectabilitySettings()
                    ) -> list[dict[str, Any]]:
    """One row per defect of the phantom (module docstring), in label order.

    Parameters
    ----------
    image : numpy.ndarray
        Reconstruction on ``grid``, (z, y, x), any linear scale.
    phantom : PhantomData
        The phantom the data came from (its labels, defects and activity).
    """
    defects = sorted(phantom.defects, key=lambda d: int(d.get("label", 0)))
    if phantom.labels is None:
        return [_missing_row(d, "the phantom file has no labels") for d in defects]
    if image.shape != grid.shape:
        raise ValueError(f"image shape {image.shape} is not the grid's {grid.shape}")
    image = np.asarray(image, np.float64)
    truth = activity_concentration(phantom, grid).astype(np.float64)
    fractions: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for d in defects:
        label = int(d.get("label", -1))
        try:
            fractions[label] = defect_fraction(d, phantom, grid).fraction
        except (KeyError, ValueError, TypeError) as err:
            errors[label] = f"no usable shape record ({err})"
    distance = {}
    for label, f in fractions.items():
        if f is not None and f.max() > 0:
            distance[label] = scipy.ndimage.distance_transform_edt(
                f <= 0, sampling=grid.voxel_size_mm)
    near = np.zeros(grid.shape, bool)
    for dist in distance.values():
        near |= dist < settings.guard_mm
    scale = _bulk_scale(image, truth, near)

    rows = []
    for d in defects:
        label = int(d.get("label", -1))
        if label in errors:
            rows.append(_missing_row(d, errors[label]))
            continue
        f = fractions[label]
        if label not in distance:
            rows.append(_missing_row(d, "the defect lies outside the image grid"))
            continue
        roi = f >= settings.roi_fraction * f.max()
        core = f >= 0.99
        width = max(defect_size_mm(d) if math.isfinite(defect_size_mm(d)) else 0.0,
                    2 * settings.guard_mm)
        shell = (distance[label] >= settings.guard_mm) & (
            distance[label] <= settings.guard_mm + width)
        host = material_fraction(phantom, list(d.get("replaces", [])), grid)
        background = shell & (host >= settings.host_fraction)
        clear = host >= settings.host_fraction
        for other, dist in distance.items():
            if other != label:
                background &= dist >= settings.guard_mm
            clear &= dist >= settings.guard_mm
        allowed = clear & (distance[label] <= settings.guard_mm + width + defect_size_mm(d)
                           if math.isfinite(defect_size_mm(d)) else clear)
        row = _missing_row(d, "")
        row.update(max_fraction=float(f.max()), roi_voxels=int(roi.sum()),
                   core_voxels=int(core.sum()), background_voxels=int(background.sum()))
        if background.sum() < settings.min_background_voxels:
            row["status"] = (f"missing: {int(background.sum())} background voxels (fewer than "
                             f"{settings.min_background_voxels}) around the defect")
            rows.append(row)
            continue
        c_d, c_b = float(image[roi].mean()), float(image[background].mean())
        t_d, t_b = float(truth[roi].mean()), float(truth[background].mean())
        sigma = float(image[background].std())
        sigma_roi, placements = roi_mean_spread(image, roi, allowed)
        if placements < settings.min_placements:
            sigma_roi = float("nan")
        row.update(mean_defect=c_d, mean_background=c_b, std_background=sigma,
                   std_roi=sigma_roi, truth_defect=t_d, truth_background=t_b,
                   contrast=(c_d - c_b) / c_b if c_b > 0 else float("nan"),
                   ratio=c_d / c_b if c_b > 0 else float("nan"),
                   cnr=abs(c_d - c_b) / sigma_roi if sigma_roi > 0 else float("nan"),
                   cnr_voxel=abs(c_d - c_b) / sigma if sigma > 0 else float("nan"))
        if core.any():
            c_core = float(image[core].mean())
            row.update(mean_core=c_core, core_ratio=c_core / c_b if c_b > 0 else float("nan"))
        if abs(t_d - t_b) <= 1e-6 * max(truth.max(), 1e-30):
            row["status"] = "missing: no contrast in the truth (crc undefined)"
        elif not (math.isfinite(scale) and scale > 0):
            row["status"] = ("missing: no counts in the part's bulk (an empty or nearly empty "
                             "measurement; crc undefined)")
        else:
            row["crc"] = (c_d - c_b) / (scale * (t_d - t_b))
            row["status"] = "ok"
        rows.append(row)
    return rows


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, rows: list[dict[str, Any]], meta: dict[str, Any],
               settings: DetectabilitySettings) -> None:
    """Per-reconstruction JSON: ``meta`` (phantom, acquisition, ...), settings and rows
    (NaN written as null)."""
    doc = {**meta, "settings": asdict(settings),
           "defects": [{k: _json_safe(v) for k, v in r.items()} for r in rows]}
    Path(path).write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a per-reconstruction JSON back (null measures become NaN)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        rows = doc["defects"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a detectability file ({err})") from None
    for r in rows:
        for m in MEASURES:
            r[m] = float("nan") if r.get(m) is None else float(r[m])
    return doc


def write_csv(path: str | Path, docs: list[dict[str, Any]]) -> int:
    """One row per defect and reconstruction, with ``phantom`` and ``acquisition`` first;
    returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["phantom", "acquisition", *COLUMNS])
        writer.writeheader()
        for doc in docs:
            for r in doc["defects"]:
                writer.writerow({"phantom": doc["phantom"], "acquisition": doc["acquisition"],
                                 **{c: r.get(c) for c in COLUMNS}})
                n += 1
    return n
