"""Reconstructed image files: HDF5 (the DESIGN.md contract), a NIfTI copy and a PNG.

``recon/{phantom}/{acquisition}.h5``: dataset ``image`` (z, y, x float32), dataset
``loglik`` (one value per iteration), dataset ``plane_counts`` (coincidences per plane:
rebinned counts in 2D, events by the z of their LOR midpoint in 3D), attributes
``voxel_size_mm`` and ``origin_mm``
(z, y, x; origin = centre of voxel 0, the phantom file's convention), ``algorithm``,
``iterations``, ``subsets``, ``units``, the acquisition's ``activity_bq`` and ``duration_s``,
provenance, and the phantom the events came from (``phantom_name``, ``dataset``,
``phantom_grid`` JSON, ``phantom_config_sha256``, as the list-mode file records them;
:meth:`ReconImage.origin`). The NIfTI copy
(``.nii.gz``, nibabel) stores the array as (x, y, z) with an affine from voxel indices to
scanner millimetres (the scanner frame taken as NIfTI's world frame), so standard viewers
show it at its physical place. All files are written atomically.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import values
from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5  # noqa: E402
from pipeline.provenance import Origin  # noqa: E402
from recon.grid import ImageGrid  # noqa: E402


@dataclass
class ReconImage:
    """A reconstructed image read back; ``image`` is (z, y, x)."""

    image: np.ndarray
    grid: ImageGrid
    loglik: np.ndarray
    plane_counts: np.ndarray
    attrs: dict[str, Any]

    def origin(self, path: str | Path) -> Origin:
        """What this reconstruction (read from ``path``) records for
        :mod:`pipeline.provenance`: the phantom (name, dataset, grid, ``config_sha256``, as
        the list-mode file recorded them), the acquisition and the scanner geometry. A field
        not recorded (an older file) is None and not checked."""
        where = str(path)

        def decoded(key: str) -> Any:
            text = self.attrs.get(key)
            return None if text is None else values.json_field(where, f"attribute {key}", text)

        return Origin(f"reconstruction {path}", {
            "phantom": self.attrs.get("phantom_name"), "dataset": self.attrs.get("dataset"),
            "acquisition": self.attrs.get("acquisition"),
            "phantom_grid": decoded("phantom_grid"),
            "phantom_config_sha256": self.attrs.get("phantom_config_sha256"),
            "scanner": decoded("scanner")})


def nifti_affine(grid: ImageGrid) -> np.ndarray:
    """4 x 4 affine from (i, j, k) = (x, y, z) voxel indices to scanner (x, y, z) mm."""
    affine = np.eye(4)
    affine[:3, :3] = np.diag(grid.voxel_size_mm[::-1])
    affine[:3, 3] = grid.origin_mm[::-1]
    return affine


def write_nifti(path: str | Path, image: np.ndarray, grid: ImageGrid,
                overwrite: bool = False) -> Path:
    """Write a (z, y, x) image as NIfTI-1 (x, y, z), mm units."""
    img = nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32),
                          nifti_affine(grid))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)  # scanner-based coordinates
    img.header.set_sform(img.affine, code=1)
    path = Path(path)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6))
    return path


def write_preview(path: str | Path, image: np.ndarray, grid: ImageGrid, title: str,
                  overwrite: bool = False) -> Path:
    """PNG of the central transaxial, coronal and sagittal slices (mm axes)."""
    lo, hi = grid.lower_mm, grid.upper_mm
    nz, ny, nx = image.shape
    views = [(image[nz // 2], [lo[2], hi[2], lo[1], hi[1]], "x (mm)", "y (mm)", "transaxial"),
             (image[:, ny // 2], [lo[2], hi[2], lo[0], hi[0]], "x (mm)", "z (mm)", "coronal"),
             (image[:, :, nx // 2], [lo[1], hi[1], lo[0], hi[0]], "y (mm)", "z (mm)",
              "sagittal")]
    vmax = float(image.max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, (data, extent, xl, yl, name) in zip(axes, views, strict=True):
        shown = ax.imshow(data, origin="lower", extent=extent, cmap="gray_r", vmin=0,
                          vmax=vmax, aspect="equal")
        ax.set(xlabel=xl, ylabel=yl, title=name)
    fig.colorbar(shown, ax=axes, shrink=0.8)
    fig.suptitle(title)
    path = Path(path)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def write_recon(path: str | Path, image: np.ndarray, grid: ImageGrid, loglik: list[float],
                attrs: dict[str, Any], plane_counts: np.ndarray | None = None,
                overwrite: bool = False) -> Path:
    """Write the HDF5 image file (module docstring); ``plane_counts`` (nz,) are the
    coincidences that went into each plane."""
    if image.shape != grid.shape:
        raise ValueError(f"image shape {image.shape} does not match the grid {grid.shape}")
    path = Path(path)
    # A NaN or negative voxel means a broken reconstruction: no file that looks complete.
    values.in_range(str(path), "image", image, 0.0)
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image.astype(np.float32), compression="gzip",
                         compression_opts=4, shuffle=True)
        f.create_dataset("loglik", data=np.asarray(loglik, dtype=np.float64))
        counts = np.zeros(grid.shape[0]) if plane_counts is None else plane_counts
        f.create_dataset("plane_counts", data=np.asarray(counts, dtype=np.float64))
        f.attrs["axes"] = "zyx"
        for key, value in grid.to_attrs().items():
            f.attrs[key] = value
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def read_recon(path: str | Path) -> ReconImage:
    """Read a reconstructed image file; errors name the file and the field."""
    path = Path(path)
    with open_hdf5(path, "reconstruction file") as f:
        if "image" not in f:
            raise ValueError(f"{path}: missing dataset image")
        image = f["image"][...]
        if image.ndim != 3:
            raise ValueError(f"{path}: dataset image has shape {image.shape}, expected (z, y, x)")
        attrs = decoded_attrs(f)
        for key in ("voxel_size_mm", "origin_mm"):
            if key not in attrs:
                raise ValueError(f"{path}: missing attribute {key}")
        loglik = f["loglik"][...] if "loglik" in f else np.zeros(0)
        plane_counts = (f["plane_counts"][...] if "plane_counts" in f
                        else np.full(image.shape[0], np.nan))
    where = str(path)
    # Activity: finite and not negative (a NaN voxel would flow on into the image sets).
    values.in_range(where, "dataset image", image, 0.0)
    voxel = values.vector(where, "attribute voxel_size_mm", attrs["voxel_size_mm"], 3,
                          positive=True, unit="mm")
    origin = values.vector(where, "attribute origin_mm", attrs["origin_mm"], 3)
    grid = ImageGrid(image.shape, tuple(voxel.tolist()), tuple(origin.tolist()))
    return ReconImage(image, grid, loglik, plane_counts, attrs)
