"""PETSIRD export of list-mode files, so other reconstruction tools can read our data.

`PETSIRD <https://github.com/ETSInitiative/PETSIRD>`_ (the ETSI PET raw-data standard, the
``petsird`` package, binary yardl stream) stores a scanner description and time blocks of
coincidences given as detection bins. :func:`export_petsird` writes one list-mode file of this
pipeline (:mod:`sim.listmode.file`) as a PETSIRD file; :func:`read_petsird` decodes such a file back
into numpy arrays in this pipeline's crystal numbering.

Conventions of the export
-------------------------
Geometry: one module type. A detector module is the ``crystals_per_module`` (tangential) x
``crystals_per_module_axial`` block of crystals (8 x 8), replicated ``modules_per_ring`` x
``axial_modules`` times (23 x 8 = 184).

* Crystal box (``BoxShape``): centred on the origin of its own frame, x along the depth
  (outward normal), y along the tangent (growing transaxial index), z along the scanner axis,
  extents ``Scanner.crystal_size_mm``. Corners 0-3 are the front face (x = -depth/2, facing
  the axis), corners 4-7 the back face, each face in the order (-y, -z), (-y, +z), (+y, +z),
  (+y, -z).
* Element index ``j + crystals_per_module * k`` (``j`` tangential, ``k`` axial within the
  module), GATE's crystal copy number (:meth:`sim.scanner.geometry.Scanner.gate_ids`). Element
  transforms are pure translations in the module frame, whose origin is the centre of the
  module's crystal array (mid-depth) and whose axes are (outward normal, tangent, +z).
* Module index ``rsector * axial_modules + axial_module`` (GATE's rsector and module ids: the
  angular module counter-clockwise from the one holding crystal 0, then axial module from the
  lowest z). Module transforms rotate the module frame into place and translate it to the
  module centre. Everything is derived from :meth:`Scanner.crystal_centres_mm` and
  :meth:`Scanner.crystal_frames` (checked to be one replicated module to 1e-6 mm).
* One bulk material (id 0): the crystal material of :mod:`sim.phantoms.materials`, mass
  fractions per element; the mass number of an element is its standard atomic weight rounded (the
  most abundant isotope for Lu, Y, Si and O).

Digitizer information, from the ``scanner`` section of the ``config`` attribute the simulate
stage writes into the list-mode file (schema defaults when the file has none):

* ``model_name``: the scanner config ``name``;
* ``energy_resolution_at_511``: ``energy_resolution`` (FWHM / 511 keV);
* ``tof_resolution``: PETSIRD wants the coincidence timing resolution (CTR, FWHM of
  ``t1 - t2``) in mm of ``(t1 - t2) c / 2``. Our ``time_resolution_ps`` is the FWHM of each
  single (the engine blurs every single independently), so CTR = sqrt(2) x that, i.e. 424 ps
  or 63.6 mm for 300 ps;
* TOF bins: edges in mm of ``(t1 - t2) c / 2``, symmetric about 0, ``tof_bin_ps`` of time
  difference wide, covering at least +-``coincidence_window_ns``. Negative means the first
  detection bin detected first (PETSIRD's convention). Values outside the edges (which the
  sorter cannot produce) are clipped to the first or last bin and counted;
* energy bins: edges from the low end of ``energy_window_kev``, ``energy_bin_kev`` wide, up
  to or just past the high end; energies outside are clipped to the first or last bin and
  counted;
* prompt and delayed policies: the sorter's ``multiples_policy``: ``TakeAllGoods`` (every
  good pair of every window, so a triple gives 3 pairs) is
  ``MULTIPLES_AS_ALL_COINCIDENCES``, ``RemoveMultiples`` is ``REJECT_HIGHER_MULTIPLES``, the
  others are ``OTHER``. The delayed window uses the same policy;
* detection efficiencies: none are known (no normalisation in this pipeline): calibration
  factor 1 and both components empty, which the PETSIRD model defines as 1. (The
  ``petsird.helpers.get_detection_efficiency`` helper of petsird 0.12 indexes the components
  without checking their size; filling them with ones would add a 15 MB, 2 s matrix.)

Events: detection bin = ``energy_index + (element + module * n_elements) * n_energy_bins``
(the helpers' convention). PETSIRD requires ``detection_bin1 >= detection_bin2``: where our
first photon has the lower bin the two photons are swapped and the TOF sign flipped. Delayed
coincidences keep their true times in the list-mode file (the second photon is
``delayed_window_offset_ns`` later); their TOF is that of ``t1 - t2`` with the offset removed
from the later photon, as PETSIRD defines delayed events. Time blocks (``EventTimeBlock``) are
``time_block_ms`` long (whole ms: ``TimeInterval`` is in ms), contiguous from the acquisition
start 0 up to the end of ``duration_s`` (or of the last event, if later), written even when
empty; each event goes into the block of its earliest photon. Truth columns, detected
positions and exact times are not exported (PETSIRD has no place for them).

Over 400 lines: the PETSIRD mapping (scanner description, detection bins, time blocks) and its
reader, kept together so the round trip is checked against one set of conventions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import petsird
import xraylib
from tqdm import tqdm

from pipeline.config import load_schema
from pipeline.fileio import atomic_output
from sim.engines.embedded.transport import C_MM_PER_NS
from sim.listmode.file import ListMode, read_listmode
from sim.phantoms.materials import get_material
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

#: Sorter multiples policy -> PETSIRD coincidence policy (see the module docstring).
POLICY_MAP = {
    "TakeAllGoods": petsird.CoincidencePolicy.MULTIPLES_AS_ALL_COINCIDENCES,
    "RemoveMultiples": petsird.CoincidencePolicy.REJECT_HIGHER_MULTIPLES,
    "TakeWinnerOfGoods": petsird.CoincidencePolicy.OTHER,
    "TakeIfOnlyOneGood": petsird.CoincidencePolicy.OTHER,
}
#: Keys of the ``scanner`` config section the export uses.
SETTINGS_KEYS = ("name", "energy_resolution", "time_resolution_ps", "energy_window_kev",
                 "coincidence_window_ns", "delayed_window_offset_ns", "multiples_policy")
#: Local frames of the replicated module must agree to this, mm.
_REPLICATION_TOLERANCE_MM = 1e-6


@dataclass(frozen=True)
class DigitizerInfo:
    """Digitizer and sorter settings the PETSIRD header describes.

    Attributes
    ----------
    name : str
        Scanner name (``model_name``).
    energy_resolution : float
        FWHM at 511 keV as a fraction of 511 keV.
    time_resolution_ps : float
        FWHM of the time of one single, ps.
    energy_window_kev : tuple of float
        (low, high), keV.
    coincidence_window_ns, delayed_window_offset_ns : float
        ns.
    multiples_policy : str
        Sorter policy (:data:`POLICY_MAP`).
    source : str
        Where the values came from (``"file"``, ``"schema defaults"`` or ``"argument"``).
    """

    name: str
    energy_resolution: float
    time_resolution_ps: float
    energy_window_kev: tuple[float, float]
    coincidence_window_ns: float
    delayed_window_offset_ns: float
    multiples_policy: str
    source: str

    @property
    def ctr_fwhm_mm(self) -> float:
        """Coincidence timing resolution as FWHM in mm of ``(t1 - t2) c / 2``."""
        return math.sqrt(2.0) * self.time_resolution_ps * 1e-3 * C_MM_PER_NS / 2.0


def digitizer_info(listmode: ListMode, path: str | Path,
                   scanner_cfg: Mapping[str, Any] | None = None) -> DigitizerInfo:
    """Digitizer settings of a list-mode file.

    Taken from ``scanner_cfg`` when given, else from the ``scanner`` section of the file's
    ``config`` attribute, else from the config schema's defaults (with a warning).

    Raises
    ------
    ValueError
        If the ``config`` attribute is not JSON, or a value is unusable (names the file).
    """
    schema = load_schema()["properties"]["scanner"]["properties"]
    values = {key: schema[key]["default"] for key in SETTINGS_KEYS}
    source = "schema defaults"
    if scanner_cfg is not None:
        section, source = dict(scanner_cfg), "argument"
    elif "config" in listmode.attrs:
        try:
            config = json.loads(listmode.attrs["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: attribute config is not JSON ({exc})") from None
        section = config.get("scanner") if isinstance(config, dict) else None
        if isinstance(section, dict):
            source = "file"
        else:
            section = {}
    else:
        section = {}
    if source == "schema defaults":
        log.warning("%s has no scanner config; using the schema's digitizer defaults", path)
    values.update({k: section[k] for k in SETTINGS_KEYS if k in section})
    try:
        info = DigitizerInfo(
            name=str(values["name"]), energy_resolution=float(values["energy_resolution"]),
            time_resolution_ps=float(values["time_resolution_ps"]),
            energy_window_kev=tuple(float(e) for e in values["energy_window_kev"]),
            coincidence_window_ns=float(values["coincidence_window_ns"]),
            delayed_window_offset_ns=float(values["delayed_window_offset_ns"]),
            multiples_policy=str(values["multiples_policy"]), source=source)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: scanner settings ({source}) are not usable ({exc})") from None
    window = info.energy_window_kev
    if len(window) != 2 or not window[0] < window[1]:
        raise ValueError(f"{path}: scanner setting energy_window_kev {info.energy_window_kev} "
                         "is not [low, high]")
    if not info.coincidence_window_ns > 0:
        raise ValueError(f"{path}: scanner setting coincidence_window_ns must be positive")
    if info.multiples_policy not in POLICY_MAP:
        raise ValueError(f"{path}: scanner setting multiples_policy {info.multiples_policy!r} "
                         f"is not one of {tuple(POLICY_MAP)}")
    return info


# ---------------------------------------------------------------------------------- bins
def tof_bin_edges_mm(coincidence_window_ns: float, tof_bin_ps: float) -> np.ndarray:
    """TOF bin edges in mm of ``(t1 - t2) c / 2``, symmetric about 0, covering the window.

    Returns
    -------
    numpy.ndarray
        float32, shape (n_tof_bins + 1,), ``n_tof_bins = ceil(2 window / bin)``.
    """
    if not tof_bin_ps > 0:
        raise ValueError(f"tof_bin_ps must be positive, got {tof_bin_ps}")
    n = math.ceil(2e3 * coincidence_window_ns / tof_bin_ps - 1e-9)
    step_mm = tof_bin_ps * 1e-3 * C_MM_PER_NS / 2.0
    return ((np.arange(n + 1) - n / 2.0) * step_mm).astype(np.float32)


def energy_bin_edges_kev(energy_window_kev: tuple[float, float],
                         energy_bin_kev: float) -> np.ndarray:
    """Energy bin edges from the window's low end, ``energy_bin_kev`` wide, covering the window.

    Returns
    -------
    numpy.ndarray
        float32, shape (n_energy_bins + 1,).
    """
    if not energy_bin_kev > 0:
        raise ValueError(f"energy_bin_kev must be positive, got {energy_bin_kev}")
    low, high = energy_window_kev
    n = max(1, math.ceil((high - low) / energy_bin_kev - 1e-9))
    return (low + np.arange(n + 1) * energy_bin_kev).astype(np.float32)


def bin_index(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of the bin holding each value (``edges[i] <= v < edges[i + 1]``), clipped.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape.
    edges : numpy.ndarray
        Increasing, shape (n + 1,).

    Returns
    -------
    index : numpy.ndarray
        int64 in [0, n), shape of ``values``.
    n_outside : int
        Values below the first or above the last edge (clipped into the end bins).
    """
    edges = np.asarray(edges, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(edges, values, side="right") - 1
    n_outside = int(np.count_nonzero((values < edges[0]) | (values > edges[-1])))
    return np.clip(index, 0, edges.size - 2), n_outside


# ---------------------------------------------------------------------------------- geometry
def module_element(scanner: Scanner, crystal_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PETSIRD (module, element) indices of crystal ids (see the module docstring).

    Returns
    -------
    module, element : numpy.ndarray
        int64, shape of ``crystal_id``.
    """
    rsector, axial_module, crystal = scanner.gate_ids(crystal_id)
    module = rsector.astype(np.int64) * scanner.axial_modules + axial_module
    return module, crystal.astype(np.int64)


def _rigid(rotation: np.ndarray, translation: np.ndarray) -> petsird.RigidTransformation:
    matrix = np.concatenate([rotation, translation[:, None]], axis=1).astype(np.float32)
    return petsird.RigidTransformation(matrix=matrix)


def _crystal_box(scanner: Scanner, material_id: int) -> petsird.BoxSolidVolume:
    half = scanner.crystal_size_mm / 2.0
    face = [(-1, -1), (-1, 1), (1, 1), (1, -1)]  # (y, z) signs, around each face
    corners = [np.array([sx, sy, sz]) * half for sx in (-1, 1) for sy, sz in face]
    shape = petsird.BoxShape(corners=[petsird.Coordinate(c=c.astype(np.float32))
                                      for c in corners])
    return petsird.BoxSolidVolume(shape=shape, material_id=material_id)


def scanner_geometry(scanner: Scanner, material_id: int = 0) -> petsird.ScannerGeometry:
    """The scanner as one replicated module type (conventions in the module docstring).

    Raises
    ------
    ValueError
        If the crystals of the modules are not one replicated layout (they always are for
        :class:`Scanner`; the check guards this export against a change of the geometry).
    """
    n_modules = scanner.modules_per_ring * scanner.axial_modules
    n_elements = scanner.crystals_per_module * scanner.crystals_per_module_axial
    ids = np.arange(scanner.n_crystals)
    module, element = module_element(scanner, ids)
    by_slot = np.empty((n_modules, n_elements), np.int64)
    by_slot[module, element] = ids
    centres = scanner.crystal_centres_mm(by_slot)          # (modules, elements, 3)
    frames = scanner.crystal_frames(by_slot[:, 0])           # (modules, 3, 3), rows = axes
    origins = centres.mean(axis=1)                           # (modules, 3)
    local = np.einsum("mij,mej->mei", frames, centres - origins[:, None, :])
    spread = np.abs(local - local[0]).max()
    if spread > _REPLICATION_TOLERANCE_MM:
        raise ValueError(f"scanner modules are not one replicated layout (crystal positions "
                         f"differ by {spread:.3g} mm between modules)")
    eye = np.eye(3)
    elements = petsird.ReplicatedBoxSolidVolume(
        object=_crystal_box(scanner, material_id),
        transforms=[_rigid(eye, offset) for offset in local[0]])
    module_type = petsird.DetectorModule(detecting_elements=elements)
    # A frame's rows are the module axes in scanner coordinates: the rotation is its transpose.
    transforms = [_rigid(frame.T, origin) for frame, origin in zip(frames, origins, strict=True)]
    replicated = petsird.ReplicatedDetectorModule(object=module_type, transforms=transforms)
    return petsird.ScannerGeometry(replicated_modules=[replicated])


def bulk_material(name: str, material_id: int = 0) -> petsird.BulkMaterial:
    """PETSIRD description of a material of :mod:`sim.phantoms.materials` (density g/cm3)."""
    material = get_material(name)
    atoms, fractions = [], []
    for z, fraction in sorted(material.composition.items()):
        atoms.append(petsird.Atom(mass_number=round(xraylib.AtomicWeight(z)), atomic_number=z))
        fractions.append(float(fraction))
    # PETSIRD names detector materials by their usual abbreviation (LYSO, BGO, ...).
    return petsird.BulkMaterial(id=material_id, name=material.name.upper(),
                                density=material.density_g_cm3, atoms=atoms,
                                mass_fractions=fractions)


def scanner_information(scanner: Scanner, info: DigitizerInfo, tof_edges_mm: np.ndarray,
                        energy_edges_kev: np.ndarray) -> petsird.ScannerInformation:
    """PETSIRD ``ScannerInformation`` of the scanner, digitizer and binning."""
    policy = POLICY_MAP[info.multiples_policy]
    return petsird.ScannerInformation(
        model_name=info.name,
        scanner_geometry=scanner_geometry(scanner, material_id=0),
        bulk_materials=[bulk_material(scanner.crystal_material, material_id=0)],
        collimator_type="NONE",
        tof_bin_edges=[[petsird.BinEdges(edges=tof_edges_mm)]],
        tof_resolution=[[info.ctr_fwhm_mm]],
        event_energy_bin_edges=[petsird.BinEdges(edges=energy_edges_kev)],
        energy_resolution_at_511=[info.energy_resolution],
        singles_histogram_level=petsird.SinglesHistogramLevelType.NONE,
        single_event_policy=petsird.SingleEventPolicy.NONE,
        prompt_event_policy=policy,
        delayed_event_policy=policy,
        triple_event_policy=petsird.TripleEventPolicy.NONE,
        quadruple_event_policy=petsird.QuadrupleEventPolicy.NONE,
        detection_efficiencies=petsird.DetectionEfficiencies(
            method_description="none: not measured; every efficiency is 1 (empty components)",
            calibration_factor=1.0),
    )


# ---------------------------------------------------------------------------------- events
@dataclass
class _Encoded:
    """Events of one group as PETSIRD indices, grouped by time block (file order within one)."""

    bins: np.ndarray           # (n, 2) int64: detection bins, first >= second
    tof_index: np.ndarray      # (n,) int64
    block_bounds: np.ndarray   # (n_blocks + 1,): events of block b are [bounds[b], bounds[b+1])
    n_tof_outside: int
    n_energy_outside: int

    def events(self, block: int) -> list[petsird.CoincidenceEvent]:
        """The events of one time block as petsird objects (the API needs one per event)."""
        start, stop = self.block_bounds[block], self.block_bounds[block + 1]
        return [petsird.CoincidenceEvent(detection_bins=pair, tof_idx=t)
                for pair, t in zip(self.bins[start:stop].tolist(),
                                   self.tof_index[start:stop].tolist(), strict=True)]


def _checked_times(columns: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    t1, t2 = columns["time1_ns"].astype(np.float64), columns["time2_ns"].astype(np.float64)
    for name, t in (("time1_ns", t1), ("time2_ns", t2)):
        if t.size and not np.all(np.isfinite(t)):
            raise ValueError(f"{where}: column {name} has non-finite times")
        if t.size and t.min() < 0:
            raise ValueError(f"{where}: column {name} has times before the acquisition start "
                             f"0 ({t.min():.6g} ns)")
    return t1, t2


def _block_of(time_ns: np.ndarray, time_block_ms: int) -> np.ndarray:
    return np.floor(time_ns / (time_block_ms * 1e6)).astype(np.int64)


def _encode(columns: dict, where: str, bin_base: np.ndarray, energy_edges: np.ndarray,
            tof_edges_mm: np.ndarray, delay_ns: float, time_block_ms: int) -> tuple[
                np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Detection bins, TOF index and time block of every event (in file order).

    Returns (bin1, bin2, tof_index, block) as int64 arrays and the numbers of TOF and energy
    values outside the bin edges.
    """
    t1, t2 = _checked_times(columns, where)
    e1, out1 = bin_index(columns["energy1_kev"], energy_edges)
    e2, out2 = bin_index(columns["energy2_kev"], energy_edges)
    b1 = bin_base[columns["crystal1"]] + e1
    b2 = bin_base[columns["crystal2"]] + e2
    dt_ns = t1 - t2
    if delay_ns:  # the later photon of a delayed pair, moved back by the window offset
        dt_ns = dt_ns - np.sign(dt_ns) * delay_ns
    swap = b1 < b2
    tof_mm = np.where(swap, -dt_ns, dt_ns) * (C_MM_PER_NS / 2.0)
    tof_index, tof_out = bin_index(tof_mm, tof_edges_mm)
    block = _block_of(np.minimum(t1, t2), time_block_ms)
    return (np.where(swap, b2, b1), np.where(swap, b1, b2), tof_index, block, tof_out,
            out1 + out2)


def _group(encoded: tuple, n_blocks: int) -> _Encoded:
    bin1, bin2, tof_index, block, tof_out, energy_out = encoded
    order = np.argsort(block, kind="stable")  # keeps the file order within a block
    bounds = np.searchsorted(block[order], np.arange(n_blocks + 1), side="left")
    return _Encoded(np.stack([bin1[order], bin2[order]], axis=1), tof_index[order], bounds,
                    tof_out, energy_out)


def _time_blocks(prompts: _Encoded, delayed: _Encoded, n_blocks: int,
                 time_block_ms: int) -> Iterator[petsird.TimeBlock]:
    for block in tqdm(range(n_blocks), desc="petsird", unit="block", disable=None, leave=False):
        interval = petsird.TimeInterval(start=block * time_block_ms,
                                        stop=(block + 1) * time_block_ms)
        yield petsird.TimeBlock.EventTimeBlock(petsird.EventTimeBlock(
            time_interval=interval, prompt_events=[[prompts.events(block)]],
            delayed_events=[[delayed.events(block)]]))


def _check_time_block(time_block_ms: int) -> int:
    if isinstance(time_block_ms, bool) or not float(time_block_ms).is_integer() \
            or time_block_ms < 1:
        raise ValueError(f"time_block_ms must be a whole number of ms >= 1 (PETSIRD time "
                         f"intervals are in ms), got {time_block_ms}")
    return int(time_block_ms)


def export_petsird(listmode_h5: str | Path, out_path: str | Path, *, overwrite: bool = False,
                   tof_bin_ps: float = 25.0, energy_bin_kev: float = 10.0,
                   time_block_ms: int = 1,
                   scanner_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a list-mode file as a PETSIRD binary file (conventions in the module docstring).

    Parameters
    ----------
    listmode_h5 : path-like
        List-mode file (:mod:`sim.listmode.file`).
    out_path : path-like
        PETSIRD file to write (atomically: it appears only when complete).
    overwrite : bool
        Replace an existing ``out_path``.
    tof_bin_ps : float
        TOF bin width in ps of time difference ``t1 - t2``.
    energy_bin_kev : float
        Event energy bin width, keV.
    time_block_ms : int
        Length of the event time blocks, whole ms.
    scanner_cfg : mapping, optional
        ``scanner`` config section overriding the digitizer settings stored in the file.

    Returns
    -------
    dict
        ``out_path``, ``prompts``, ``delayed``, ``time_blocks``, ``tof_bins``,
        ``energy_bins``, ``detection_bins``, ``tof_outside`` and ``energy_outside`` (values
        clipped into the end bins), ``settings_source``, ``seconds``.

    Raises
    ------
    FileExistsError
        If ``out_path`` exists and ``overwrite`` is False (nothing is read or written).
    FileNotFoundError, ValueError
        For a missing or malformed list-mode file or bad settings; the message names the
        file and the field.
    """
    start = time.perf_counter()
    listmode_h5, out_path = Path(listmode_h5), Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass --overwrite to replace it")
    if out_path.exists() and listmode_h5.exists() and out_path.samefile(listmode_h5):
        raise ValueError(f"{out_path}: the PETSIRD output would replace its list-mode input")
    time_block_ms = _check_time_block(time_block_ms)
    listmode = read_listmode(listmode_h5)
    scanner = listmode.scanner
    info = digitizer_info(listmode, listmode_h5, scanner_cfg)
    tof_edges = tof_bin_edges_mm(info.coincidence_window_ns, tof_bin_ps)
    energy_edges = energy_bin_edges_kev(info.energy_window_kev, energy_bin_kev)
    n_energy = energy_edges.size - 1
    n_elements = scanner.crystals_per_module * scanner.crystals_per_module_axial
    n_detection_bins = scanner.n_crystals * n_energy
    if n_detection_bins > np.iinfo(np.uint32).max:
        raise ValueError(f"{n_detection_bins} detection bins do not fit PETSIRD's uint32; "
                         "use wider energy bins")
    module, element = module_element(scanner, np.arange(scanner.n_crystals))
    bin_base = (element + module * n_elements) * n_energy

    groups = {}
    for name, columns, delay_ns in (("coincidences", listmode.coincidences, 0.0),
                                    ("delayed", listmode.delayed,
                                     info.delayed_window_offset_ns)):
        groups[name] = _encode(columns, f"{listmode_h5} group {name}", bin_base, energy_edges,
                               tof_edges, delay_ns, time_block_ms)
    last_block = max((int(g[3].max()) for g in groups.values() if g[3].size), default=-1)
    duration_ms = float(listmode.attrs["duration_s"]) * 1e3
    n_blocks = max(math.ceil(duration_ms / time_block_ms - 1e-9), last_block + 1, 0)
    if n_blocks * time_block_ms > np.iinfo(np.uint32).max:
        raise ValueError(f"{listmode_h5}: acquisition too long for PETSIRD's uint32 ms times")
    prompts, delayed = (_group(groups[g], n_blocks) for g in ("coincidences", "delayed"))
    for kind, count in (("TOF", prompts.n_tof_outside + delayed.n_tof_outside),
                        ("energy", prompts.n_energy_outside + delayed.n_energy_outside)):
        if count:
            log.warning("%s: %d %s values outside the bin edges, clipped into the end bins",
                        listmode_h5, count, kind)

    header = petsird.Header(scanner=scanner_information(scanner, info, tof_edges,
                                                        energy_edges))
    with atomic_output(out_path, overwrite) as tmp:
        with petsird.BinaryPETSIRDWriter(str(tmp)) as writer:
            writer.write_header(header)
            writer.write_time_blocks(_time_blocks(prompts, delayed, n_blocks, time_block_ms))
    summary = {
        "out_path": str(out_path),
        "prompts": prompts.tof_index.size,
        "delayed": delayed.tof_index.size,
        "time_blocks": n_blocks,
        "tof_bins": tof_edges.size - 1,
        "energy_bins": n_energy,
        "detection_bins": n_detection_bins,
        "tof_outside": prompts.n_tof_outside + delayed.n_tof_outside,
        "energy_outside": prompts.n_energy_outside + delayed.n_energy_outside,
        "settings_source": info.source,
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info("wrote %s: %s", out_path, summary)
    return summary


# ---------------------------------------------------------------------------------- reading
def _layout(scanner_info: petsird.ScannerInformation, path: Path) -> dict[str, int]:
    """Counts of this pipeline's numbering, read off the geometry of a PETSIRD header."""
    modules = scanner_info.scanner_geometry.replicated_modules
    if len(modules) != 1:
        raise ValueError(f"{path}: {len(modules)} module types; read_petsird decodes the "
                         "single-module-type layout that export_petsird writes")
    module_z = np.array([t.matrix[2, 3] for t in modules[0].transforms])
    element_z = np.array([t.matrix[2, 3]
                          for t in modules[0].object.detecting_elements.transforms])
    n_modules, n_elements = module_z.size, element_z.size
    axial_modules = np.unique(np.round(module_z, 3)).size
    per_module_axial = np.unique(np.round(element_z, 3)).size
    if n_modules % axial_modules or n_elements % per_module_axial:
        raise ValueError(f"{path}: geometry is not this pipeline's module layout")
    return {"modules": n_modules, "elements": n_elements, "axial_modules": axial_modules,
            "crystals_per_module_axial": per_module_axial,
            "crystals_per_module": n_elements // per_module_axial,
            "modules_per_ring": n_modules // axial_modules}


def _crystal_ids(module: np.ndarray, element: np.ndarray, layout: dict) -> np.ndarray:
    rsector, axial_module = np.divmod(module, layout["axial_modules"])
    k, j = np.divmod(element, layout["crystals_per_module"])
    ring = axial_module * layout["crystals_per_module_axial"] + k
    index = rsector * layout["crystals_per_module"] + j
    crystals_per_ring = layout["modules_per_ring"] * layout["crystals_per_module"]
    return (ring * crystals_per_ring + index).astype(np.int32)


def read_petsird(path: str | Path) -> dict[str, Any]:
    """Decode a PETSIRD file written by :func:`export_petsird` into numpy arrays.

    Returns
    -------
    dict
        Per event (every prompt in stream order, then every delayed), shape (n,):
        ``crystal1``, ``crystal2`` (int32, this pipeline's crystal ids, first and second
        detection bin), ``tof_index`` (int64), ``tof_ns`` (float64, centre of the TOF bin as
        ``t1 - t2`` in ns; negative: crystal1 detected first), ``energy_index1``,
        ``energy_index2`` (int64), ``time_block`` (int64, position of the event time block in
        the stream), ``delayed`` (bool). Also ``time_intervals_ms`` ((n_blocks, 2) int64,
        start and stop of each event time block), ``tof_bin_edges_mm``,
        ``energy_bin_edges_kev`` (float32) and ``header`` (the ``petsird.Header``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a complete PETSIRD binary file of this layout (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PETSIRD file {path} does not exist")
    bins: dict[bool, list] = {False: [], True: []}
    tofs: dict[bool, list] = {False: [], True: []}
    blocks: dict[bool, list] = {False: [], True: []}
    intervals = []
    try:
        with petsird.BinaryPETSIRDReader(str(path)) as reader:
            header = reader.read_header()
            for time_block in reader.read_time_blocks():
                if not isinstance(time_block, petsird.TimeBlock.EventTimeBlock):
                    continue
                block = time_block.value
                intervals.append((block.time_interval.start, block.time_interval.stop))
                for is_delayed, lists in ((False, block.prompt_events),
                                          (True, block.delayed_events)):
                    events = lists[0][0] if lists else []
                    bins[is_delayed].extend(e.detection_bins for e in events)
                    tofs[is_delayed].extend(e.tof_idx for e in events)
                    blocks[is_delayed].append(np.full(len(events), len(intervals) - 1))
    except (RuntimeError, EOFError, ValueError, IndexError, OSError,
            petsird.ProtocolError) as exc:
        raise ValueError(f"{path}: not a complete PETSIRD binary file ({exc})") from None

    scanner_info = header.scanner
    layout = _layout(scanner_info, path)
    energy_edges = np.asarray(scanner_info.event_energy_bin_edges[0].edges, np.float32)
    tof_edges = np.asarray(scanner_info.tof_bin_edges[0][0].edges, np.float32)
    n_energy = energy_edges.size - 1
    detection = np.array(bins[False] + bins[True], dtype=np.int64).reshape(-1, 2)
    energy = detection % n_energy
    element = (detection // n_energy) % layout["elements"]
    module = detection // (n_energy * layout["elements"])
    crystal = _crystal_ids(module, element, layout)
    tof_index = np.array(tofs[False] + tofs[True], dtype=np.int64)
    tof_edges64 = tof_edges.astype(np.float64)
    tof_centres_ns = (tof_edges64[:-1] + tof_edges64[1:]) / 2.0 / (C_MM_PER_NS / 2.0)
    n_prompts = len(tofs[False])
    return {
        "crystal1": crystal[:, 0],
        "crystal2": crystal[:, 1],
        "tof_index": tof_index,
        "tof_ns": tof_centres_ns[tof_index],
        "energy_index1": energy[:, 0],
        "energy_index2": energy[:, 1],
        "time_block": np.concatenate(blocks[False] + blocks[True] + [np.zeros(0)]).astype(
            np.int64),
        "delayed": np.arange(tof_index.size) >= n_prompts,
        "time_intervals_ms": np.array(intervals, dtype=np.int64).reshape(-1, 2),
        "tof_bin_edges_mm": tof_edges,
        "energy_bin_edges_kev": energy_edges,
        "header": header,
    }
