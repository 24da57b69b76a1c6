"""The detector response of the ring, calibrated from the embedded Monte Carlo.

What happens to a 511 keV photon once it reaches the crystals (penetration to some depth,
inter-crystal scatter, the block's readout, energy and time blurring and the energy window)
is measured by sending photons into the ring with the embedded engine's own transport and
digitizer (:mod:`sim.engines.embedded`), never with the reconstruction's system model: a
simulation that used the model the reconstruction inverts would give images better than a
real scanner's.

Photons are described by their entry into the ring (:mod:`sim.engines.statistical.entry`):
the entry crystal's column within its module ``u``, its virtual ring, and the incidence
angles ``alpha`` (transaxial) and ``beta`` (axial). The ring's symmetries fold these onto a
*cell*:

* mirror through the module's mid-plane: ``u -> n - 1 - u``, ``alpha -> -alpha`` (and the
  detected crystal's column offset and tangential position change sign), so ``alpha >= 0``;
* mirror through the scanner's mid-plane: ``ring -> rings - 1 - ring``, ``beta -> -beta``
  (the ring offset and axial position change sign), so the virtual ring is in the lower half;
* rings more than ``END_RINGS`` from either end are alike up to their row in the block.

For each cell the calibration keeps the fraction of photons that make an in-window single
(the detection probability) and the outcomes of those that do: the detected crystal relative
to the entry crystal, the deposited energy, the energy-weighted interaction point in the
detected crystal's frame and the time from the entry to the first deposit. The statistical
engine draws a detected photon's outcome from its cell's list (the empirical response: the
correlations between crystal, energy and depth are the Monte Carlo's) and blurs its energy
and time anew with the digitizer's resolutions, the energy within the window
(:func:`sim.engines.embedded.digitizer.blur_within_window`): the blurring is independent of
the rest given the deposit, so this is exact, and the spectra are smooth rather than a
resample of the calibration's few hundred blurred values per cell.

A photon that gives two in-window singles (its energy shared between two blocks, both above
the window's lower edge) counts once, by its most energetic single.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engines.embedded.digitizer import (
    DigitizerSettings,
    adder_readout,
    blur_and_window,
    blur_within_window,
    time_sigma_ns,
)
from sim.engines.embedded.source import ANNIHILATION_KEV
from sim.engines.embedded.transport import (
    C_MM_PER_NS,
    DetectorRing,
    MaterialTables,
    PhantomMedium,
    Photons,
    Transport,
)
from sim.engines.statistical.entry import (
    Entry,
    direction_from_angles,
    face_point_mm,
    ring_entry,
    virtual_ring_z_mm,
)
from sim.phantoms.materials import get_material
from sim.scanner.geometry import Scanner

#: Rings this close to an axial end (or beyond it) are cells of their own.
END_RINGS = 6
#: Virtual rings beyond an end that can still be detected (through a crystal's end face).
OUTSIDE_RINGS = 2
#: Photons start this far before their entry point, mm (inside the bore for any angle used).
BACK_OFF_MM = 30.0


@dataclass(frozen=True)
class ResponseBins:
    """The cells' angle bins.

    Attributes
    ----------
    alpha_max_deg : float
        Largest transaxial incidence angle tabulated; larger ones use the last bin.
    beta_max_deg : float
        Largest axial incidence angle (either sign) tabulated.
    alpha_bins, beta_bins : int
        Bins over ``[0, alpha_max]`` and over ``[-beta_max, beta_max]``.
    """

    alpha_max_deg: float = 75.0
    beta_max_deg: float = 60.0
    alpha_bins: int = 15
    beta_bins: int = 24

    def alpha_bin(self, alpha_rad: np.ndarray) -> np.ndarray:
        """Bin of ``|alpha|`` (clipped to the last bin), int64."""
        x = np.degrees(np.abs(alpha_rad)) / self.alpha_max_deg * self.alpha_bins
        return np.clip(np.floor(x), 0, self.alpha_bins - 1).astype(np.int64)

    def beta_bin(self, beta_rad: np.ndarray) -> np.ndarray:
        """Bin of ``beta`` over ``[-beta_max, beta_max]`` (clipped), int64."""
        x = (np.degrees(beta_rad) / self.beta_max_deg + 1.0) / 2.0 * self.beta_bins
        return np.clip(np.floor(x), 0, self.beta_bins - 1).astype(np.int64)

    def alpha_coordinate(self, alpha_rad: np.ndarray) -> np.ndarray:
        """Position of ``|alpha|`` in bin units, bin centres at 0, 1, ... (clipped to them)."""
        x = np.degrees(np.abs(alpha_rad)) / self.alpha_max_deg * self.alpha_bins - 0.5
        return np.clip(x, 0.0, self.alpha_bins - 1.0)

    def beta_coordinate(self, beta_rad: np.ndarray) -> np.ndarray:
        """Position of ``beta`` in bin units, bin centres at 0, 1, ... (clipped to them)."""
        x = (np.degrees(beta_rad) / self.beta_max_deg + 1.0) / 2.0 * self.beta_bins - 0.5
        return np.clip(x, 0.0, self.beta_bins - 1.0)


@dataclass(frozen=True)
class Folded:
    """Photons folded onto the response's cells (arrays of shape (n,)).

    ``cell`` is the cell whose angle bins hold the photon's angles (the calibration's
    bookkeeping), -1 for a photon that cannot be detected (entering too far beyond an axial
    end); ``base`` is its cell without the angle bins (-1 likewise); ``alpha_x`` and
    ``beta_x`` are the angles in bin units with the bins' centres at whole numbers (for
    interpolation between cells). ``flip_t`` and ``flip_z`` are -1 where a mirror was
    applied (the outcome's column and tangential offsets, and its ring and axial offsets,
    change sign back)."""

    cell: np.ndarray
    base: np.ndarray
    alpha_x: np.ndarray
    beta_x: np.ndarray
    flip_t: np.ndarray
    flip_z: np.ndarray

    def subset(self, keep: np.ndarray) -> Folded:
        """The photons selected by ``keep`` (mask or indices)."""
        return Folded(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def axial_classes(scanner: Scanner) -> int:
    """Number of axial classes: the end rings (with those beyond) and the block rows."""
    return OUTSIDE_RINGS + END_RINGS + scanner.crystals_per_module_axial


def fold(scanner: Scanner, bins: ResponseBins, entry: Entry) -> Folded:
    """The cell of each photon of ``entry`` and the mirrors that bring it there."""
    return fold_angles(scanner, bins, entry.within, entry.ring, entry.alpha_rad,
                       entry.beta_rad)


def fold_angles(scanner: Scanner, bins: ResponseBins, within: np.ndarray, ring: np.ndarray,
                alpha_rad: np.ndarray, beta_rad: np.ndarray) -> Folded:
    """The cells of photons entering column ``within`` of their module, virtual ring
    ``ring``, at incidence angles ``alpha_rad`` and ``beta_rad`` (arrays of shape (n,), as
    :class:`.entry.Entry` holds them), and the mirrors that bring them there."""
    n = scanner.crystals_per_module
    flip_t = np.where(alpha_rad < 0, -1, 1)
    within = np.where(flip_t < 0, n - 1 - within, within)
    upper = ring > (scanner.rings - 1) / 2.0
    flip_z = np.where(upper, -1, 1)
    ring = np.where(upper, scanner.rings - 1 - ring, ring)
    beta = beta_rad * flip_z
    cma = scanner.crystals_per_module_axial
    axial = np.where(ring < END_RINGS, ring + OUTSIDE_RINGS,
                     OUTSIDE_RINGS + END_RINGS + np.mod(ring, cma))
    outside = ring < -OUTSIDE_RINGS
    base = np.where(outside, -1, within * axial_classes(scanner) + axial).astype(np.int64)
    cell = (base * bins.alpha_bins + bins.alpha_bin(alpha_rad)) * bins.beta_bins \
        + bins.beta_bin(beta)
    return Folded(np.where(outside, -1, cell).astype(np.int64), base,
                  bins.alpha_coordinate(alpha_rad), bins.beta_coordinate(beta),
                  flip_t, flip_z)


def angle_neighbours(bins: ResponseBins, folded: Folded) -> tuple[np.ndarray, np.ndarray]:
    """The four cells around each photon's angles and their bilinear weights, (n, 4)."""
    a0 = np.minimum(np.floor(folded.alpha_x), bins.alpha_bins - 2).astype(np.int64)
    b0 = np.minimum(np.floor(folded.beta_x), bins.beta_bins - 2).astype(np.int64)
    fa = (folded.alpha_x - a0)[:, None]
    fb = (folded.beta_x - b0)[:, None]
    da = np.array([0, 0, 1, 1])[None, :]
    db = np.array([0, 1, 0, 1])[None, :]
    base = np.maximum(folded.base, 0)[:, None]
    cells = (base * bins.alpha_bins + a0[:, None] + da) * bins.beta_bins + b0[:, None] + db
    weights = np.where(da == 1, fa, 1 - fa) * np.where(db == 1, fb, 1 - fb)
    return cells, np.where((folded.base >= 0)[:, None], weights, 0.0)


def n_cells(scanner: Scanner, bins: ResponseBins) -> int:
    """Number of cells."""
    return (scanner.crystals_per_module * axial_classes(scanner) * bins.alpha_bins
            * bins.beta_bins)


@dataclass(frozen=True)
class DetectorResponse:
    """The calibrated response: per cell, photons sent and the detected photons' outcomes.

    Attributes
    ----------
    scanner : Scanner
    digitizer : DigitizerSettings
    bins : ResponseBins
    sent : numpy.ndarray of int64, shape (n_cells,)
        Photons sent into each cell.
    start : numpy.ndarray of int64, shape (n_cells + 1,)
        Outcomes of cell c are rows ``start[c]:start[c + 1]``.
    d_index, d_ring : numpy.ndarray of int16, shape (n_detected,)
        Detected crystal minus entry crystal (column, ring), in the folded frame.
    deposited_kev : numpy.ndarray of float32
        Energy deposited by the single (before blurring; its blurred value fell in the
        window).
    offset_mm : numpy.ndarray of float32, shape (n_detected, 3)
        Interaction point (the single's energy-weighted position) from the entry point, in
        the photon's frame (:func:`photon_frame`: along its direction, sideways in the
        transaxial plane, and the third direction), folded.
    delay_ns : numpy.ndarray of float32
        Time from the entry point to the first deposit in the detected crystal, before the
        digitizer's time blurring, ns.
    """

    scanner: Scanner
    digitizer: DigitizerSettings
    bins: ResponseBins
    sent: np.ndarray
    start: np.ndarray
    d_index: np.ndarray
    d_ring: np.ndarray
    deposited_kev: np.ndarray
    offset_mm: np.ndarray
    delay_ns: np.ndarray

    @property
    def detected(self) -> np.ndarray:
        """Detected photons per cell, int64 (n_cells,)."""
        return np.diff(self.start)

    def neighbour_weights(self, folded: Folded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The four cells around each photon's angles (int64 (n, 4)), their detected
        photons (int64 (n, 4)) and their bilinear weights times their detection
        probabilities (float64 (n, 4)): the weights sum to the photon's detection
        probability and choose the cell its outcome comes from."""
        cells, weights = angle_neighbours(self.bins, folded)
        count = self.detected[cells]
        return cells, count, weights * count / np.maximum(self.sent[cells], 1)

    def probability(self, folded: Folded) -> np.ndarray:
        """Detection probability of each photon, interpolated bilinearly in the angles
        between the cells' centres (0 where the photon cannot be detected)."""
        return self.neighbour_weights(folded)[2].sum(axis=1)

    def draw(self, folded: Folded, entry: Entry, rng: np.random.Generator,
             neighbours: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
             crystals_only: bool = False, blur_rng: np.random.Generator | None = None,
             direction: np.ndarray | None = None) -> dict:
        """Outcomes of photons known to be detected.

        The outcome comes from one of the four cells around the photon's angles, chosen
        with its bilinear weight times its detection probability (the outcome distribution
        of the interpolated response). Every photon needs a neighbour with outcomes.
        ``neighbours`` is :meth:`neighbour_weights` of ``folded`` when already at hand.
        The energy and time blurring draw from ``blur_rng`` (``rng`` when not given), so
        that leaving them out (``crystals_only``) draws the same crystals. ``direction``
        is the photons' unit directions (n, 3) when at hand (else made from the entry's
        angles).

        Returns columns ``crystal`` (int32), ``energy_kev`` (float32, blurred within the
        window), ``pos_mm`` ((n, 3) float32, global) and ``delay_ns`` (float64: from the
        entry point to the single's time stamp, time blurring included); ``crystal`` only
        with ``crystals_only`` (all a coincidence histogram keeps: no energy or time is
        blurred).
        """
        cells, count, weights = (self.neighbour_weights(folded) if neighbours is None
                                 else neighbours)
        total = weights.sum(axis=1)
        if np.any(total <= 0):
            raise ValueError("drawing an outcome for a photon whose cells detect nothing")
        pick = (np.cumsum(weights, axis=1) < (rng.random(total.size) * total)[:, None]).sum(
            axis=1)
        pick = np.minimum(pick, 3)
        cell = cells[np.arange(total.size), pick]
        count = count[np.arange(total.size), pick]
        row = self.start[cell] + np.floor(rng.random(cell.size) * count).astype(np.int64)
        scanner = self.scanner
        # The interaction point moves with the entry point and turns with the photon's
        # direction (the path, shifted within its cell and turned within its angle bins),
        # and the detected crystal is the one that holds it; where the moved point falls
        # outside every crystal (a gap), the calibrated crystal offset is used.
        if direction is None:
            direction = direction_from_angles(scanner, entry.module, entry.alpha_rad,
                                              entry.beta_rad)
        frame = photon_frame(direction)
        offset = self.offset_mm[row].astype(np.float64)
        offset[:, 1] *= folded.flip_t
        offset[:, 2] *= folded.flip_z
        pos = entry.point_mm + np.einsum("nk,nkj->nj", offset, frame)
        crystal = scanner.crystal_id_at(pos)
        lost = crystal < 0
        if lost.any():
            kept_row = row[lost]
            index = np.mod(entry.index(scanner)[lost]
                           + folded.flip_t[lost] * self.d_index[kept_row],
                           scanner.crystals_per_ring)
            ring = entry.ring[lost] + folded.flip_z[lost] * self.d_ring[kept_row]
            crystal[lost] = scanner.crystal_id(np.clip(ring, 0, scanner.rings - 1), index)
            pos[lost] = _into_crystal(scanner, crystal[lost], pos[lost])
        if crystals_only:
            return {"crystal": crystal}
        blur_rng = rng if blur_rng is None else blur_rng
        energy = blur_within_window(self.deposited_kev[row], self.digitizer, blur_rng)
        delay = self.delay_ns[row] + time_sigma_ns(self.digitizer) * blur_rng.standard_normal(
            row.size)
        return {"crystal": crystal, "energy_kev": energy.astype(np.float32),
                "pos_mm": pos.astype(np.float32), "delay_ns": delay}


def calibrate(scanner: Scanner, digitizer: DigitizerSettings, photons_per_cell: int,
              seed: int, bins: ResponseBins | None = None, energy_cut_kev: float = 1.0,
              batch_photons: int = 200_000) -> DetectorResponse:
    """Measure the response with the embedded engine's transport and digitizer.

    Every cell gets ``photons_per_cell`` photons of 511 keV on average: entry column and
    virtual ring drawn so that the cells are equally filled (a random module, an entry point
    uniform within the crystal column's face and the ring's axial cell), angles uniform over
    the cell's bins. Each photon starts :data:`BACK_OFF_MM` before its entry point, in the
    bore, and is its own decay (photons never share a readout).

    Parameters
    ----------
    scanner, digitizer
        The geometry and the digitizer chain (their values are the calibration's identity).
    photons_per_cell : int
    seed : int
        Batch k draws from ``default_rng([seed, k])``.
    bins : ResponseBins, optional
    energy_cut_kev : float
        Photons below this energy deposit it locally (the engine's ``energy_cut_kev``).
    batch_photons : int
        Photons transported together (memory: about 1 kB each).
    """
    bins = bins or ResponseBins()
    transport = ring_transport(scanner, energy_cut_kev)
    total = photons_per_cell * n_cells(scanner, bins)
    parts = []
    for k, first in enumerate(range(0, total, batch_photons)):
        rng = np.random.default_rng([seed, k])
        parts.append(_calibration_batch(scanner, digitizer, bins, transport,
                                        min(batch_photons, total - first), rng))
    cells = np.concatenate([p[0] for p in parts])
    outcomes = {key: np.concatenate([p[1][key] for p in parts]) for key in parts[0][1]}
    sent = np.bincount(cells[cells >= 0], minlength=n_cells(scanner, bins))
    order = np.argsort(outcomes["cell"], kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(outcomes["cell"],
                                           minlength=n_cells(scanner, bins)))]
    return DetectorResponse(
        scanner, digitizer, bins, sent.astype(np.int64), start.astype(np.int64),
        outcomes["d_index"][order].astype(np.int16), outcomes["d_ring"][order].astype(np.int16),
        outcomes["deposited_kev"][order].astype(np.float32),
        outcomes["offset_mm"][order].astype(np.float32),
        outcomes["delay_ns"][order].astype(np.float32))


def _into_crystal(scanner: Scanner, crystal: np.ndarray, pos_mm: np.ndarray) -> np.ndarray:
    """The points of ``crystal`` nearest to ``pos_mm`` (each point clipped to its crystal's
    box, in the crystal's frame), mm, shape (n, 3)."""
    frames = scanner.crystal_frames(crystal)
    front = scanner.crystal_position_mm(crystal, 0.0)
    local = np.einsum("nij,nj->ni", frames, pos_mm - front)
    half_t = scanner.crystal_width_mm / 2.0
    half_z = scanner.crystal_axial_width_mm / 2.0
    local = np.clip(local, [0.0, -half_t, -half_z], [scanner.crystal_depth_mm, half_t, half_z])
    return front + np.einsum("ni,nij->nj", local, frames)


def photon_frame(direction: np.ndarray) -> np.ndarray:
    """Orthonormal frames (n, 3, 3) whose rows are the direction, the transaxial unit
    vector ``z x d`` (normalised) and their cross product.

    The ring's mirrors act simply on coordinates in these frames: the module's mid-plane
    (a vertical plane) changes the sign of the second, the scanner's mid-plane (z = 0) that
    of the third."""
    side = np.stack([-direction[:, 1], direction[:, 0], np.zeros(len(direction))], axis=1)
    side /= np.maximum(np.linalg.norm(side, axis=1), 1e-12)[:, None]
    return np.stack([direction, side, np.cross(direction, side)], axis=1)


def ring_transport(scanner: Scanner, energy_cut_kev: float = 1.0) -> Transport:
    """The embedded engine's transport with the ring and an empty bore (a one-voxel air
    phantom at the centre, which the calibration photons never cross)."""
    tables = MaterialTables.build(["air", scanner.crystal_material],
                                  e_min_kev=min(1.0, energy_cut_kev))
    medium = PhantomMedium.build(np.full((1, 1, 1), "air"),
                                 np.full((1, 1, 1), get_material("air").mu511_per_mm),
                                 np.ones(3), np.zeros(3), tables)
    return Transport(tables, medium, DetectorRing.build(scanner, tables), energy_cut_kev)


def _calibration_batch(scanner: Scanner, digitizer: DigitizerSettings, bins: ResponseBins,
                       transport: Transport, n: int, rng: np.random.Generator
                       ) -> tuple[np.ndarray, dict]:
    """Send ``n`` photons; their cells and the detected ones' outcomes."""
    start, direction = calibration_photons(scanner, n, bins, rng)
    return send_photons(scanner, digitizer, bins, transport, start, direction, rng)


def calibration_photons(scanner: Scanner, n: int, bins: ResponseBins,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start points and directions of ``n`` calibration photons, shapes (n, 3)."""
    cpm, cma = scanner.crystals_per_module, scanner.crystals_per_module_axial
    module = rng.integers(scanner.modules_per_ring, size=n)
    within = rng.integers(cpm, size=n)
    tau = (within - cpm / 2.0 + rng.random(n)) * scanner.crystal_pitch_mm
    # Axial class uniform: an end ring (or one just beyond) or a block row in the middle,
    # at either end of the scanner.
    axial = rng.integers(axial_classes(scanner), size=n)
    end = axial < OUTSIDE_RINGS + END_RINGS
    middle_blocks = np.unique(np.arange(END_RINGS, scanner.rings // 2) // cma)
    block = rng.choice(middle_blocks, size=n)
    ring = np.where(end, axial - OUTSIDE_RINGS,
                    block * cma + (axial - OUTSIDE_RINGS - END_RINGS))
    ring = np.where((~end) & (ring < END_RINGS), ring + cma, ring)
    ring = np.where(rng.random(n) < 0.5, ring, scanner.rings - 1 - ring)
    z = virtual_ring_z_mm(scanner, ring) + (rng.random(n) - 0.5) * scanner.axial_pitch_mm
    alpha = np.radians(rng.uniform(-bins.alpha_max_deg, bins.alpha_max_deg, n))
    beta = np.radians(rng.uniform(-bins.beta_max_deg, bins.beta_max_deg, n))
    direction = direction_from_angles(scanner, module, alpha, beta)
    return face_point_mm(scanner, module, tau, z) - BACK_OFF_MM * direction, direction


def send_photons(scanner: Scanner, digitizer: DigitizerSettings, bins: ResponseBins,
                 transport: Transport, start: np.ndarray, direction: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Transport photons of 511 keV from ``start`` (in the bore, :data:`BACK_OFF_MM`
    before their entry) along ``direction`` through the ring and the digitizer.

    Returns the cell of every photon (n,) and, for the detected ones, their index among the
    photons sent, cell, folded column and ring offsets, energy, interaction point offset and
    delay.
    """
    n = start.shape[0]
    entry = ring_entry(scanner, start, direction)
    folded = fold(scanner, bins, entry)
    ids = 2 * np.arange(n)  # photon 2i is decay i's only photon
    photons = Photons.start(start, direction, ANNIHILATION_KEV, ids, transport.phantom)
    hits = transport.run(photons, rng)
    singles = blur_and_window(adder_readout(hits, scanner, np.zeros(n)), digitizer, rng,
                              keep_deposits=True)
    # One outcome per photon: its most energetic in-window single.
    order = np.lexsort((-singles["energy_kev"], singles["event"]))
    event = singles["event"][order]
    first = order[np.r_[True, event[1:] != event[:-1]]] if event.size else order
    photon = singles["event"][first]
    keep = folded.cell[photon] >= 0
    first, photon = first[keep], photon[keep]
    crystal = singles["crystal"][first]
    det_ring, det_index = scanner.ring_and_index(crystal)
    flip_t, flip_z = folded.flip_t[photon], folded.flip_z[photon]
    half = scanner.crystals_per_ring // 2
    d_index = np.mod(det_index - entry.index(scanner)[photon] + half,
                     scanner.crystals_per_ring) - half
    shift = singles["pos_mm"][first] - entry.point_mm[photon]
    offset = np.einsum("nkj,nj->nk", photon_frame(direction[photon]), shift)
    offset[:, 1] *= flip_t
    offset[:, 2] *= flip_z
    path_to_entry_ns = entry.distance_mm[photon] / C_MM_PER_NS
    return folded.cell, {
        "photon": photon,
        "cell": folded.cell[photon],
        "d_index": d_index * flip_t,
        "d_ring": (det_ring - entry.ring[photon]) * flip_z,
        "deposited_kev": singles["deposited_kev"][first],
        "offset_mm": offset,
        "delay_ns": singles["time_unblurred_ns"][first] - path_to_entry_ns,
    }
