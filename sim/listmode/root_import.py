"""Convert GATE coincidence ROOT files into the list-mode contract (uproot, streamed).

Two schemas:

``gate9``
    GATE 9's ``Coincidences`` tree (and the delayed sorter's tree, ``delay`` in our macros),
    branches as in GATE's ``GateRootDefs.cc``: ``time1/2`` in s (double), ``energy1/2`` in MeV,
    ``globalPosX/Y/Z1/2`` and ``sourcePosX/Y/Z1/2`` in mm, ``eventID1/2``,
    ``rsectorID``/``moduleID``/``crystalID1/2`` (the ``cylindricalPET`` hierarchy of
    :meth:`sim.scanner.geometry.Scanner.gate_ids`), ``comptonPhantom1/2`` and
    ``RayleighPhantom1/2``.
``opengate``
    opengate's ``CoincidenceSorterActor`` trees (``coincidences`` and ``delayed`` in our
    builder): each single attribute with suffix 1/2, 3-vectors as ``PostPosition1_X``;
    Geant4 internal units (ns, MeV, mm). Crystal ids come from the read-out position, which
    the readout's discretisation puts at the crystal centre. Compton and Rayleigh counts in
    the phantom are the auxiliary attributes :data:`OPENGATE_COMPTON` and
    :data:`OPENGATE_RAYLEIGH`. opengate's sorter has no minimum sector difference, only a
    minimum transaxial distance (which the builder sets below the closest pair of crystals
    ``min_sector_difference`` modules apart); the import applies the exact sector-difference
    rule afterwards, which with ``TakeAllGoods`` is the same as applying it in the sorter.

Truth columns: ``kind`` is 2 (random) when the two event ids differ, else 1 (scattered) when
either photon Compton- or Rayleigh-scattered in the phantom, else 0; ``annihilation_mm`` is
the event's source position (NaN for randoms); scatter counts are clipped to 255.

What is wrong in the ROOT file is refused naming the file, the tree and the branch (a
fraction in an id branch, NaN or infinity in a time, a negative energy); what is wrong in
the acquisition's numbers given with it names those (the command line's options).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import values
from sim.listmode.file import COLUMNS, ListModeWriter, check_attrs
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

#: Names of opengate's auxiliary attributes counting phantom interactions (our builder).
OPENGATE_COMPTON = "ComptonPhantom"
OPENGATE_RAYLEIGH = "RayleighPhantom"


@dataclass(frozen=True)
class RootSchema:
    """Where a coincidence tree keeps each quantity, and in which units."""

    name: str
    prompts_tree: str
    delayed_tree: str
    branch: dict[str, str]  # role -> branch pattern, "{n}" is the photon number 1 or 2
    time_to_ns: float
    energy_to_kev: float
    ids_from_gate: bool  # crystal ids from rsector/module/crystal ids, else from positions

    def branches(self) -> list[str]:
        """Every branch the conversion reads."""
        return [pattern.format(n=n) for pattern in self.branch.values() for n in (1, 2)]


GATE9 = RootSchema(
    name="gate9",
    prompts_tree="Coincidences",
    delayed_tree="delay",
    branch={
        "event": "eventID{n}", "time": "time{n}", "energy": "energy{n}",
        "x": "globalPosX{n}", "y": "globalPosY{n}", "z": "globalPosZ{n}",
        "sx": "sourcePosX{n}", "sy": "sourcePosY{n}", "sz": "sourcePosZ{n}",
        "rsector": "rsectorID{n}", "module": "moduleID{n}", "crystal": "crystalID{n}",
        "compton": "comptonPhantom{n}", "rayleigh": "RayleighPhantom{n}",
    },
    time_to_ns=1e9,
    energy_to_kev=1e3,
    ids_from_gate=True,
)

OPENGATE = RootSchema(
    name="opengate",
    prompts_tree="coincidences",
    delayed_tree="delayed",
    branch={
        "event": "EventID{n}", "time": "GlobalTime{n}", "energy": "TotalEnergyDeposit{n}",
        "x": "PostPosition{n}_X", "y": "PostPosition{n}_Y", "z": "PostPosition{n}_Z",
        "sx": "EventPosition{n}_X", "sy": "EventPosition{n}_Y", "sz": "EventPosition{n}_Z",
        "compton": OPENGATE_COMPTON + "{n}", "rayleigh": OPENGATE_RAYLEIGH + "{n}",
    },
    time_to_ns=1.0,
    energy_to_kev=1e3,
    ids_from_gate=False,
)

SCHEMAS = {s.name: s for s in (GATE9, OPENGATE)}


def open_root(path: str | Path) -> Any:
    """Open a ROOT file with uproot; a missing, malformed or truncated file is one clear error."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ROOT file not found")
    try:
        return uproot.open(path)
    except Exception as exc:  # uproot raises several types for damaged files
        raise ValueError(f"{path}: not a readable ROOT file ({type(exc).__name__}: {exc})"
                         ) from None


def _keys(obj: Any, where: str) -> set[str]:
    """Names of a ROOT directory's objects or a tree's branches; damage is one clear error."""
    try:
        return {k.split(";")[0] for k in obj.keys()}
    except Exception as exc:
        raise ValueError(f"{where}: cannot read the file's index ({type(exc).__name__}: "
                         f"{exc})") from None


def _tree(root: Any, path: Path, name: str) -> Any:
    keys = _keys(root, str(path))
    if name not in keys:
        raise ValueError(f"{path}: no tree {name!r} (the file holds: "
                         f"{', '.join(sorted(keys)) or 'nothing'})")
    try:
        tree = root[name]
    except Exception as exc:
        raise ValueError(f"{path}: tree {name!r} is unreadable ({exc})") from None
    if not hasattr(tree, "iterate"):
        raise ValueError(f"{path}: {name!r} is not a tree")
    return tree


def _check_branches(tree: Any, path: Path, name: str, schema: RootSchema) -> None:
    present = _keys(tree, f"{path} tree {name!r}")
    missing = [b for b in schema.branches() if b not in present]
    if missing:
        raise ValueError(f"{path}: tree {name!r} lacks branch(es) {', '.join(missing)} of the "
                         f"{schema.name} coincidence schema")


def _schema_of(root: Any, path: Path) -> RootSchema:
    keys = _keys(root, str(path))
    for schema in SCHEMAS.values():
        if schema.prompts_tree in keys:
            _check_branches(_tree(root, path, schema.prompts_tree), path,
                            schema.prompts_tree, schema)
            return schema
    held = ", ".join(sorted(keys)) or "nothing"
    raise ValueError(f"{path}: neither a GATE 9 'Coincidences' tree nor an opengate "
                     f"'coincidences' tree (the file holds: {held})")


def detect_schema(path: str | Path) -> RootSchema:
    """The schema whose prompts tree and branches the file has."""
    path = Path(path)
    return _schema_of(open_root(path), path)


def sector_difference(scanner: Scanner, crystal1: np.ndarray, crystal2: np.ndarray) -> np.ndarray:
    """Number of angular modules between two crystals around the ring (0 = same module)."""
    m1 = (crystal1 % scanner.crystals_per_ring) // scanner.crystals_per_module
    m2 = (crystal2 % scanner.crystals_per_ring) // scanner.crystals_per_module
    d = np.abs(m1 - m2)
    return np.minimum(d, scanner.modules_per_ring - d)


def convert_arrays(arrays: dict[str, np.ndarray], schema: RootSchema, scanner: Scanner,
                   where: str) -> dict[str, np.ndarray]:
    """One chunk of a coincidence tree (branch -> array) as list-mode columns.

    Every branch is checked before it is used, and a refusal names ``where`` (the ROOT file
    and tree) and the branch: ids and counts must be integers (whole floats are accepted,
    fractions, NaN and infinity are not: :func:`pipeline.values.exact_cast`), times,
    energies and positions finite numbers, energies and interaction counts not negative.
    """
    def get(role: str, n: int, dtype: type) -> np.ndarray:
        name = schema.branch[role].format(n=n)
        array = values.exact_cast(where, f"branch {name}", arrays[name], dtype)
        if array.dtype.kind == "f":
            values.finite(where, f"branch {name}", array)
        return array

    def scaled(role: str, n: int, factor: float, dtype: type) -> np.ndarray:
        name = schema.branch[role].format(n=n)
        return values.exact_cast(where, f"branch {name} (converted)",
                                 get(role, n, np.float64) * factor, dtype)

    columns: dict[str, np.ndarray] = {}
    for n in (1, 2):
        pos = np.stack([get("x", n, np.float64), get("y", n, np.float64),
                        get("z", n, np.float64)], axis=-1)
        if schema.ids_from_gate:
            ids = [get(role, n, np.int64) for role in ("rsector", "module", "crystal")]
            try:
                crystal = scanner.crystal_id_from_gate(*ids)
            except ValueError as exc:
                names = ", ".join(schema.branch[r].format(n=n)
                                  for r in ("rsector", "module", "crystal"))
                raise ValueError(f"{where}: branches {names}: {exc}") from None
        else:
            crystal = scanner.crystal_id_at(pos)
            outside = int(np.count_nonzero(crystal < 0))
            if outside:
                names = ", ".join(schema.branch[r].format(n=n) for r in ("x", "y", "z"))
                raise ValueError(f"{where}: branches {names}: {outside} photon-{n} positions "
                                 "lie in no crystal of the configured scanner (a file from "
                                 "another geometry?)")
        columns[f"crystal{n}"] = crystal.astype(np.int32)
        columns[f"time{n}_ns"] = scaled("time", n, schema.time_to_ns, np.float64)
        energy = scaled("energy", n, schema.energy_to_kev, np.float32)
        values.in_range(where, f"branch {schema.branch['energy'].format(n=n)}", energy, 0.0)
        columns[f"energy{n}_kev"] = energy
        columns[f"pos{n}_mm"] = values.exact_cast(
            where, f"branches {schema.branch['x'].format(n=n)}/Y/Z", pos, np.float32)
        columns[f"event{n}"] = get("event", n, np.int64)
        for role, column in (("compton", "compton_phantom"), ("rayleigh", "rayleigh_phantom")):
            count = values.in_range(where, f"branch {schema.branch[role].format(n=n)}",
                                    get(role, n, np.int64), 0)
            columns[f"{column}{n}"] = np.minimum(count, 255).astype(np.uint8)
    random = columns["event1"] != columns["event2"]
    scattered = ((columns["compton_phantom1"] > 0) | (columns["compton_phantom2"] > 0)
                 | (columns["rayleigh_phantom1"] > 0) | (columns["rayleigh_phantom2"] > 0))
    columns["kind"] = np.where(random, 2, np.where(scattered, 1, 0)).astype(np.uint8)
    source = np.stack([get(role, 1, np.float64) for role in ("sx", "sy", "sz")], axis=-1)
    source = values.exact_cast(where, f"branches {schema.branch['sx'].format(n=1)}/Y/Z",
                               source, np.float32)
    source[random] = np.nan
    columns["annihilation_mm"] = source
    return columns


def _chunks(tree: Any, where: str, schema: RootSchema, scanner: Scanner,
            min_sector_difference: int | None, step_size: str = "50 MB"
            ) -> Iterator[dict[str, np.ndarray]]:
    """List-mode column chunks of one (checked) coincidence tree.

    Pairs fewer than ``min_sector_difference`` modules apart are dropped (see the module
    docstring). A refused chunk is named by its entries in the tree (indices in the message
    count from the chunk's first entry).
    """
    start = 0
    try:
        for arrays in tree.iterate(schema.branches(), step_size=step_size, library="np"):
            size = len(next(iter(arrays.values()))) if arrays else 0
            chunk = where if start == 0 and size == tree.num_entries else (
                f"{where} entries {start}..{start + size - 1}")
            columns = convert_arrays(arrays, schema, scanner, chunk)
            start += size
            if min_sector_difference:
                keep = sector_difference(scanner, columns["crystal1"],
                                         columns["crystal2"]) >= min_sector_difference
                columns = {k: v[keep] for k, v in columns.items()}
            yield columns
    except ValueError:
        raise
    except Exception as exc:  # decompression or basket errors of a truncated file
        raise ValueError(f"{where}: cannot read the tree ({type(exc).__name__}: {exc})"
                         ) from None


def _empty_columns() -> dict[str, np.ndarray]:
    return {name: np.zeros((0, width) if width else 0, dtype=dtype)
            for name, (dtype, width) in COLUMNS.items()}


def gate9_primaries(path: str | Path) -> int | None:
    """Decays recorded by GATE 9 in its ``total_nb_primaries`` histogram, if the file has it.

    GATE fills that histogram once with the number of primaries, so its mean is the count.
    A histogram that is not one, or holds no whole non-negative count, is refused naming
    the file and the histogram.
    """
    root = open_root(path)
    if "total_nb_primaries" not in _keys(root, str(path)):
        return None
    where = f"{path} histogram 'total_nb_primaries'"
    try:
        hist = root["total_nb_primaries"]
        sum_w, sum_wx = float(hist.member("fTsumw")), float(hist.member("fTsumwx"))
    except Exception as exc:  # not a histogram, or damaged
        raise ValueError(f"{where}: not a readable histogram ({type(exc).__name__}: {exc}); "
                         "give --primaries") from None
    if not sum_w > 0:  # empty (or NaN): the count is not there
        return None
    mean = sum_wx / sum_w
    if not np.isfinite(mean) or mean < 0:
        raise ValueError(f"{where}: holds {mean:g} decays, not a count; give --primaries")
    return int(round(mean))


def import_root(root_path: str | Path, out_h5: str | Path, scanner: Scanner,
                attrs: dict[str, Any], schema: str = "auto",
                prompts_tree: str | None = None, delayed_tree: str | None = None,
                min_sector_difference: int | None = None,
                overwrite: bool = False) -> dict[str, int]:
    """Convert one ROOT file into a list-mode HDF5 file.

    Parameters
    ----------
    root_path : path
        GATE 9 or opengate output.
    out_h5 : path
        List-mode file to write (atomically).
    scanner : Scanner
        Geometry the crystal ids refer to (its JSON is stored in the file).
    attrs : dict
        File attributes; must include ``engine``, ``engine_version``, ``primaries``,
        ``activity_bq`` and ``duration_s`` (``scanner`` is added here).
    schema : {"auto", "gate9", "opengate"}
    prompts_tree, delayed_tree : str, optional
        Tree names, defaulting to the schema's. A missing delayed tree of the schema's
        name gives an empty ``delayed`` group and a warning; one of another name is refused.
    min_sector_difference : int, optional
        Drop pairs fewer than this many modules apart.

    Returns
    -------
    dict
        Rows written per group.

    Raises
    ------
    ValueError
        Naming the ROOT file, tree and branch for a bad input file, or ``import attributes``
        and the key for a bad ``attrs`` value (checked before the ROOT file is read).
    """
    root_path = Path(root_path)
    # The acquisition's numbers first: a bad one is the caller's argument, not the file's.
    check_attrs({**attrs, "scanner": ""}, "import attributes")
    if schema != "auto" and schema not in SCHEMAS:
        raise ValueError(f"unknown ROOT schema {schema!r}; choose auto, "
                         f"{', '.join(SCHEMAS)}")
    root = open_root(root_path)
    chosen = _schema_of(root, root_path) if schema == "auto" else SCHEMAS[schema]
    trees = {}
    for group, name in (("coincidences", prompts_tree or chosen.prompts_tree),
                        ("delayed", delayed_tree or chosen.delayed_tree)):
        if group == "delayed" and name == chosen.delayed_tree and name not in _keys(
                root, str(root_path)):
            # Only the schema's own delayed tree may be absent (a run without a delayed
            # window); a tree asked for by another name must be there.
            log.warning("%s: no delayed tree %r; the delayed group stays empty", root_path,
                        name)
            continue
        trees[group] = (_tree(root, root_path, name), f"{root_path} tree {name!r}")
        _check_branches(trees[group][0], root_path, name, chosen)
    counts = {"coincidences": 0, "delayed": 0}
    empty = _empty_columns()
    with ListModeWriter(out_h5, overwrite=overwrite) as out:
        for group, (tree, where) in trees.items():
            for columns in _chunks(tree, where, chosen, scanner, min_sector_difference):
                if group == "coincidences":
                    out.append(columns, empty)
                else:
                    out.append(empty, columns)
                counts[group] += len(columns["crystal1"])
        out.attrs.update(attrs)
        out.attrs["scanner"] = json.dumps(scanner.to_dict(), sort_keys=True)
        out.attrs["source_root_file"] = str(root_path)
        out.attrs["root_schema"] = chosen.name
        out.attrs["prompts"] = counts["coincidences"]
        out.attrs["delayed_count"] = counts["delayed"]
    return counts
