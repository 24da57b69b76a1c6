"""List-mode files: the contract between every engine and the reconstruction (DESIGN.md).

``listmode/{phantom}/{acquisition}.h5``:

* group ``coincidences`` (prompts), one row per coincidence, columns :data:`COLUMNS`
  (``crystal1/2`` int32, ``time1/2_ns`` float64, ``energy1/2_kev`` float32, ``pos1/2_mm``
  (n, 3) float32, and the truth columns when the engine knows them);
* group ``delayed``: the delayed-window coincidences, same columns (randoms estimate);
* attributes: ``engine``, ``engine_version``, ``primaries`` (decays simulated),
  ``activity_bq``, ``duration_s``, ``scanner`` (JSON geometry), counts, the provenance
  attributes of :func:`pipeline.fileio.provenance_attrs`, and for simulated files the
  phantom's (``phantom_file``, ``phantom_name``, ``dataset``, ``phantom_grid`` JSON,
  ``phantom_config_sha256``; see :func:`acquisition_attrs`).

A column stored in another numeric type is read as the contract's type when no value
changes (whole floats such as ``12.0`` for a crystal id are accepted); fractions, NaN or
infinity in an integer column, values beyond a type's range, strings and wrong shapes are
refused, naming the file, the group and the column.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import values
from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5, provenance_attrs
from pipeline.provenance import Origin
from sim.scanner.geometry import Scanner

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
#: Free disk kept beyond each chunk (HDF5 metadata, the attributes written at the end).
DISK_MARGIN_BYTES = 16 << 20
REQUIRED_ATTRS = ("engine", "engine_version", "primaries", "activity_bq", "duration_s",
                  "scanner")
#: The ``format`` attribute of a coincidence histogram (:mod:`sim.listmode.histogram`).
HISTOGRAM_FORMAT = "coincidence histogram"


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

    def origin(self, path: str | Path) -> Origin:
        """What this file (read from ``path``) records for :mod:`pipeline.provenance`."""
        return Origin(f"list-mode file {path}", origin_fields(self.attrs, self.scanner, path))


def origin_fields(attrs: dict[str, Any], scanner: Scanner | None, path: str | Path
                  ) -> dict[str, Any]:
    """A list-mode file's provenance fields: the phantom it was simulated from (name,
    dataset, grid and ``config_sha256``, as :func:`acquisition_attrs` records them), the
    acquisition and the scanner geometry. Files from ``import-root`` or another tool record
    only some; the others are None (not checked)."""
    grid = attrs.get("phantom_grid")
    return {"phantom": attrs.get("phantom_name"), "dataset": attrs.get("dataset"),
            "acquisition": attrs.get("acquisition"),
            "phantom_grid": None if grid is None else values.json_field(
                str(path), "attribute phantom_grid", grid),
            "phantom_config_sha256": attrs.get("phantom_config_sha256"),
            "scanner": None if scanner is None else scanner.to_dict()}


def _check_columns(columns: dict, where: str) -> tuple[dict[str, np.ndarray], int]:
    """The columns cast to the contract's types (:data:`COLUMNS`), and their row count.

    Refused, naming ``where`` (file and group) and the column: a missing required or an
    unknown column, a wrong shape (a 1-D column stored 2-D, ``pos1_mm`` not 3 wide), rows
    that disagree, a stored type that cannot be cast without changing a value
    (:func:`pipeline.values.exact_cast`: fractions, NaN or infinity in an integer column,
    values beyond the type's range, strings; whole floats such as ``12.0`` in an integer
    column are accepted as the integers they are), NaN or infinity in a measured column,
    infinity in a truth column, and negative energies.
    """
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    n = None
    cast = {}
    for name, stored in columns.items():
        if name not in COLUMNS:
            raise ValueError(f"{where}: unknown column {name!r}")
        dtype, width = COLUMNS[name]
        array = np.asarray(stored)
        expected_ndim = 2 if width else 1
        if array.ndim != expected_ndim or (width and array.shape[1] != width):
            raise ValueError(f"{where}: column {name} has shape {array.shape}, expected "
                             f"{'(n, 3)' if width else '(n,)'}")
        if n is None:
            n = array.shape[0]
        elif array.shape[0] != n:
            raise ValueError(f"{where}: column {name} has {array.shape[0]} rows, others {n}")
        array = values.exact_cast(where, f"column {name}", array, dtype)
        # NaN times or positions reach the reconstruction as NaN voxels: the measured
        # columns are refused here, where every engine's writer and every reader passes.
        # (Truth columns may hold NaN: annihilation_mm of a random pairs two decays; an
        # infinity there is no position at all.)
        if name.startswith("energy"):
            values.in_range(where, f"column {name}", array, 0.0, unit="keV")
        elif name in REQUIRED:
            values.finite(where, f"column {name}", array)
        elif array.dtype.kind == "f" and np.isinf(array).any():
            raise ValueError(f"{where}: column {name} has {int(np.isinf(array).sum())} "
                             "infinite value(s) (NaN marks an unknown truth, infinity is "
                             "no position)")
        cast[name] = array
    return cast, int(n or 0)


def check_attrs(attrs: dict, where: str) -> None:
    """The acquisition's numbers: a positive finite activity and duration, a count."""
    missing = [a for a in REQUIRED_ATTRS if a not in attrs]
    if missing:
        raise ValueError(f"{where}: missing attribute(s) {', '.join(missing)}")
    for key, unit in (("activity_bq", "Bq"), ("duration_s", "s")):
        values.in_range(where, f"attribute {key}", values.vector(where, f"attribute {key}",
                                                                 attrs[key], 1),
                        0.0, exclusive_minimum=True, unit=unit)
    values.in_range(where, "attribute primaries",
                    values.vector(where, "attribute primaries", attrs["primaries"], 1), 0.0)


class ListModeWriter:
    """Write a list-mode file incrementally, atomically (a context manager).

    Columns are appended chunk by chunk to resizable, compressed datasets, so a long
    acquisition never holds all its coincidences in memory. The file appears under its name
    only when the block exits without error and with the required attributes set.

    Examples
    --------
    >>> with ListModeWriter(path) as out:                       # doctest: +SKIP
    ...     for prompts, delayed in chunks:
    ...         out.append(prompts, delayed)
    ...     out.attrs.update(engine="fast", ...)
    """

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self.attrs: dict[str, Any] = {}
        self._counts = dict.fromkeys(GROUPS, 0)

    def __enter__(self) -> ListModeWriter:
        self._atomic = atomic_output(self.path, self.overwrite)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        for group in GROUPS:
            g = self._file.create_group(group)
            for name, (dtype, width) in COLUMNS.items():
                tail = (width,) if width else ()
                g.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                 chunks=(65536, *tail), compression="gzip",
                                 compression_opts=4, shuffle=True)
        return self

    def append(self, coincidences: dict, delayed: dict) -> None:
        """Append one chunk of prompts and delayed coincidences (columns of :data:`COLUMNS`)."""
        # A full disk is refused before HDF5 meets it: HDF5's own write failure leaves its
        # file in a state whose clean-up can crash the interpreter (h5py 3, seen).
        chunk_bytes = sum(np.asarray(a).nbytes for t in (coincidences, delayed)
                          for a in t.values())
        free = shutil.disk_usage(self.path.parent).free
        if free < 2 * chunk_bytes + DISK_MARGIN_BYTES:
            raise OSError(errno.ENOSPC, f"no space left on the device ({free / 1e6:.1f} MB "
                          f"free; a chunk needs up to {chunk_bytes / 1e6:.1f} MB, and "
                          f"{DISK_MARGIN_BYTES >> 20} MB are kept for the file's metadata)",
                          str(self.path))
        # Both groups are checked before either is written: a refused chunk adds nothing.
        checked = {}
        for group, columns in (("coincidences", coincidences), ("delayed", delayed)):
            checked[group] = _check_columns(columns, f"{self.path} group {group}")
            missing = [c for c in COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"{self.path} group {group}: missing column(s) "
                                 f"{', '.join(missing)}")
        for group, (columns, n) in checked.items():
            start = self._counts[group]
            for name, array in columns.items():
                dataset = self._file[group][name]
                dataset.resize(start + n, axis=0)
                dataset[start:] = array
            self._counts[group] = start + n

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                check_attrs(self.attrs, str(self.path))
                for group in GROUPS:
                    self._file[group].attrs["count"] = self._counts[group]
                for key, value in self.attrs.items():
                    self._file.attrs[key] = value
        except BaseException:
            self._file.close()
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._file.close()
        self._atomic.__exit__(exc_type, exc, tb)


def write_listmode(path: str | Path, coincidences: dict, delayed: dict, attrs: dict,
                   overwrite: bool = False) -> Path:
    """Write a whole list-mode file at once (see :class:`ListModeWriter`)."""
    path = Path(path)
    check_attrs(attrs, str(path))  # before creating anything
    for group, columns in (("coincidences", coincidences), ("delayed", delayed)):
        _check_columns(columns, f"{path} group {group}")
    with ListModeWriter(path, overwrite) as out:
        out.append(coincidences, delayed)
        out.attrs.update(attrs)
    return path


def read_listmode(path: str | Path) -> ListMode:
    """Read and check a list-mode file; errors name the file, the group and the field.

    Columns come back in the contract's types (:data:`COLUMNS`) whatever the file stores,
    when the values survive the cast (see :func:`_check_columns`: ``12.0`` stored for a
    crystal id is read as 12, ``12.5`` is refused).
    """
    path = Path(path)
    with open_hdf5(path, "list-mode file") as f:
        attrs = decoded_attrs(f)
        if attrs.get("format") == HISTOGRAM_FORMAT:
            raise ValueError(f"{path}: a coincidence histogram (counts per crystal pair), not "
                             "list-mode events; this step needs the events (the statistical "
                             "engine writes them with simulation.statistical.output: listmode)")
        check_attrs(attrs, str(path))
        groups = {}
        for group in GROUPS:
            if not isinstance(f.get(group), h5py.Group):
                raise ValueError(f"{path}: missing group {group}")
            stored = {}
            for name, node in f[group].items():
                if not isinstance(node, h5py.Dataset):
                    raise ValueError(f"{path} group {group}: {name} is not a dataset")
                stored[name] = node[...]
            groups[group] = stored
    try:
        scanner = Scanner(**json.loads(attrs["scanner"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: attribute scanner is not a valid geometry ({exc})") from None
    for group in GROUPS:
        columns, _ = _check_columns(groups[group], f"{path} group {group}")
        groups[group] = columns
        for name in ("crystal1", "crystal2"):
            ids = columns[name]
            if ids.size and (ids.min() < 0 or ids.max() >= scanner.n_crystals):
                raise ValueError(f"{path} group {group}: column {name} has crystal ids outside "
                                 f"[0, {scanner.n_crystals}) of the file's scanner")
    return ListMode(groups["coincidences"], groups["delayed"], attrs, scanner)


def acquisition_attrs(spec: dict[str, Any], phantom_h5: str | Path,
                      params: dict[str, Any]) -> dict[str, Any]:
    """Attributes every engine writes for one simulated acquisition (besides its own).

    Provenance (:func:`pipeline.fileio.provenance_attrs` of the spec), the acquisition's activity,
    duration and half-life, the scanner JSON, and where the phantom came from: its path,
    name and dataset, and what the phantom file records of its grid (``phantom_grid``,
    JSON) and spec (``phantom_config_sha256``), so that a reconstruction given another
    phantom's file can tell (:mod:`pipeline.provenance`). Those two are left out when the
    engine ran without the HDF5 file (GATE 9 reads only its MetaImage copies).
    """
    from sim.phantoms.file import read_origin  # the list-mode readers do not need it

    phantom = read_origin(phantom_h5).fields if Path(phantom_h5).is_file() else {}
    acquisition = spec["acquisition"]
    scanner = Scanner.from_config(spec["scanner"])
    attrs = provenance_attrs(spec, params=params, seed=spec["seed"])
    attrs.update(
        activity_bq=float(acquisition["activity_bq"]),
        duration_s=float(acquisition["duration_s"]),
        half_life_s=float(acquisition["half_life_s"]), acquisition=acquisition["name"],
        scanner=json.dumps(scanner.to_dict(), sort_keys=True), phantom_file=str(phantom_h5),
        dataset=spec["dataset"], phantom_name=spec["phantom"],
    )
    if phantom.get("phantom_grid") is not None:
        attrs["phantom_grid"] = json.dumps(phantom["phantom_grid"], sort_keys=True)
    if phantom.get("phantom_config_sha256") is not None:
        attrs["phantom_config_sha256"] = phantom["phantom_config_sha256"]
    return attrs
