"""List-mode files: the contract between every engine and the reconstruction (DESIGN.md).

``listmode/{phantom}/{acquisition}.h5``:

* group ``coincidences`` (prompts), one row per coincidence, columns :data:`COLUMNS`
  (``crystal1/2`` int32, ``time1/2_ns`` float64, ``energy1/2_kev`` float32, ``pos1/2_mm``
  (n, 3) float32, and the truth columns when the engine knows them);
* group ``delayed``: the delayed-window coincidences, same columns (randoms estimate);
* attributes: ``engine``, ``engine_version``, ``primaries`` (decays simulated),
  ``activity_bq``, ``duration_s``, ``scanner`` (JSON geometry), counts, and the provenance
  attributes of :func:`sim.fileio.provenance_attrs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sim.fileio import atomic_output, decoded_attrs, open_hdf5
from sim.scanner import Scanner

#: Column -> (dtype, columns per row; 0 for 1-D); the first eight are required.
COLUMNS: dict[str, tuple[type, int]] = {
    "crystal1": (np.int32, 0),
    "crystal2": (np.int32, 0),
    "time1_ns": (np.float64, 0),
    "time2_ns": (np.float64, 0),
    "energy1_kev": (np.float32, 0),
    "energy2_kev": (np.float32, 0),
    "pos1_mm": (np.float32, 3),
    "pos2_mm": (np.float32, 3),
    "event1": (np.int64, 0),
    "event2": (np.int64, 0),
    "annihilation_mm": (np.float32, 3),
    "compton_phantom1": (np.uint8, 0),
    "compton_phantom2": (np.uint8, 0),
    "rayleigh_phantom1": (np.uint8, 0),
    "rayleigh_phantom2": (np.uint8, 0),
    "kind": (np.uint8, 0),
}
REQUIRED = tuple(COLUMNS)[:8]
GROUPS = ("coincidences", "delayed")
REQUIRED_ATTRS = ("engine", "engine_version", "primaries", "activity_bq", "duration_s",
                  "scanner")


@dataclass
class ListMode:
    """Content of a list-mode file.

    Attributes
    ----------
    coincidences, delayed : dict of str -> numpy.ndarray
        Columns of the prompts and of the delayed window.
    attrs : dict
    scanner : Scanner
        Geometry the crystal ids refer to.
    """

    coincidences: dict[str, np.ndarray]
    delayed: dict[str, np.ndarray]
    attrs: dict[str, Any]
    scanner: Scanner

    def __len__(self) -> int:
        return int(self.coincidences["crystal1"].shape[0])


def _check_columns(columns: dict, where: str) -> int:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    n = None
    for name, array in columns.items():
        if name not in COLUMNS:
            raise ValueError(f"{where}: unknown column {name!r}")
        width = COLUMNS[name][1]
        expected_ndim = 2 if width else 1
        if array.ndim != expected_ndim or (width and array.shape[1] != width):
            raise ValueError(f"{where}: column {name} has shape {array.shape}, expected "
                             f"{'(n, 3)' if width else '(n,)'}")
        if n is None:
            n = array.shape[0]
        elif array.shape[0] != n:
            raise ValueError(f"{where}: column {name} has {array.shape[0]} rows, others {n}")
    return int(n or 0)


def write_listmode(path: str | Path, coincidences: dict, delayed: dict, attrs: dict,
                   overwrite: bool = False) -> Path:
    """Write a list-mode file atomically (see the module docstring for the layout)."""
    path = Path(path)
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"{path}: missing attribute(s) {', '.join(missing)}")
    for group, columns in (("coincidences", coincidences), ("delayed", delayed)):
        _check_columns(columns, f"{path} group {group}")
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        for group, columns in (("coincidences", coincidences), ("delayed", delayed)):
            g = f.create_group(group)
            for name, array in columns.items():
                dtype = COLUMNS[name][0]
                data = np.ascontiguousarray(array, dtype=dtype)
                if data.shape[0] == 0:  # HDF5 chunks cannot be empty
                    g.create_dataset(name, data=data)
                    continue
                chunks = (min(data.shape[0], 65536),) + data.shape[1:]
                g.create_dataset(name, data=data, chunks=chunks, compression="gzip",
                                 compression_opts=4, shuffle=True)
            g.attrs["count"] = int(columns["crystal1"].shape[0])
        for key, value in attrs.items():
            f.attrs[key] = value
    return path


def read_listmode(path: str | Path) -> ListMode:
    """Read and check a list-mode file; errors name the file and the field."""
    path = Path(path)
    with open_hdf5(path, "list-mode file") as f:
        attrs = decoded_attrs(f)
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise ValueError(f"{path}: missing attribute(s) {', '.join(missing)}")
        groups = {}
        for group in GROUPS:
            if group not in f:
                raise ValueError(f"{path}: missing group {group}")
            groups[group] = {name: f[group][name][...] for name in f[group]}
    try:
        scanner = Scanner(**json.loads(attrs["scanner"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: attribute scanner is not a valid geometry ({exc})") from None
    for group, columns in groups.items():
        _check_columns(columns, f"{path} group {group}")
        for name in ("crystal1", "crystal2"):
            ids = columns[name]
            if ids.size and (ids.min() < 0 or ids.max() >= scanner.n_crystals):
                raise ValueError(f"{path} group {group}: column {name} has crystal ids outside "
                                 f"[0, {scanner.n_crystals}) of the file's scanner")
    return ListMode(groups["coincidences"], groups["delayed"], attrs, scanner)
