"""Readers of real CT collections: DeepLesion PNG series, DICOM series and NIfTI volumes.

Every reader returns :class:`CTSlices`: axial slices in Hounsfield units, each with the
series it comes from (the unit of the train/val/test split) and its pixel size. Slices are
in the radiological display orientation of DICOM and DeepLesion: row 0 anterior (rows grow
towards the patient's back), column 0 at the patient's right (columns grow towards the left).

* DeepLesion (Yan et al. 2018): ``Images_png/{patient}_{study}_{series}/{slice:03d}.png``,
  16-bit PNG with ``HU = value - 32768``; an optional ``DL_info.csv`` (beside the series
  folders or one level up) gives each series' pixel spacing (``Spacing_mm_px_``) and the
  lesion boxes of the key slices (``Bounding_boxes``, ``x1, y1, x2, y2`` in pixels).
* DICOM: every file below a folder, grouped by ``SeriesInstanceUID`` and sorted by slice
  position (``ImagePositionPatient`` along the slice normal, else ``InstanceNumber``);
  ``HU = pixel * RescaleSlope + RescaleIntercept``; rows and columns are flipped when
  ``ImageOrientationPatient`` points the other way, so every slice ends in display
  orientation.
* NIfTI: a ``.nii``/``.nii.gz`` file or a folder of them, reoriented to RAS+ with nibabel
  (``as_closest_canonical``), each z plane turned to display orientation.

Errors name the file or folder: a missing or empty folder, a PNG that is not 16-bit, a file
that is not DICOM, a NIfTI file nibabel cannot read.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import values

#: DeepLesion stores HU + 32768 in unsigned 16-bit PNGs.
DEEPLESION_OFFSET = 32768


@dataclass
class CTSlices:
    """Axial CT slices read from one source.

    Attributes
    ----------
    hu : list of numpy.ndarray
        2D float32 slices in HU (rows, columns), display orientation.
    series : list of str
        Series id of each slice.
    pixel_mm : list of float
        In-plane pixel size of each slice, mm (NaN when the source does not say).
    lesion_boxes : list of list
        Lesion bounding boxes ``[x1, y1, x2, y2]`` (columns, rows; pixels of the slice) known
        for each slice (DeepLesion's key slices), else empty.
    """

    hu: list[np.ndarray] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    pixel_mm: list[float] = field(default_factory=list)
    lesion_boxes: list[list[list[float]]] = field(default_factory=list)

    def add(self, hu: np.ndarray, series: str, pixel_mm: float,
            lesion_boxes: list[list[float]] | None = None) -> None:
        self.hu.append(np.asarray(hu, dtype=np.float32))
        self.series.append(series)
        self.pixel_mm.append(float(pixel_mm))
        self.lesion_boxes.append(lesion_boxes or [])

    def __len__(self) -> int:
        return len(self.hu)


def _existing_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir() and not any(path.iterdir()):
        raise ValueError(f"{what} {path} is empty")
    return path


def _full(slices: CTSlices, limit: int | None) -> bool:
    return limit is not None and len(slices) >= limit


# ---------------------------------------------------------------------- DeepLesion
def read_png16(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG as uint16; anything else is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.array(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable PNG ({exc})") from None
    if mode not in ("I;16", "I;16B", "I;16L", "I") or array.ndim != 2:
        raise ValueError(f"{path}: {mode} PNG, but DeepLesion slices are 16-bit grayscale "
                         "(HU + 32768); was the collection converted to 8 bits?")
    return array.astype(np.uint16) if array.dtype != np.uint16 else array


def _deeplesion_info(root: Path) -> tuple[dict[str, float], dict[str, list[list[float]]]]:
    """Pixel spacing per series and lesion boxes per slice file from ``DL_info.csv``."""
    for candidate in (root / "DL_info.csv", root.parent / "DL_info.csv"):
        if candidate.is_file():
            spacing: dict[str, float] = {}
            boxes: dict[str, list[list[float]]] = {}
            with open(candidate, newline="") as fh:
                for row in csv.DictReader(fh):
                    name = row.get("File_name", "")
                    series, png = name.rsplit("_", 1) if "_" in name else (name, "")
                    try:
                        spacing[series] = float(row["Spacing_mm_px_"].split(",")[0])
                        if row.get("Bounding_boxes"):
                            box = [float(v) for v in row["Bounding_boxes"].split(",")]
                            boxes.setdefault(f"{series}/{png}", []).append(box[:4])
                    except (KeyError, ValueError, IndexError):
                        raise ValueError(f"{candidate}: row for {name!r} has no readable "
                                         "Spacing_mm_px_ or Bounding_boxes") from None
            return spacing, boxes
    return {}, {}


def read_deeplesion(folder: str | Path, limit: int | None = None) -> CTSlices:
    """Read DeepLesion series folders (module docstring), at most ``limit`` slices."""
    root = _existing_folder(Path(folder), "DeepLesion folder")
    if (root / "Images_png").is_dir():
        root = root / "Images_png"
    series_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not series_dirs:
        raise ValueError(f"DeepLesion folder {root} holds no series folders "
                         "({patient}_{study}_{series}/)")
    spacing, boxes = _deeplesion_info(root)
    out = CTSlices()
    for series_dir in series_dirs:
        pngs = sorted(series_dir.glob("*.png"))
        if not pngs:
            raise ValueError(f"DeepLesion series folder {series_dir} holds no PNG slices")
        for png in pngs:
            if _full(out, limit):
                return out
            hu = read_png16(png).astype(np.int32) - DEEPLESION_OFFSET
            out.add(hu, series_dir.name, spacing.get(series_dir.name, float("nan")),
                    boxes.get(f"{series_dir.name}/{png.name}"))
    return out


# ---------------------------------------------------------------------- DICOM
def read_dicom(folder: str | Path, limit: int | None = None) -> CTSlices:
    """Read every DICOM image below a folder (module docstring)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = _existing_folder(Path(folder), "DICOM folder")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    by_series: dict[str, list] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable DICOM file ({exc})") from None
        if "PixelData" not in ds:
            continue  # DICOMDIR, structured reports
        by_series.setdefault(str(ds.get("SeriesInstanceUID", root.name)), []).append((path, ds))
    if not by_series:
        raise ValueError(f"DICOM folder {root} holds no DICOM images")
    out = CTSlices()
    for uid, items in sorted(by_series.items()):
        _check_series(items)
        items.sort(key=lambda item: _slice_position(item[1]))
        for path, ds in items:
            if _full(out, limit):
                return out
            try:
                pixels = ds.pixel_array.astype(np.float32)
            except Exception as exc:  # noqa: BLE001 - pydicom raises many types here
                raise ValueError(f"{path}: pixel data cannot be decoded ({exc})") from None
            hu = pixels * float(ds.get("RescaleSlope", 1.0)) + float(ds.get("RescaleIntercept",
                                                                           0.0))
            values.finite(str(path), "pixel data (HU)", hu)
            hu = _to_display(hu, ds)
            spacing = ds.get("PixelSpacing", None)
            pixel_mm = float("nan") if spacing is None else float(values.in_range(
                str(path), "PixelSpacing (mm)", [float(v) for v in spacing], 0.0,
                exclusive_minimum=True)[0])
            out.add(hu, uid, pixel_mm)
    return out


def _check_series(items: list) -> None:
    """One series is one CT volume: the same modality (CT) and slice size throughout."""
    first_path, first = items[0]
    for path, ds in items:
        modality = str(ds.get("Modality", "CT"))
        if modality != "CT":
            raise ValueError(f"{path}: Modality is {modality!r}, not CT")
        shape = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        expected = (int(first.get("Rows", 0)), int(first.get("Columns", 0)))
        if shape != expected:
            raise ValueError(f"{path}: Rows x Columns {shape[0]} x {shape[1]} differ from "
                             f"{expected[0]} x {expected[1]} of {first_path.name} in the same "
                             "series")


def _slice_position(ds) -> float:
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        row, col = np.asarray(ds.ImageOrientationPatient[:3]), np.asarray(
            ds.ImageOrientationPatient[3:])
        return float(np.dot(np.cross(row, col), np.asarray(ds.ImagePositionPatient, float)))
    return float(ds.get("InstanceNumber", 0))


def _to_display(hu: np.ndarray, ds) -> np.ndarray:
    """Flip so that columns run towards the patient's left (+x in DICOM's LPS) and rows
    towards the back (+y)."""
    if "ImageOrientationPatient" not in ds:
        return hu
    row_dir = np.asarray(ds.ImageOrientationPatient[:3], float)
    col_dir = np.asarray(ds.ImageOrientationPatient[3:], float)
    if row_dir[0] < 0:
        hu = hu[:, ::-1]
    if col_dir[1] < 0:
        hu = hu[::-1, :]
    return np.ascontiguousarray(hu)


# ---------------------------------------------------------------------- NIfTI
def read_nifti(path: str | Path, limit: int | None = None) -> CTSlices:
    """Read a NIfTI volume, or every volume in a folder (module docstring)."""
    import nibabel as nib

    source = _existing_folder(Path(path), "NIfTI path")
    files = ([source] if source.is_file() else
             sorted(p for p in source.iterdir() if p.name.endswith((".nii", ".nii.gz"))))
    if not files:
        raise ValueError(f"NIfTI folder {source} holds no .nii or .nii.gz file")
    out = CTSlices()
    for file in files:
        try:
            loaded = nib.load(str(file))
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types here
            raise ValueError(f"{file}: not a readable NIfTI file ({exc})") from None
        # A zero, singular or NaN affine has no orientation to reorient by ("SVD did not
        # converge" otherwise).
        affine = values.finite(str(file), "affine", np.asarray(loaded.affine, float))
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"{file}: affine is singular (zero voxel size or collinear "
                             "axes): no orientation")
        try:
            image = nib.as_closest_canonical(loaded)
            data = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types here
            raise ValueError(f"{file}: not a readable NIfTI file ({exc})") from None
        values.finite(str(file), "voxel data", data)
        if data.ndim == 4:
            data = data[..., 0]
        if data.ndim != 3:
            raise ValueError(f"{file}: expected a 3D volume, got shape {data.shape}")
        pixel_mm = float(image.header.get_zooms()[0])
        for k in range(data.shape[2]):
            if _full(out, limit):
                return out
            # RAS+ (x to the right, y to the front) -> display: rows to the back, columns to
            # the patient's left.
            out.add(data[::-1, ::-1, k].T, file.name, pixel_mm)
    return out
