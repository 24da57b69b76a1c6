"""The positron image set: 2D slices of the reconstructions as one HDF5 file for training.

``datasets/positron.h5``:

* ``images`` (N, H, W) float32 in [-1, 1], chunked one image per chunk, gzip;
* ``masks`` (N, H, W) uint8: defect labels of the phantom on the image's grid (nearest);
* ``truth`` (N, H, W) float32 in [-1, 1]: the phantom's activity averaged over the
  reconstruction's voxels (:func:`recon.truth.activity_concentration`) and cut, resampled and
  normalised like the image (its own ``truth_scale``, same ``normalisation`` mode): what a
  perfect reconstruction of that slice would show;
* ``pairs`` (M, 2) int64: rows of the low-count and the reference image of one slice;
* per-image columns (length N): ``phantom``, ``acquisition``, ``split`` (train/val/test, by
  phantom, stratified by the phantom's defect types: :func:`phantom_splits`),
  ``slice_index`` (plane or column of the reconstruction), ``position_mm`` (its z, or x for
  axial slices), ``defect_types`` (comma-separated types present in the slice, "" for none),
  ``defect_class`` (the one class of the slice for class-conditional generation and the
  detector: the type of the defect covering most of the slice's pixels, ties broken by the
  order of :data:`models.data.labels.DEFECT_CLASSES`; ``none`` without a defect),
  ``defect_count``, ``counts`` (coincidences in the plane; NaN for axial slices), ``scale``,
  ``truth_scale``, ``defect_cnr`` and ``defect_crc`` (of the most visible defect in the slice,
  measured in 3D on its reconstruction by :mod:`recon.detectability`; NaN without a defect
  or when the measure is missing);
* attributes: ``normalisation`` (JSON), ``size_px``, ``orientation``, and provenance.

Units and normalisation. A reconstruction holds counts per unit sensitivity, which grows
with the acquisition time; divided by ``duration_s`` it becomes activity on a relative scale
common to all acquisitions (``a``, proportional to Bq/mL). Each image is resampled to
``size_px`` (linear interpolation, anti-aliased when shrinking), then stored as
``x = 2 a / scale - 1`` with ``scale`` its own maximum (``normalisation: image``) or the
largest value of the set (``dataset``), so :func:`to_activity` gives back ``a`` to float
precision.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.transform import resize  # noqa: E402

from models.data.labels import DEFECT_CLASSES  # noqa: E402
from models.data.splits import assign_splits  # noqa: E402
from pipeline.fileio import atomic_output, provenance_attrs, scratch_folder  # noqa: E402
from pipeline.provenance import PHANTOM_FIELDS, Origin, check_same_origin  # noqa: E402
from recon.detectability import measure_defects  # noqa: E402
from recon.image_io import ReconImage, read_recon  # noqa: E402
from recon.truth import activity_concentration, overlap_fractions  # noqa: E402
from sim.phantoms.file import PhantomData, read_defects, read_phantom  # noqa: E402

log = logging.getLogger(__name__)

#: Per-image columns and their HDF5 types.
COLUMNS = {"phantom": h5py.string_dtype(), "acquisition": h5py.string_dtype(),
           "split": h5py.string_dtype(), "slice_index": np.int32, "position_mm": np.float32,
           "defect_types": h5py.string_dtype(), "defect_class": h5py.string_dtype(),
           "defect_count": np.int32,
           "counts": np.float32, "scale": np.float32, "truth_scale": np.float32,
           "defect_cnr": np.float32, "defect_crc": np.float32}


def to_activity(images: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Map stored images back to activity: ``(x + 1) / 2 * scale`` (scale per image)."""
    return (np.asarray(images, np.float64) + 1.0) / 2.0 * np.asarray(scale)[:, None, None]


def resample(image: np.ndarray, size_px: int, order: int = 1) -> np.ndarray:
    """Resize a 2D image to ``size_px`` square (anti-aliased when shrinking, values kept)."""
    shrink = min(image.shape) > size_px
    out = resize(image, (size_px, size_px), order=order, mode="edge", preserve_range=True,
                 anti_aliasing=bool(shrink and order > 0))
    return out.astype(image.dtype if order == 0 else np.float32)


@dataclass
class Slices:
    """Metadata of the gathered slices (a few numbers each), and the largest activity and
    truth values so far (the ``dataset`` normalisation's scales)."""

    columns: dict[str, list] = field(default_factory=lambda: {k: [] for k in COLUMNS})
    activity_max: float = 0.0
    truth_max: float = 0.0

    def __len__(self) -> int:
        return len(self.columns["phantom"])


#: Images gathered before a write, and rows normalised at once: memory is bounded by these,
#: not by the number of phantoms.
BATCH_ROWS = 256


class _Rows:
    """Growable (n, size, size) datasets of a scratch HDF5 file: raw activity, truth, masks."""

    def __init__(self, f: h5py.File, size: int) -> None:
        self.sets = {name: f.create_dataset(name, (0, size, size), dtype, maxshape=(
            None, size, size), chunks=(min(BATCH_ROWS, 64), size, size))
            for name, dtype in (("activity", np.float32), ("truth", np.float32),
                                ("masks", np.uint8))}
        self.pending: dict[str, list[np.ndarray]] = {name: [] for name in self.sets}

    def append(self, activity: np.ndarray, truth: np.ndarray, masks: np.ndarray) -> None:
        for name, image in (("activity", activity), ("truth", truth), ("masks", masks)):
            self.pending[name].append(image)
        if len(self.pending["activity"]) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        for name, images in self.pending.items():
            if images:
                data = self.sets[name]
                data.resize(len(data) + len(images), axis=0)
                data[len(data) - len(images):] = np.stack(images)
                images.clear()


def _overlap_weights(centres_mm: np.ndarray, size_mm: float, slice_centres_mm: np.ndarray,
                     slice_size_mm: float) -> np.ndarray:
    """Length of overlap of each plane (centres, one width) with each phantom slice,
    (planes, slices), mm."""
    return overlap_fractions(centres_mm, size_mm, slice_centres_mm, slice_size_mm) * size_mm


def _defects_in(labels: np.ndarray, defects: list[dict]) -> tuple[str, str, int]:
    """Types present in a slice of defect labels (comma-separated), its one class (the
    type covering most pixels; ties by :data:`DEFECT_CLASSES` order) and its defect count."""
    numbers, pixels = np.unique(labels[labels > 0], return_counts=True)
    type_of = {d["label"]: d["type"] for d in defects}
    area: dict[str, int] = {}
    for number, n in zip(numbers.tolist(), pixels.tolist(), strict=True):
        if number in type_of:
            area[type_of[number]] = area.get(type_of[number], 0) + n
    rank = {name: i for i, name in enumerate(DEFECT_CLASSES)}
    dominant = min(area, key=lambda t: (-area[t], rank.get(t, len(rank)), t)) if area else "none"
    return ",".join(sorted(area)), dominant, len(numbers)


def _most_visible(labels: np.ndarray, measures: dict[int, dict]) -> tuple[float, float]:
    """CNR and CRC of the defect of highest CNR among those in the slice (NaN for none)."""
    present = [measures[int(k)] for k in np.unique(labels[labels > 0]) if int(k) in measures]
    # A CNR is NaN when no background ROI fits around the defect: not a candidate.
    present = [m for m in present if m["status"] == "ok" and math.isfinite(m["cnr"])]
    if not present:
        return float("nan"), float("nan")
    best = max(present, key=lambda m: m["cnr"])
    return float(best["cnr"]), float(best["crc"])


def _overlapping(grid_centres: np.ndarray, grid_size: float, origin_mm: float,
                 voxel_mm: float, n: int) -> np.ndarray:
    """Which phantom voxels (n along this axis) each image pixel overlaps, bool (pixels, n)."""
    centres = origin_mm + voxel_mm * np.arange(n)
    return _overlap_weights(grid_centres, grid_size, centres,
                            voxel_mm) > 0


def _labels_on_pixels(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Largest label of the phantom pixels each image pixel overlaps (0 for none).

    labels : (R, C) phantom plane; rows : (r, R) and cols : (c, C) overlap matrices."""
    by_col = (labels[:, None, :] * cols[None, :, :]).max(axis=2, initial=0)  # (R, c)
    return (by_col[None, :, :] * rows[:, :, None]).max(axis=1, initial=0)  # (r, c)


def _cuts(recon: ReconImage, phantom: PhantomData, min_fraction: float, axis: int):
    """Slices of the reconstruction across ``axis`` (0: z planes, 2: x columns) through the
    solution: (index, position, image, phantom labels on the image's pixels, counts).

    A slice is kept when the phantom activity it overlaps is at least ``min_fraction`` of the
    most active slice's; its labels are the defects of every phantom slice it overlaps,
    put on the image's pixels by box overlap (a pixel touching a defect voxel is labelled,
    as the phantom stage labels a voxel touched by a defect)."""
    grid = recon.grid
    centres = grid.centres_mm(axis)
    size = grid.voxel_size_mm[axis]
    p_voxel, p_origin = phantom.voxel_size_mm, phantom.origin_mm
    p_centres = p_origin[axis] + p_voxel[axis] * np.arange(phantom.activity.shape[axis])
    weights = _overlap_weights(centres, size, p_centres, p_voxel[axis])
    in_plane = tuple(a for a in range(3) if a != axis)
    activity = weights @ phantom.activity.sum(axis=in_plane)
    if activity.max() <= 0:
        return
    rows, cols = (_overlapping(grid.centres_mm(a), grid.voxel_size_mm[a], p_origin[a],
                               p_voxel[a], phantom.labels.shape[a]) for a in in_plane)
    for k in np.flatnonzero(activity >= min_fraction * activity.max()):
        labels = np.take(phantom.labels, np.flatnonzero(weights[k] > 0), axis=axis).max(axis=axis)
        on_image = _labels_on_pixels(labels, rows, cols)
        counts = float(recon.plane_counts[k]) if axis == 0 else float("nan")
        yield int(k), float(centres[k]), np.take(recon.image, k, axis=axis), on_image, counts


def _check_recon(path: Path, recon: ReconImage, reference: ReconImage | None) -> None:
    if recon.image.ndim != 3 or min(recon.image.shape) < 1:
        raise ValueError(f"{path}: dataset image has shape {recon.image.shape}, expected a "
                         "(z, y, x) volume")
    if reference is not None and recon.image.shape != reference.image.shape:
        raise ValueError(f"{path}: image has shape {recon.image.shape}, but the other "
                         f"acquisition of this phantom has {reference.image.shape}; "
                         "reconstruct both with the same recon settings")
    if "duration_s" not in recon.attrs or float(recon.attrs["duration_s"]) <= 0:
        raise ValueError(f"{path}: missing or invalid attribute duration_s (reconstruct it again)")


def _check_pairing(entry: dict[str, Path], acq: str, recons: dict[str, ReconImage],
                   phantom: PhantomData, phantom_name: str) -> None:
    """A reconstruction is paired with its phantom and its sibling acquisitions only when
    what they record agrees (:mod:`pipeline.provenance`; fields a file does not record,
    as in older files, are not compared): the phantom it was simulated from (name, dataset,
    grid, config), the acquisition its place in the results tree says, and the scanner of
    the phantom's other reconstructions."""
    origin = recons[acq].origin(entry[acq])
    check_same_origin(origin, phantom.origin(entry["phantom"]),
                      PHANTOM_FIELDS,
                      advice="the masks and truth would be another phantom's; reconstruct "
                             "this phantom's own list-mode files")
    check_same_origin(origin, Origin(f"its place in the results ({phantom_name}/{acq}.h5)",
                                     {"acquisition": acq}), ["acquisition"])
    first = next(iter(recons))
    if first != acq:
        check_same_origin(origin, recons[first].origin(entry[first]), ["scanner"],
                          advice="reconstruct both acquisitions from one scanner's data")


def input_files(spec: dict[str, Any], results_dir: str | Path) -> dict[str, dict[str, Path]]:
    """Phantom and reconstruction files of the spec, checked to exist (before any work)."""
    results_dir = Path(results_dir)
    files = {}
    for phantom in spec["phantoms"]:
        entry = {"phantom": results_dir / "phantoms" / f"{phantom}.h5"}
        for acq in spec["acquisitions"]:
            entry[acq] = results_dir / "recon" / phantom / f"{acq}.h5"
        for path in entry.values():
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist (run the phantom, simulate and "
                                        "reconstruct stages first)")
        files[phantom] = entry
    return files


def phantom_splits(phantoms: list[str], files: dict[str, dict[str, Path]],
                   fractions: list[float], seed: int) -> dict[str, str]:
    """Train, validation or test for every phantom, stratified by the defect types each
    phantom holds (:func:`models.data.splits.assign_splits`); a type held by at least three
    phantoms that still misses a split (too few phantoms to place it everywhere) is logged."""
    types = {name: {d["type"] for d in read_defects(files[name]["phantom"])} for name in phantoms}
    splits = assign_splits(phantoms, fractions, seed, labels=types)
    for kind in sorted(set().union(*types.values())):
        holders = [name for name in phantoms if kind in types[name]]
        present = {splits[name] for name in holders}
        if len(holders) >= 3 and len(present) < 3:
            log.warning("defect type %s (%d phantoms) is not in every split: %s only",
                        kind, len(holders), ", ".join(sorted(present)))
    return splits


def gather(spec: dict[str, Any], files: dict[str, dict[str, Path]], rows_out: _Rows
           ) -> tuple[Slices, list]:
    """Cut, resample and describe every slice, one phantom at a time, the images appended to
    ``rows_out`` (raw activity per second, truth, masks); returns the slices' metadata and
    the pairs (row lists)."""
    cfg = spec["positron_images"]
    size = int(cfg["size_px"])
    axis = 0 if cfg["orientation"] == "transaxial" else 2
    splits = phantom_splits(spec["phantoms"], files, cfg["split_fractions"], int(cfg["seed"]))
    out, pairs = Slices(), []
    for phantom_name, entry in files.items():
        phantom = read_phantom(entry["phantom"])
        if phantom.labels is None:
            raise ValueError(f"{entry['phantom']}: no labels dataset; the positron image set "
                             "needs the defect labels for its masks")
        recons, first = {}, None
        for acq in spec["acquisitions"]:
            recons[acq] = read_recon(entry[acq])
            _check_pairing(entry, acq, recons, phantom, phantom_name)
            _check_recon(entry[acq], recons[acq], first)
            first = first or recons[acq]
        rows: dict[int, dict[str, int]] = {}
        truth = activity_concentration(phantom, first.grid)
        for acq, recon in recons.items():
            duration = float(recon.attrs["duration_s"])
            measures = {r["label"]: r for r in measure_defects(recon.image, recon.grid, phantom)}
            for index, position, image, labels, counts in _cuts(
                    recon, phantom, cfg["min_activity_fraction"], axis):
                rows.setdefault(index, {})[acq] = len(out)
                activity = resample(image.astype(np.float32) / duration, size)
                cut_truth = resample(np.take(truth, index, axis=axis), size)
                rows_out.append(activity, cut_truth, resample(labels, size, order=0))
                out.activity_max = max(out.activity_max, float(activity.max()))
                out.truth_max = max(out.truth_max, float(cut_truth.max()))
                cnr, crc = _most_visible(labels, measures)
                out.columns["defect_cnr"].append(cnr)
                out.columns["defect_crc"].append(crc)
                types, dominant, count = _defects_in(labels, phantom.defects)
                for key, value in (("phantom", phantom_name), ("acquisition", acq),
                                   ("split", splits[phantom_name]), ("slice_index", index),
                                   ("position_mm", position), ("defect_types", types),
                                   ("defect_class", dominant),
                                   ("defect_count", count), ("counts", counts)):
                    out.columns[key].append(value)
        if len(spec["acquisitions"]) == 2:
            low, ref = spec["acquisitions"]
            pairs += [(r[low], r[ref]) for r in rows.values() if low in r and ref in r]
    return out, pairs


def normalise(activity: np.ndarray, mode: str, dataset_max: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W) in [-1, 1] and the scale of each (module docstring); ``dataset_max``
    is the largest value of the whole set when ``activity`` is one batch of it."""
    stack = np.asarray(activity, dtype=np.float64)
    if mode == "image":
        scale = stack.max(axis=(1, 2))
    else:
        scale = np.full(len(stack), stack.max() if dataset_max is None else dataset_max)
    scale = np.where(scale > 0, scale, 1.0)
    images = np.clip(2.0 * stack / scale[:, None, None] - 1.0, -1.0, 1.0)
    return images.astype(np.float32), scale


def _normalised_copy(source: h5py.Dataset, target: h5py.Dataset, mode: str,
                     dataset_max: float) -> np.ndarray:
    """``target`` = ``source`` normalised, BATCH_ROWS rows at a time; the scales (n,)."""
    scales = []
    for start in range(0, len(source), BATCH_ROWS):
        images, scale = normalise(source[start:start + BATCH_ROWS], mode, dataset_max)
        target[start:start + len(images)] = images
        scales.append(scale)
    return np.concatenate(scales) if scales else np.zeros(0)


def write_contact_sheet(path: Path, images: np.ndarray, masks: np.ndarray, pairs: np.ndarray,
                        columns: dict[str, list], title: str, overwrite: bool) -> Path:
    """PNG of up to 8 pairs (or single images): low count, reference and defect mask."""
    rows = pairs[:: max(1, len(pairs) // 8)][:8] if len(pairs) else np.arange(
        min(8, len(images)))[:, None]
    n_cols = rows.shape[1] + 1
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 2.2 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, i in enumerate(row):
            axes[r, c].imshow(images[i], cmap="gray_r", vmin=-1, vmax=1, origin="lower")
            axes[r, c].set_title(f"{columns['phantom'][i]} {columns['acquisition'][i]} "
                                 f"#{columns['slice_index'][i]}", fontsize=7)
        axes[r, -1].imshow(masks[row[-1]], cmap="tab10", vmin=0, vmax=9, origin="lower",
                           interpolation="nearest")
        axes[r, -1].set_title(columns["defect_types"][row[-1]] or "no defect", fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def build_positron_dataset(spec: dict[str, Any], results_dir: str | Path, out_h5: str | Path,
                           overwrite: bool = False) -> dict[str, Any]:
    """Build ``positron.h5`` and its contact sheet (``.png`` beside it) for a dataset spec
    (:func:`pipeline.specs.positron_dataset_spec`); returns a summary."""
    out_h5 = Path(out_h5)
    png = out_h5.with_suffix(".png")
    for path in (out_h5, png):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not spec["acquisitions"]:
        raise ValueError(f"dataset {spec['dataset']}: none of its acquisitions is "
                         "positron_images.low_count or .reference")
    files = input_files(spec, results_dir)
    cfg = spec["positron_images"]
    size = int(cfg["size_px"])
    with atomic_output(out_h5, overwrite) as tmp, h5py.File(tmp, "w") as f, \
            scratch_folder(out_h5) as scratch_dir, \
            h5py.File(scratch_dir / "raw.h5", "w") as scratch:
        rows = _Rows(scratch, size)
        slices, pairs = gather(spec, files, rows)
        rows.flush()
        if not len(slices):
            raise ValueError(f"dataset {spec['dataset']}: no slice holds enough activity "
                             "(positron_images.min_activity_fraction)")
        raw = rows.sets
        written = {name: f.create_dataset(name, (len(slices), size, size), dtype,
                                          chunks=(1, size, size), compression="gzip",
                                          compression_opts=4, shuffle=True)
                   for name, dtype in (("images", np.float32), ("masks", np.uint8),
                                       ("truth", np.float32))}
        scale = _normalised_copy(raw["activity"], written["images"], cfg["normalisation"],
                                 slices.activity_max)
        truth_scale = _normalised_copy(raw["truth"], written["truth"], cfg["normalisation"],
                                       slices.truth_max)
        for start in range(0, len(slices), BATCH_ROWS):
            written["masks"][start:start + BATCH_ROWS] = raw["masks"][start:start + BATCH_ROWS]
        slices.columns["scale"] = scale.tolist()
        slices.columns["truth_scale"] = truth_scale.tolist()
        pairs_array = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        attrs = provenance_attrs(spec, params={"size_px": size,
                                               "orientation": cfg["orientation"]},
                                 seed=int(cfg["seed"]))
        attrs.update(
            normalisation=json.dumps({
                "mode": cfg["normalisation"], "formula": "x = 2 * a / scale - 1",
                "inverse": "a = (x + 1) / 2 * scale",
                "activity": "reconstructed image / duration_s (relative, proportional to "
                            "Bq/mL)",
                "resampling": "linear, anti-aliased when shrinking; masks nearest"}),
            size_px=size, orientation=cfg["orientation"], dataset=spec["dataset"],
            acquisitions=json.dumps(spec["acquisitions"]), split_fractions=json.dumps(
                cfg["split_fractions"]))
        f.create_dataset("pairs", data=pairs_array)
        for name, dtype in COLUMNS.items():
            f.create_dataset(name, data=np.asarray(slices.columns[name], dtype=object
                                                   if dtype is h5py.string_dtype() else dtype),
                             dtype=dtype)
        for key, value in attrs.items():
            f.attrs[key] = value
    n_images = len(slices)
    with h5py.File(out_h5, "r") as f:  # the sheet reads its few rows back
        write_contact_sheet(png, f["images"], f["masks"], pairs_array, slices.columns,
                            f"{spec['dataset']}: {n_images} images, {len(pairs_array)} pairs",
                            overwrite)
    counts = {s: int(np.sum(np.asarray(slices.columns["split"]) == s))
              for s in ("train", "val", "test")}
    log.info("%s: %d images (%s), %d pairs", out_h5, n_images, counts, len(pairs_array))
    return {"images": n_images, "pairs": len(pairs_array), "splits": counts}
