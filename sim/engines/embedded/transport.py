"""Vectorised photon transport of the embedded engine: phantom, bore and detector ring.

Every photon of a batch is in one of three zones, and each zone has its own stepping, all
vectorised over the photons in it (no per-photon Python loop):

``phantom`` (the voxel grid's box)
    Woodcock (delta) tracking. A photon of energy E flies an exponential distance with the
    majorant ``max_voxels mu(E)``; at the tentative point, a real interaction happens with
    probability ``mu_voxel(E) / majorant``. Leaving the box ends the walk at the box surface
    (exact, since the exponential law has no memory).
``bore`` (outside the box, inside the cylinder of the modules' front faces)
    Vacuum: straight flight to the box (re-entry after a backscatter) or to the ring.
``detector`` (the annulus that holds the crystals, within the ring's axial extent)
    Woodcock tracking with the crystal material's mu(E) as majorant: points inside a crystal
    (``Scanner.crystal_id_at``) interact, points in the gaps between modules or in the
    reflector are vacuum. Energy deposits in crystals are the hits.

Interactions are photoelectric absorption (local deposit; fluorescence is not followed),
Compton scattering on free electrons (Klein-Nishina; the electron deposits locally) and
Rayleigh scattering (form factors). Photons below ``energy_cut_kev`` deposit their energy where
they are. Compton and Rayleigh interactions outside the crystals are counted per photon as
phantom scatter (truth).

Voxel materials. The phantom file stores the dominant material of each voxel and the
partial-volume mixture's ``mu511``. The engine uses the dominant material's energy dependence
and process split, scaled so that each voxel's attenuation at 511 keV is exactly the mixture's
``mu511``: ``mu(E) = mu511_voxel / mu511_material * mu_material(E)``. Unscattered photons thus
see exactly the partial-volume attenuation of the phantom; GATE instead gives each voxel the
dominant material alone.

Over 400 lines: the three zones' vectorised stepping share one photon state and its
bookkeeping; split, each part would need the others' internals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sim.engines.embedded.physics import (
    CrossSectionTable,
    EnergyGrid,
    RayleighSampler,
    interpolate_rows,
    rotate_directions,
    sample_klein_nishina,
)
from sim.phantoms.materials import get_material
from sim.scanner.geometry import Scanner

#: Speed of light, mm/ns.
C_MM_PER_NS = 299.792458

ZONE_PHANTOM, ZONE_BORE, ZONE_DETECTOR, ZONE_DONE = 0, 1, 2, 3
#: Not a zone: the wall of the phantom's dense box (see :class:`PhantomMedium`).
ZONE_SWITCH = -1

#: Points this close to a boundary (mm) count as on it.
_EPS_MM = 1e-7


@dataclass(frozen=True)
class MaterialTables:
    """Cross sections and Rayleigh form factors of the materials a simulation meets.

    Attributes
    ----------
    names : tuple of str
        Material names; rows of the tables.
    grid : EnergyGrid
    mu_per_mm : numpy.ndarray
        Rayleigh, Compton, photoelectric per material, 1/mm, shape (n_materials, 3, n_energies).
    rayleigh : RayleighSampler
    """

    names: tuple[str, ...]
    grid: EnergyGrid
    mu_per_mm: np.ndarray
    rayleigh: RayleighSampler

    @classmethod
    def build(
        cls, names: tuple[str, ...] | list[str], e_min_kev: float = 1.0,
        e_max_kev: float = 520.0, n_energies: int = 2048,
    ) -> MaterialTables:
        """Tabulate ``names`` from xraylib between ``e_min_kev`` and ``e_max_kev``.

        2048 log-spaced points (0.3 % apart) keep linear interpolation within 1e-4 of xraylib
        except inside the one bin that holds an absorption edge.
        """
        grid = EnergyGrid(e_min_kev, e_max_kev, n_energies)
        table = CrossSectionTable.build(tuple(names), e_min_kev, e_max_kev, n_energies)
        return cls(tuple(names), grid, table.mu_per_mm, RayleighSampler.build(names, e_max_kev))

    def __post_init__(self) -> None:
        # (material, energy) -> 3 processes, contiguous: one gather per lookup.
        n_mat, _, n_e = self.mu_per_mm.shape
        flat = np.ascontiguousarray(self.mu_per_mm.transpose(0, 2, 1).reshape(n_mat * n_e, 3))
        object.__setattr__(self, "_flat", flat)

    def row(self, name: str) -> int:
        """Table row of material ``name``."""
        return self.names.index(name)

    def mu3(self, row: np.ndarray | int, i: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Rayleigh, Compton, photoelectric mu for each photon, 1/mm, shape (m, 3).

        ``row`` is the material row (array or one int), ``i, w`` from
        :meth:`EnergyGrid.locate`.
        """
        k = np.asarray(row, dtype=np.int64) * self.grid.n + i
        lo = self._flat[k]
        hi = self._flat[k + 1]
        hi -= lo
        hi *= w[:, None]
        hi += lo
        return hi


@dataclass(frozen=True)
class PhantomMedium:
    """The phantom's voxel grid as the transport sees it.

    Attributes
    ----------
    lo_mm, hi_mm : numpy.ndarray
        Box corners (x, y, z), mm.
    voxel_mm : numpy.ndarray
        Voxel size (x, y, z), mm.
    shape_xyz : tuple of int
    material_row : numpy.ndarray
        Flat (z, y, x) voxel -> row of :class:`MaterialTables`, uint8.
    scale : numpy.ndarray
        Flat voxel -> ``mu511_voxel / mu511_material``, float64.
    majorant_per_mm : numpy.ndarray
        Majorants on the tables' grid, shape (2, n_energies): row 0 over the voxels outside
        the dense box, row 1 over the voxels inside it.
    dense_lo_mm, dense_hi_mm : numpy.ndarray
        Corners (x, y, z) of the dense box: the bounding box of the voxels that attenuate more
        than every pure material but the densest, when that box is small (a steel inclusion).
        Woodcock tracking then uses the high majorant only inside it, so one small dense
        defect does not multiply the steps of every photon; the box walls are crossed like
        zone boundaries (exact, by the memorylessness of the exponential). Empty (lo > hi)
        when there is none.
    """

    lo_mm: np.ndarray
    hi_mm: np.ndarray
    voxel_mm: np.ndarray
    shape_xyz: tuple[int, int, int]
    material_row: np.ndarray
    scale: np.ndarray
    majorant_per_mm: np.ndarray
    dense_lo_mm: np.ndarray
    dense_hi_mm: np.ndarray

    #: The dense box is used when it holds at most this fraction of the grid's voxels.
    DENSE_BOX_MAX_FRACTION = 0.125

    @classmethod
    def build(
        cls, material_names: np.ndarray, mu511_per_mm: np.ndarray, voxel_size_mm: np.ndarray,
        origin_mm: np.ndarray, tables: MaterialTables,
    ) -> PhantomMedium:
        """From per-voxel material names and ``mu511`` maps (z, y, x) and the voxel geometry.

        Parameters
        ----------
        material_names : numpy.ndarray of str, shape (nz, ny, nx)
        mu511_per_mm : numpy.ndarray, shape (nz, ny, nx)
        voxel_size_mm, origin_mm : array, (z, y, x); origin is the centre of voxel 0.
        tables : MaterialTables
            Must hold every material of ``material_names``.
        """
        names, inverse = np.unique(material_names.ravel(), return_inverse=True)
        rows = np.array([tables.row(str(n)) for n in names], dtype=np.uint8)
        material_row = rows[inverse]
        ref = np.array([get_material(str(n)).mu511_per_mm for n in names])[inverse]
        scale = np.asarray(mu511_per_mm, dtype=np.float64).ravel() / ref
        voxel_xyz = np.asarray(voxel_size_mm, float)[::-1]
        lo = np.asarray(origin_mm, float)[::-1] - voxel_xyz / 2.0
        shape_zyx = material_names.shape
        shape_xyz = tuple(int(s) for s in shape_zyx[::-1])
        total = tables.mu_per_mm.sum(axis=1)
        mu_voxel_511 = np.asarray(mu511_per_mm, dtype=np.float64).ravel()
        # Dense box: bounding box of the voxels that attenuate more at 511 keV than any pure
        # material of the phantom other than the densest one.
        pure = sorted({get_material(str(n)).mu511_per_mm for n in names})
        threshold = pure[-2] * 1.001 if len(pure) > 1 else np.inf
        dense = mu_voxel_511 > threshold
        if not dense.any():
            dense[np.argmax(mu_voxel_511)] = True
        zyx = np.stack(np.unravel_index(np.flatnonzero(dense), shape_zyx), axis=1)
        box_lo, box_hi = zyx.min(axis=0), zyx.max(axis=0) + 1
        in_box = np.zeros(shape_zyx, bool)
        in_box[box_lo[0]:box_hi[0], box_lo[1]:box_hi[1], box_lo[2]:box_hi[2]] = True
        in_box = in_box.ravel()
        if in_box.mean() > cls.DENSE_BOX_MAX_FRACTION:
            in_box[:] = False
            dense_lo, dense_hi = np.full(3, np.inf), np.full(3, -np.inf)
        else:
            dense_lo = lo + box_lo[::-1] * voxel_xyz
            dense_hi = lo + box_hi[::-1] * voxel_xyz
        majorant = np.zeros((2, tables.grid.n))
        for region, sel in enumerate((~in_box, in_box)):
            for r in np.unique(material_row[sel]):
                voxels = sel & (material_row == r)
                majorant[region] = np.maximum(majorant[region],
                                              scale[voxels].max() * total[r])
        # Linear interpolation of the maxima bounds the interpolated mu of every voxel; the
        # 1e-6 margin covers rounding.
        return cls(lo, lo + voxel_xyz * shape_xyz, voxel_xyz, shape_xyz, material_row, scale,
                   majorant * (1.0 + 1e-6), dense_lo, dense_hi)

    def voxel_index(self, pos_mm: np.ndarray) -> np.ndarray:
        """Flat (z, y, x) index of the voxel holding each point inside the box.

        Points on the upper faces map to the last voxel; points outside are not checked.
        """
        nx, ny, nz = self.shape_xyz
        ijk = ((pos_mm - self.lo_mm) / self.voxel_mm).astype(np.int64)
        np.minimum(ijk, (nx - 1, ny - 1, nz - 1), out=ijk)
        np.maximum(ijk, 0, out=ijk)
        return ijk @ np.array([1, nx, nx * ny], dtype=np.int64)

    def contains(self, pos_mm: np.ndarray) -> np.ndarray:
        """Whether each point is inside the box, shape (n,)."""
        return np.all((pos_mm >= self.lo_mm) & (pos_mm <= self.hi_mm), axis=1)


@dataclass
class Photons:
    """State of a batch of photons (structure of arrays, n photons).

    Attributes
    ----------
    pos_mm, direction : numpy.ndarray, shape (n, 3)
    energy_kev, path_mm : numpy.ndarray, shape (n,)
        Energy and distance flown since the annihilation (for the time of flight).
    photon : numpy.ndarray of int64, shape (n,)
        Photon id: ``2 * decay + k`` for photon k in {0, 1} of a decay.
    n_compton, n_rayleigh : numpy.ndarray of int16, shape (n,)
        Interactions outside the crystals so far.
    zone : numpy.ndarray of int8, shape (n,)
    """

    pos_mm: np.ndarray
    direction: np.ndarray
    energy_kev: np.ndarray
    path_mm: np.ndarray
    photon: np.ndarray
    n_compton: np.ndarray
    n_rayleigh: np.ndarray
    zone: np.ndarray

    @classmethod
    def start(
        cls, pos_mm: np.ndarray, direction: np.ndarray, energy_kev: float, photon: np.ndarray,
        phantom: PhantomMedium,
    ) -> Photons:
        """New photons at ``pos_mm`` (in the phantom zone when inside the box)."""
        n = pos_mm.shape[0]
        zone = np.where(phantom.contains(pos_mm), ZONE_PHANTOM, ZONE_BORE).astype(np.int8)
        return cls(pos_mm.astype(np.float64), direction.astype(np.float64),
                   np.full(n, float(energy_kev)), np.zeros(n), photon.astype(np.int64),
                   np.zeros(n, np.int16), np.zeros(n, np.int16), zone)

    _FIELDS = ("pos_mm", "direction", "energy_kev", "path_mm", "photon", "n_compton",
               "n_rayleigh")

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the fields of photons ``idx``."""
        return {f: getattr(self, f)[idx] for f in self._FIELDS}

    def put(self, idx: np.ndarray, values: dict[str, np.ndarray], zone: np.ndarray) -> None:
        """Write back fields and zones of photons ``idx``."""
        for f in self._FIELDS:
            getattr(self, f)[idx] = values[f]
        self.zone[idx] = zone


@dataclass
class Hits:
    """Energy deposits in crystals (m hits).

    Attributes
    ----------
    photon : int64 (m,); crystal : int32 (m,); energy_kev : (m,); pos_mm : (m, 3);
    path_mm : (m,) distance flown by the photon before the deposit;
    n_compton, n_rayleigh : int16 (m,) the photon's phantom scatter before the deposit.
    """

    photon: np.ndarray
    crystal: np.ndarray
    energy_kev: np.ndarray
    pos_mm: np.ndarray
    path_mm: np.ndarray
    n_compton: np.ndarray
    n_rayleigh: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[Hits]) -> Hits:
        """One :class:`Hits` from several (an empty list gives no hits)."""
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0),
                       np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int16),
                       np.zeros(0, np.int16))
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in cls.__dataclass_fields__))


def _slab_distances(pos: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Per-axis distances to the near and far planes of a box, each shape (n, 3)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
        t1 = (lo - pos) * inv
        t2 = (hi - pos) * inv
    return np.minimum(t1, t2), np.maximum(t1, t2)


def _min3(t: np.ndarray) -> np.ndarray:
    # Column-wise, much faster than a reduction over a length-3 axis; fmin skips the NaN of
    # a point exactly on a plane parallel to the flight.
    return np.fmin(np.fmin(t[:, 0], t[:, 1]), t[:, 2])


def _max3(t: np.ndarray) -> np.ndarray:
    return np.fmax(np.fmax(t[:, 0], t[:, 1]), t[:, 2])


def box_exit_mm(pos: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Distance to leave an axis-aligned box from inside, mm, shape (n,)."""
    _, t_far = _slab_distances(pos, direction, lo, hi)
    return np.maximum(_min3(t_far), 0.0)


def box_entry_mm(pos: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Distance to enter an axis-aligned box from outside, mm; inf when the ray misses."""
    t_near_axes, t_far_axes = _slab_distances(pos, direction, lo, hi)
    t_near, t_far = _max3(t_near_axes), _min3(t_far_axes)
    hit = (t_near < t_far) & (t_far > _EPS_MM)
    return np.where(hit, np.maximum(t_near, 0.0), np.inf)


def _cylinder_terms(pos, direction, radius_mm):
    a = direction[:, 0] ** 2 + direction[:, 1] ** 2
    b = pos[:, 0] * direction[:, 0] + pos[:, 1] * direction[:, 1]
    c = pos[:, 0] ** 2 + pos[:, 1] ** 2 - radius_mm**2
    return a, b, c


def cylinder_exit_mm(pos: np.ndarray, direction: np.ndarray, radius_mm: float) -> np.ndarray:
    """Distance to leave the infinite cylinder ``x^2 + y^2 < r^2`` from inside, mm."""
    a, b, c = _cylinder_terms(pos, direction, radius_mm)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
    return np.where(a > 0, np.maximum(t, 0.0), np.inf)


def cylinder_entry_mm(pos: np.ndarray, direction: np.ndarray, radius_mm: float) -> np.ndarray:
    """Distance to enter the infinite cylinder of ``radius_mm`` from outside, mm; inf if missed."""
    a, b, c = _cylinder_terms(pos, direction, radius_mm)
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((a > 0) & (disc > 0) & (t > _EPS_MM), t, np.inf)


@dataclass(frozen=True)
class DetectorRing:
    """The crystal annulus: the scanner and the bounds of its zone.

    Attributes
    ----------
    scanner : Scanner
    inner_radius_mm : float
        Front faces (polygon apothem); inside is the bore.
    outer_radius_mm : float
        Circumradius of the polygon of the modules' back faces.
    half_length_mm : float
        Half the axial extent of the crystals.
    material_row : int
        Row of the crystal material in the tables.
    """

    scanner: Scanner
    inner_radius_mm: float
    outer_radius_mm: float
    half_length_mm: float
    material_row: int

    @classmethod
    def build(cls, scanner: Scanner, tables: MaterialTables) -> DetectorRing:
        """Zone bounds of ``scanner``."""
        r_in = float(scanner.inner_radius_mm)
        r_out = (r_in + scanner.crystal_depth_mm) / np.cos(np.pi / scanner.modules_per_ring)
        return cls(scanner, r_in, float(r_out), scanner.axial_length_mm / 2.0,
                   tables.row(scanner.crystal_material))


class Transport:
    """Transport of photon batches through a phantom and a ring (see the module docstring).

    Parameters
    ----------
    tables : MaterialTables
    phantom : PhantomMedium
    ring : DetectorRing
    energy_cut_kev : float
        Photons below this energy deposit it locally and stop.
    useless_below_kev : float
        Photons outside the crystals below this energy stop (default 0: never). A photon
        that reaches the ring with energy E can only form singles of at most E (plus the rare
        deposits of the other photon of its decay in the same block), so when this is far
        below the energy window nothing in the window changes, and the long tail of
        low-energy photons random-walking in the phantom is not simulated.
    """

    def __init__(
        self, tables: MaterialTables, phantom: PhantomMedium, ring: DetectorRing,
        energy_cut_kev: float, useless_below_kev: float = 0.0,
    ) -> None:
        corners = np.array([[x, y] for x in (phantom.lo_mm[0], phantom.hi_mm[0])
                            for y in (phantom.lo_mm[1], phantom.hi_mm[1])])
        if np.hypot(corners[:, 0], corners[:, 1]).max() >= ring.inner_radius_mm:
            raise ValueError(
                f"phantom grid (corners up to {np.hypot(*corners.T).max():.1f} mm from the axis) "
                "does not fit inside the ring's bore (front faces at "
                f"{ring.inner_radius_mm:.1f} mm)"
            )
        if energy_cut_kev < tables.grid.e_min_kev:
            raise ValueError(f"energy_cut_kev {energy_cut_kev} is below the cross-section "
                             f"tables' {tables.grid.e_min_kev} keV")
        self.tables = tables
        self.phantom = phantom
        self.ring = ring
        self.energy_cut_kev = float(energy_cut_kev)
        self.useless_below_kev = float(useless_below_kev)
        self._total = tables.mu_per_mm.sum(axis=1)

    # ------------------------------------------------------------------ driver
    def run(self, photons: Photons, rng: np.random.Generator,
            timings: dict | None = None) -> Hits:
        """Transport every photon until it is absorbed or leaves; returns the crystal hits.

        ``timings`` (optional) accumulates seconds under ``phantom`` (phantom and bore) and
        ``detector``.
        """
        hits: list[Hits] = []
        timings = {} if timings is None else timings
        while True:
            moved = False
            for zone, walk, label in ((ZONE_PHANTOM, self._phantom_walk, "phantom"),
                                      (ZONE_BORE, self._bore_flight, "phantom"),
                                      (ZONE_DETECTOR, self._detector_walk, "detector")):
                idx = np.flatnonzero(photons.zone == zone)
                if idx.size:
                    t0 = time.perf_counter()
                    moved = True
                    values = photons.take(idx)
                    new_zone = walk(values, rng, hits)
                    photons.put(idx, values, new_zone)
                    timings[label] = timings.get(label, 0.0) + time.perf_counter() - t0
            if not moved:
                return Hits.concatenate(hits)

    def transport_phantom(self, photons: Photons, rng: np.random.Generator) -> None:
        """Move the photons of the phantom zone until each leaves the box (zone ``bore``) or
        stops (zone ``done``); the other photons are left alone."""
        idx = np.flatnonzero(photons.zone == ZONE_PHANTOM)
        values = photons.take(idx)
        photons.put(idx, values, self._phantom_walk(values, rng, []))

    # ------------------------------------------------------------------ zones
    def _bore_flight(self, v: dict, rng: np.random.Generator, hits: list) -> np.ndarray:
        p, d = v["pos_mm"], v["direction"]
        t_box = box_entry_mm(p, d, self.phantom.lo_mm, self.phantom.hi_mm)
        t_ring = cylinder_exit_mm(p, d, self.ring.inner_radius_mm)
        to_box = t_box < t_ring
        t = np.where(to_box, t_box, t_ring)
        p += t[:, None] * d
        v["path_mm"] += t
        in_ring = np.abs(p[:, 2]) <= self.ring.half_length_mm
        return np.where(to_box, ZONE_PHANTOM,
                        np.where(in_ring, ZONE_DETECTOR, ZONE_DONE)).astype(np.int8)

    def _scatter(self, v: dict, k: np.ndarray, process: np.ndarray, row: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
        """Apply Rayleigh (process 0) or Compton (1) to photons ``k``; returns deposits, keV."""
        energy = v["energy_kev"][k]
        cos_t = np.empty(k.size)
        new_energy = energy.copy()
        ray = process == 0
        if ray.any():
            cos_t[ray] = self.tables.rayleigh.sample(row[ray], energy[ray], rng)
        if (~ray).any():
            cos_t[~ray], new_energy[~ray] = sample_klein_nishina(energy[~ray], rng)
        v["direction"][k] = rotate_directions(v["direction"][k], cos_t,
                                              2.0 * np.pi * rng.random(k.size))
        v["energy_kev"][k] = new_energy
        return energy - new_energy

    def _collide(self, v: dict, c: np.ndarray, mu3: np.ndarray, majorant: np.ndarray,
                 row: np.ndarray, rng: np.random.Generator):
        """Decide real collisions at tentative points ``c`` and apply them.

        Returns ``(real, process, deposit_kev, absorbed)`` over ``c``: process 0 Rayleigh,
        1 Compton, 2 photoelectric; ``absorbed`` includes photons that fell below the cut.
        """
        r = rng.random(c.size) * majorant
        cum_ray = mu3[:, 0]
        cum_compton = cum_ray + mu3[:, 1]
        real = r < cum_compton + mu3[:, 2]
        process = (r >= cum_ray).astype(np.int8) + (r >= cum_compton)
        deposit = np.zeros(c.size)
        scatter = real & (process < 2)
        s = np.flatnonzero(scatter)
        if s.size:
            deposit[s] = self._scatter(v, c[s], process[s], row[s], rng)
        photo = real & (process == 2)
        deposit[photo] = v["energy_kev"][c[photo]]
        low = scatter & (v["energy_kev"][c] < self.energy_cut_kev)
        deposit[low] += v["energy_kev"][c[low]]
        return real, process, deposit, photo | low

    def _phantom_walk(self, v: dict, rng: np.random.Generator, hits: list) -> np.ndarray:
        return self._woodcock(v, rng, hits, in_detector=False)

    def _detector_walk(self, v: dict, rng: np.random.Generator, hits: list) -> np.ndarray:
        return self._woodcock(v, rng, hits, in_detector=True)

    def _exit(self, p: np.ndarray, d: np.ndarray, in_detector: bool,
              region: np.ndarray | None = None):
        """Distance to leave the zone (or the phantom's dense box), and what comes there:
        the next zone, or ``ZONE_SWITCH`` for a dense-box wall."""
        if not in_detector:
            ph = self.phantom
            t = box_exit_mm(p, d, ph.lo_mm, ph.hi_mm)
            zone = np.full(t.size, ZONE_BORE, np.int8)
            if region is not None and np.isfinite(ph.dense_lo_mm[0]):
                near, far = _slab_distances(p, d, ph.dense_lo_mm, ph.dense_hi_mm)
                t_near, t_far = _max3(near), _min3(far)
                entry = np.where((t_near < t_far) & (t_far > _EPS_MM), np.maximum(t_near, 0.0),
                                 np.inf)
                t_dense = np.where(region == 1, np.maximum(t_far, 0.0), entry)
                switch = t_dense < t
                t = np.where(switch, t_dense, t)
                zone[switch] = ZONE_SWITCH
            return t, zone
        ring = self.ring
        t_out = cylinder_exit_mm(p, d, ring.outer_radius_mm)
        t_in = cylinder_entry_mm(p, d, ring.inner_radius_mm)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_z = np.where(d[:, 2] != 0,
                           (np.sign(d[:, 2]) * ring.half_length_mm - p[:, 2]) / d[:, 2], np.inf)
        t_z = np.maximum(t_z, 0.0)
        t = np.minimum(np.minimum(t_out, t_in), t_z)
        zone = np.where(t_in <= np.minimum(t_out, t_z), ZONE_BORE, ZONE_DONE).astype(np.int8)
        return t, zone

    def _majorant(self, i: np.ndarray, w: np.ndarray, in_detector: bool,
                  region: np.ndarray | None = None) -> np.ndarray:
        if in_detector:
            return interpolate_rows(self._total, self.ring.material_row, i, w)
        return interpolate_rows(self.phantom.majorant_per_mm, region, i, w)

    def _woodcock(self, v: dict, rng: np.random.Generator, hits: list,
                  in_detector: bool) -> np.ndarray:
        """Delta tracking of the photons ``v`` through the phantom box or the crystal annulus.

        The walk keeps compact local copies of the photons still inside; each photon's
        majorant and distance to the zone exit are recomputed only when it changes energy or
        direction. Photons write their state back to ``v`` when they leave or stop.
        Returns the zone each photon ends in.
        """
        grid = self.tables.grid
        out_zone = np.full(v["photon"].size, ZONE_DONE, np.int8)
        # Truth fields stay in ``v`` (updated in place); only the moving state is compacted.
        loc = {k: v[k].copy() for k in ("pos_mm", "direction", "energy_kev", "path_mm")}
        loc["index"] = np.arange(v["photon"].size)
        i, w = grid.locate(loc["energy_kev"])
        loc["i"], loc["w"] = i, w
        if in_detector:
            loc["region"] = np.zeros(v["photon"].size, np.int64)
        else:
            ph = self.phantom
            loc["region"] = np.all((loc["pos_mm"] >= ph.dense_lo_mm)
                                   & (loc["pos_mm"] <= ph.dense_hi_mm), axis=1).astype(np.int64)
        loc["majorant"] = self._majorant(i, w, in_detector, loc["region"])
        loc["t_exit"], loc["exit_zone"] = self._exit(loc["pos_mm"], loc["direction"],
                                                     in_detector, loc["region"])
        while loc["index"].size:
            n = loc["index"].size
            s = rng.standard_exponential(n) / loc["majorant"]
            leave = s >= loc["t_exit"]
            step = np.minimum(s, loc["t_exit"])
            loc["pos_mm"] += step[:, None] * loc["direction"]
            loc["path_mm"] += step
            loc["t_exit"] -= step
            switch = np.flatnonzero(leave & (loc["exit_zone"] == ZONE_SWITCH))
            if switch.size:  # crossed a dense-box wall: new majorant, fly on
                leave[switch] = False
                loc["region"][switch] ^= 1
                k = switch
                loc["majorant"][k] = self._majorant(loc["i"][k], loc["w"][k], False,
                                                    loc["region"][k])
                loc["t_exit"][k], loc["exit_zone"][k] = self._exit(
                    loc["pos_mm"][k], loc["direction"][k], False, loc["region"][k])
                s[k] = 0.0  # no collision at the wall
            stay = np.flatnonzero(~leave & (s > 0))
            p = loc["pos_mm"][stay]
            if in_detector:
                crystal = self.ring.scanner.crystal_id_at(p)
                inside = crystal >= 0
                stay, crystal = stay[inside], crystal[inside]
                row = np.full(stay.size, self.ring.material_row)
                mu3 = self.tables.mu3(self.ring.material_row, loc["i"][stay], loc["w"][stay])
            else:
                vox = self.phantom.voxel_index(p)
                row = self.phantom.material_row[vox]
                mu3 = self.tables.mu3(row, loc["i"][stay], loc["w"][stay])
                mu3 *= self.phantom.scale[vox][:, None]
            real, process, deposit, absorbed = self._collide(
                loc, stay, mu3, loc["majorant"][stay], row, rng)
            scattered = stay[real & (process < 2)]
            if in_detector:
                dep = np.flatnonzero(deposit > 0)
                if dep.size:
                    k = stay[dep]
                    g = loc["index"][k]
                    hits.append(Hits(v["photon"][g], crystal[dep].astype(np.int32),
                                     deposit[dep], loc["pos_mm"][k], loc["path_mm"][k],
                                     v["n_compton"][g], v["n_rayleigh"][g]))
                useless = np.zeros(0, np.int64)
            else:
                v["n_rayleigh"][loc["index"][stay[real & (process == 0)]]] += 1
                v["n_compton"][loc["index"][stay[real & (process == 1)]]] += 1
                useless = scattered[loc["energy_kev"][scattered] < self.useless_below_kev]
            # New direction (and energy): new exit distance and majorant.
            k = scattered
            loc["i"][k], loc["w"][k] = grid.locate(loc["energy_kev"][k])
            loc["majorant"][k] = self._majorant(loc["i"][k], loc["w"][k], in_detector,
                                                loc["region"][k])
            loc["t_exit"][k], loc["exit_zone"][k] = self._exit(
                loc["pos_mm"][k], loc["direction"][k], in_detector, loc["region"][k])
            done = leave.copy()
            done[stay[absorbed]] = True
            done[useless] = True
            if done.any():
                gone = np.flatnonzero(done)
                target = loc["index"][gone]
                for key in ("pos_mm", "direction", "energy_kev", "path_mm"):
                    v[key][target] = loc[key][gone]
                out_zone[target] = np.where(leave[gone], loc["exit_zone"][gone], ZONE_DONE)
                keep = ~done
                loc = {key: value[keep] for key, value in loc.items()}
        return out_zone
