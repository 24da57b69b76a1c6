"""Coincidence histograms: the counts of every crystal pair, beside the list-mode contract.

At the counts of an inspection (10^8 to 10^9 coincidences) a list-mode file grows to
gigabytes, while the reconstruction without time of flight needs only how many prompts and
delayed coincidences each crystal pair recorded. A histogram file holds that, with a size
bounded by the number of crystal pairs whatever the counts (as the projection data of
STIR or CASToR's histogram format).

``{acquisition}.h5`` with attribute ``format = "coincidence histogram"``:

* group ``coincidences`` (prompts) and group ``delayed``, one row per crystal pair that
  recorded at least one coincidence, sorted by pair: ``crystal1`` < ``crystal2`` (int32,
  the scanner's crystal ids) and ``count`` (uint32, > 0);
* in ``coincidences``, when the engine knows them, ``trues``, ``scattered`` and ``randoms``
  (uint32): the pair's counts of each kind, summing to ``count``;
* the attributes of a list-mode file (:data:`sim.listmode.file.REQUIRED_ATTRS` and the
  acquisition's, :func:`sim.listmode.file.acquisition_attrs`), ``count`` on each group
  (the sum of its counts).

What a histogram cannot hold: times (so no time of flight), energies, interaction points
and the per-event truth (annihilation point, scatter orders).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import values
from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5
from pipeline.provenance import Origin
from sim.listmode.file import GROUPS, HISTOGRAM_FORMAT, check_attrs, origin_fields
from sim.scanner.geometry import Scanner

FORMAT = HISTOGRAM_FORMAT
#: Kinds of prompts counted apart (list-mode ``kind`` 0, 1, 2).
KINDS = ("trues", "scattered", "randoms")
#: Pair keys buffered before they are merged into the sorted counts.
BUFFER_PAIRS = 8_000_000


def pair_keys(crystal1: np.ndarray, crystal2: np.ndarray, n_crystals: int) -> np.ndarray:
    """One int64 key per unordered pair: ``min * n_crystals + max``."""
    a = np.asarray(crystal1, np.int64)
    b = np.asarray(crystal2, np.int64)
    return np.minimum(a, b) * n_crystals + np.maximum(a, b)


@dataclass
class PairCounts:
    """Counts per crystal pair, accumulated chunk by chunk.

    ``add`` buffers the chunk's pair keys; they are merged (sorted, equal keys summed) when
    the buffer holds :data:`BUFFER_PAIRS`, so memory stays about the number of distinct
    pairs. With ``by_kind`` each coincidence also gives its kind (0 true, 1 scattered,
    2 random) and the counts are kept per kind.
    """

    n_crystals: int
    by_kind: bool = False
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    _buffer: list = field(default_factory=list)
    _buffered: int = 0

    def add(self, crystal1: np.ndarray, crystal2: np.ndarray,
            kind: np.ndarray | None = None) -> None:
        """Count one chunk of coincidences (arrays of shape (n,))."""
        if self.by_kind and kind is None:
            raise ValueError("these counts are kept by kind: give each coincidence's kind")
        keys = pair_keys(crystal1, crystal2, self.n_crystals)
        kinds = (np.zeros(keys.size, np.int64) if kind is None
                 else np.asarray(kind, np.int64))
        if kinds.size and (kinds.min() < 0 or kinds.max() > 2):
            raise ValueError("coincidence kinds must be 0 (true), 1 (scattered) or 2 (random)")
        self._buffer.append((keys, kinds))
        self._buffered += keys.size
        if self._buffered >= BUFFER_PAIRS:
            self._merge()

    def _merge(self) -> None:
        if not self._buffer:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._buffer])
        kinds = np.concatenate([k for _, k in self._buffer])
        unique, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.ravel()
        counts = np.zeros((unique.size, 3), np.int64)
        for i in range(3):
            # Float weights are exact below 2^53 counts per pair.
            weights = np.concatenate([self.counts[:, i], kinds == i]).astype(np.float64)
            counts[:, i] = np.rint(np.bincount(inverse, weights=weights,
                                               minlength=unique.size)).astype(np.int64)
        self.keys, self.counts = unique, counts
        self._buffer, self._buffered = [], 0

    def columns(self) -> dict[str, np.ndarray]:
        """The histogram's columns: ``crystal1``, ``crystal2``, ``count`` and, by kind,
        ``trues``, ``scattered``, ``randoms``."""
        self._merge()
        crystal1, crystal2 = np.divmod(self.keys, self.n_crystals)
        out = {"crystal1": crystal1.astype(np.int32), "crystal2": crystal2.astype(np.int32),
               "count": self.counts.sum(axis=1).astype(np.uint32)}
        if self.by_kind:
            out.update({k: self.counts[:, i].astype(np.uint32) for i, k in enumerate(KINDS)})
        return out


@dataclass
class Histogram:
    """Content of a histogram file: the columns of each group, the attributes, the scanner."""

    coincidences: dict[str, np.ndarray]
    delayed: dict[str, np.ndarray]
    attrs: dict[str, Any]
    scanner: Scanner

    @property
    def prompts(self) -> int:
        return int(self.coincidences["count"].sum())

    def origin(self, path: str | Path) -> Origin:
        """What this file records for :mod:`pipeline.provenance`."""
        return Origin(f"histogram file {path}", origin_fields(self.attrs, self.scanner, path))


def _check_group(columns: dict[str, Any], where: str, n_crystals: int, truth: bool
                 ) -> dict[str, np.ndarray]:
    """The group's columns in the contract's types; refused naming ``where`` and the column."""
    required = ("crystal1", "crystal2", "count")
    allowed = required + (KINDS if truth else ())
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    unknown = [c for c in columns if c not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown column(s) {', '.join(unknown)}")
    present = [k for k in KINDS if k in columns]
    if present and len(present) != len(KINDS):
        raise ValueError(f"{where}: truth columns come together ({', '.join(KINDS)}); "
                         f"found only {', '.join(present)}")
    out, n = {}, None
    for name, stored in columns.items():
        array = np.asarray(stored)
        if array.ndim != 1:
            raise ValueError(f"{where}: column {name} has shape {array.shape}, expected (n,)")
        if n is None:
            n = array.shape[0]
        elif array.shape[0] != n:
            raise ValueError(f"{where}: column {name} has {array.shape[0]} rows, others {n}")
        dtype = np.int32 if name.startswith("crystal") else np.uint32
        out[name] = values.exact_cast(where, f"column {name}", array, dtype)
    for name in ("crystal1", "crystal2"):
        ids = out[name]
        if ids.size and (ids.min() < 0 or ids.max() >= n_crystals):
            raise ValueError(f"{where}: column {name} has crystal ids outside "
                             f"[0, {n_crystals}) of the file's scanner")
    if np.any(out["crystal1"] >= out["crystal2"]):
        raise ValueError(f"{where}: every row needs crystal1 < crystal2 (one row per pair)")
    keys = pair_keys(out["crystal1"], out["crystal2"], n_crystals)
    if np.any(np.diff(keys) <= 0):
        raise ValueError(f"{where}: rows must be sorted by pair, each pair once")
    if np.any(out["count"] == 0):
        raise ValueError(f"{where}: column count has rows of zero (pairs without "
                         "coincidences are left out)")
    if present:
        total = sum(out[k].astype(np.int64) for k in KINDS)
        if np.any(total != out["count"]):
            raise ValueError(f"{where}: columns {', '.join(KINDS)} do not add up to count")
    return out


def write_histogram(path: str | Path, prompts: PairCounts, delayed: PairCounts,
                    attrs: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a histogram file atomically (nothing appears under ``path`` on failure)."""
    path = Path(path)
    check_attrs(attrs, str(path))
    scanner = Scanner(**json.loads(attrs["scanner"]))
    groups = {"coincidences": prompts.columns(), "delayed": delayed.columns()}
    for group, columns in groups.items():
        _check_group(columns, f"{path} group {group}", scanner.n_crystals,
                     truth=group == "coincidences")
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        for group, columns in groups.items():
            g = f.create_group(group)
            for name, array in columns.items():
                g.create_dataset(name, data=array, compression="gzip", compression_opts=4,
                                 shuffle=True, chunks=(min(max(array.size, 1), 1 << 18),))
            g.attrs["count"] = int(columns["count"].sum())
        f.attrs.update(attrs)
        f.attrs["format"] = FORMAT
    return path


def is_histogram(path: str | Path) -> bool:
    """Whether ``path`` is a histogram file (else it is read as list-mode)."""
    with open_hdf5(Path(path), "list-mode or histogram file") as f:
        return f.attrs.get("format") in (FORMAT, FORMAT.encode())


def read_histogram(path: str | Path) -> Histogram:
    """Read and check a histogram file; errors name the file, the group and the column."""
    path = Path(path)
    with open_hdf5(path, "histogram file") as f:
        attrs = decoded_attrs(f)
        if attrs.get("format") != FORMAT:
            raise ValueError(f"{path}: not a histogram file (attribute format is "
                             f"{attrs.get('format')!r}, expected {FORMAT!r})")
        check_attrs(attrs, str(path))
        stored = {}
        for group in GROUPS:
            if not isinstance(f.get(group), h5py.Group):
                raise ValueError(f"{path}: missing group {group}")
            stored[group] = {}
            for name, node in f[group].items():
                if not isinstance(node, h5py.Dataset):
                    raise ValueError(f"{path} group {group}: {name} is not a dataset")
                stored[group][name] = node[...]
    try:
        scanner = Scanner(**json.loads(attrs["scanner"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: attribute scanner is not a valid geometry ({exc})") from None
    groups = {g: _check_group(stored[g], f"{path} group {g}", scanner.n_crystals,
                              truth=g == "coincidences") for g in GROUPS}
    return Histogram(groups["coincidences"], groups["delayed"], attrs, scanner)
