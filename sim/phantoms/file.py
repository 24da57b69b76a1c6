"""Phantom files: the HDF5 contract of DESIGN.md, plus the MetaImage copies GATE reads.

``phantoms/{phantom}.h5``:

* datasets (z, y, x): ``material`` (uint8 global material id, see ``materials`` attr),
  ``activity`` (float32 relative activity per voxel, sums to 1), ``mu511`` (float32, 1/mm),
  ``labels`` (uint8 defect number, 0 = none);
* attributes: ``voxel_size_mm`` and ``origin_mm`` (z, y, x; origin = centre of voxel 0),
  ``materials`` (JSON: id -> name, density, composition, mu511, GATE and Geant4 names),
  ``defects`` (JSON list; ``label`` is the value in ``labels``), ``phantom`` (JSON model
  description), ``material_volume_mm3`` (JSON), and the provenance attributes of
  :func:`pipeline.fileio.provenance_attrs`.

``phantoms/{phantom}_materials.mhd/.raw`` (uint8 ids), ``{phantom}_activity.mhd/.raw``
(float32) and ``{phantom}_materials.txt`` (GATE range table ``id id Name``) for GATE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import values
from pipeline.fileio import atomic_output_set, decoded_attrs, open_hdf5
from pipeline.provenance import Origin
from sim.phantoms.families import PhantomModel
from sim.phantoms.materials import MATERIALS
from sim.phantoms.metaimage import write_mhd
from sim.phantoms.voxelise import MATERIAL_IDS, VoxelisedPhantom

IMAGE_DATASETS = {"material": np.uint8, "activity": np.float32, "mu511": np.float32,
                  "labels": np.uint8}


@dataclass
class PhantomData:
    """A phantom read back from its HDF5 file; arrays are (z, y, x)."""

    material: np.ndarray
    activity: np.ndarray
    mu511_per_mm: np.ndarray
    labels: np.ndarray | None  # None when the file has no labels dataset
    voxel_size_mm: np.ndarray
    origin_mm: np.ndarray
    materials: dict[int, dict[str, Any]]
    defects: list[dict[str, Any]]
    description: dict[str, Any]
    attrs: dict[str, Any]

    def origin(self, path: str | Path) -> Origin:
        """What this phantom (read from ``path``) records for :mod:`pipeline.provenance`."""
        return Origin(f"phantom file {path}", origin_fields(
            self.attrs, self.material.shape, self.voxel_size_mm, self.origin_mm))


def origin_fields(attrs: dict[str, Any], shape: tuple[int, ...], voxel_size_mm: Any,
                  origin_mm: Any) -> dict[str, Any]:
    """A phantom's provenance fields (:mod:`pipeline.provenance`): ``phantom`` and
    ``dataset`` (None for a phantom made outside the pipeline), ``phantom_grid`` (shape,
    voxel size and origin, z, y, x) and ``phantom_config_sha256``. The list-mode files
    simulated from the phantom record the same fields (:func:`sim.listmode.file.
    acquisition_attrs`)."""
    return {"phantom": attrs.get("phantom_name"), "dataset": attrs.get("dataset"),
            "phantom_grid": {"shape": [int(n) for n in shape],
                             "voxel_size_mm": [float(v) for v in np.ravel(voxel_size_mm)],
                             "origin_mm": [float(v) for v in np.ravel(origin_mm)]},
            "phantom_config_sha256": attrs.get("config_sha256")}


def read_origin(path: str | Path) -> Origin:
    """A phantom file's provenance fields (:func:`origin_fields`) from its attributes and
    the shape of its ``material`` dataset only (no image is read)."""
    path = Path(path)
    with open_hdf5(path, "phantom file") as f:
        attrs = decoded_attrs(f)
        shape = f["material"].shape if isinstance(f.get("material"), h5py.Dataset) else None
    if shape is None or "voxel_size_mm" not in attrs or "origin_mm" not in attrs:
        raise ValueError(f"{path}: not a phantom file (no material dataset, voxel_size_mm or "
                         "origin_mm)")
    where = str(path)
    return Origin(f"phantom file {path}", origin_fields(
        attrs, shape, values.vector(where, "attribute voxel_size_mm", attrs["voxel_size_mm"],
                                    3, positive=True, unit="mm"),
        values.vector(where, "attribute origin_mm", attrs["origin_mm"], 3)))


def read_defects(path: str | Path) -> list[dict[str, Any]]:
    """A phantom file's ``defects`` records (attribute only: no image is read)."""
    path = Path(path)
    with open_hdf5(path, "phantom file") as f:
        if "defects" not in f.attrs:
            raise ValueError(f"{path}: missing attribute defects")
        attrs = decoded_attrs(f)
    return _defect_records(str(path), attrs["defects"])


def _defect_records(where: str, text: Any) -> list[dict[str, Any]]:
    defects = values.json_field(where, "attribute defects", text)
    if not isinstance(defects, list) or not all(isinstance(d, dict) for d in defects):
        raise ValueError(f"{where}: attribute defects must be a JSON list of records")
    return defects


def material_table(material_ids: np.ndarray) -> dict[int, dict[str, Any]]:
    """Description of every material id present in an image."""
    names = list(MATERIALS)
    return {int(i): MATERIALS[names[int(i)]].describe() for i in np.unique(material_ids)}


def gate_range_table(materials: dict[int, dict[str, Any]]) -> str:
    """GATE 9 material range file: count, then ``first last GateName`` per id."""
    lines = [str(len(materials))]
    lines += [f"{i} {i} {m['gate_name']}" for i, m in sorted(materials.items())]
    return "\n".join(lines) + "\n"


def gate_files(phantom_h5: str | Path) -> dict[str, Path]:
    """The GATE copies :func:`write_phantom` puts beside a phantom file.

    Returns
    -------
    dict
        ``materials`` (uint8 id image, .mhd), ``range_table`` (.txt) and ``activity``
        (float32 relative activity, .mhd).

    Raises
    ------
    FileNotFoundError
        Naming the first file that is missing.
    """
    stem = Path(phantom_h5).with_suffix("")
    files = {
        "materials": Path(f"{stem}_materials.mhd"),
        "range_table": Path(f"{stem}_materials.txt"),
        "activity": Path(f"{stem}_activity.mhd"),
    }
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GATE copy of phantom {Path(phantom_h5).name} not "
                                    "found (the phantom stage writes it beside the .h5 file)")
    return files


def write_phantom(
    h5_path: str | Path,
    vox: VoxelisedPhantom,
    model: PhantomModel,
    attrs: dict[str, Any],
    overwrite: bool = False,
) -> list[Path]:
    """Write the HDF5 file and the GATE MetaImage copies, as one set (none of them appears
    unless all are written); returns the paths written."""
    h5_path = Path(h5_path)
    stem = h5_path.with_suffix("")
    grid = model.grid
    materials = material_table(vox.material)
    names = [f"{stem.name}{suffix}" for suffix in (
        "_materials.mhd", "_materials.raw", "_activity.mhd", "_activity.raw", "_materials.txt")]
    outputs = [h5_path.with_name(n) for n in names] + [h5_path]
    with atomic_output_set(outputs, overwrite) as staging:
        for suffix, array in (("_materials", vox.material), ("_activity", vox.activity)):
            write_mhd(staging / f"{stem.name}{suffix}.mhd", array, grid.voxel_size_mm,
                      grid.origin_mm)
        (staging / f"{stem.name}_materials.txt").write_text(gate_range_table(materials))
        with h5py.File(staging / h5_path.name, "w") as f:
            for name, array in (("material", vox.material), ("activity", vox.activity),
                                ("mu511", vox.mu511_per_mm), ("labels", vox.labels)):
                f.create_dataset(name, data=array.astype(IMAGE_DATASETS[name]),
                                 compression="gzip", compression_opts=4, shuffle=True)
            f["mu511"].attrs["units"] = "1/mm"
            f["activity"].attrs["units"] = "fraction of the phantom's activity"
            f.attrs["axes"] = "zyx"
            f.attrs["voxel_size_mm"] = np.asarray(grid.voxel_size_mm, dtype=np.float64)
            f.attrs["origin_mm"] = grid.origin_mm
            f.attrs["materials"] = json.dumps(materials, sort_keys=True)
            f.attrs["material_ids"] = json.dumps(MATERIAL_IDS)
            f.attrs["defects"] = json.dumps(model.defects, sort_keys=True)
            f.attrs["phantom"] = json.dumps(model.description, sort_keys=True)
            f.attrs["material_volume_mm3"] = json.dumps(vox.material_volume_mm3, sort_keys=True)
            for key, value in attrs.items():
                f.attrs[key] = value
    return outputs


def read_phantom(path: str | Path) -> PhantomData:
    """Read and check a phantom file; errors name the file and the field."""
    path = Path(path)
    with open_hdf5(path, "phantom file") as f:
        # Labels are optional (a user's own part may come without): what needs them says so.
        missing = [n for n in IMAGE_DATASETS if n not in f and n != "labels"]
        if missing:
            raise ValueError(f"{path}: missing dataset(s) {', '.join(missing)}")
        arrays = {n: f[n][...] for n in IMAGE_DATASETS if n in f}
        shape = arrays["material"].shape
        for name, array in arrays.items():
            if array.ndim != 3 or array.shape != shape:
                raise ValueError(
                    f"{path}: dataset {name} has shape {array.shape}, expected {shape}"
                )
        for key in ("voxel_size_mm", "origin_mm", "materials", "defects", "phantom"):
            if key not in f.attrs:
                raise ValueError(f"{path}: missing attribute {key}")
        attrs = decoded_attrs(f)
    where = str(path)
    # Physical quantities: floats, finite, not negative (a NaN mu map hangs the transport; a
    # negative or integer one silently removes the attenuation).
    values.in_range(where, "dataset mu511 (1/mm)",
                    values.float_array(where, "dataset mu511", arrays["mu511"]), 0.0)
    activity = values.in_range(where, "dataset activity",
                               values.float_array(where, "dataset activity",
                                                  arrays["activity"]), 0.0)
    if not activity.any():
        raise ValueError(f"{path}: dataset activity is zero everywhere: nothing to image")
    voxel_size_mm = values.vector(where, "attribute voxel_size_mm", attrs["voxel_size_mm"], 3,
                                  positive=True, unit="mm")
    origin_mm = values.vector(where, "attribute origin_mm", attrs["origin_mm"], 3)
    table = values.json_field(where, "attribute materials", attrs["materials"])
    try:
        materials = {int(k): dict(v) for k, v in dict(table).items()}
        names_ok = all(isinstance(v.get("name"), str) for v in materials.values())
    except (TypeError, ValueError):
        names_ok = False
    if not names_ok:
        raise ValueError(f"{path}: attribute materials must map material ids to records "
                         "with a name")
    unknown = np.setdiff1d(np.unique(arrays["material"]), list(materials))
    if unknown.size:
        raise ValueError(f"{path}: dataset material has id(s) {unknown.tolist()[:5]} missing "
                         "from attribute materials")
    defects = _defect_records(where, attrs["defects"])
    return PhantomData(
        material=arrays["material"],
        activity=arrays["activity"],
        mu511_per_mm=arrays["mu511"],
        labels=arrays.get("labels"),
        voxel_size_mm=voxel_size_mm,
        origin_mm=origin_mm,
        materials=materials,
        defects=defects,
        description=values.json_field(where, "attribute phantom", attrs["phantom"]),
        attrs=attrs,
    )
