"""Scanner geometry: a ring of flat detector modules, the single source of crystal positions.

Conventions (``DESIGN.md``):

* the scanner axis is z, the origin is the centre of the scanner;
* crystal id = ``ring * crystals_per_ring + transaxial_index``;
* transaxial index 0 has its centre (at mid-depth) on the +x axis, indices grow
  counter-clockwise seen from +z;
* ring 0 is at the lowest z.

Layout. ``modules_per_ring`` flat modules form a regular polygon around the axis. A module's
front face holds ``crystals_per_module`` crystal cells of width ``crystal_pitch_mm`` side by
side (face width ``W``), and the front-face corners of neighbouring modules are
``module_gap_mm`` (``g``) apart. Each corner then stops ``g / (2 cos(pi / M))`` short of the
polygon vertex, so the polygon side is ``s = W + g / cos(pi / M)`` and the inner radius (the
apothem, distance from the axis to a module's front face) is::

    inner_radius_mm = s / (2 tan(pi / M))

For the default 23 modules of 8 crystals at 4 mm this is 116.4 mm. The whole ring is rotated
so that crystal 0 sits on +x (GATE's ring repeater does the same with ``setFirstAngle``).
Crystals are boxes of ``crystal_depth_mm`` x ``crystal_width_mm`` x ``crystal_axial_width_mm``
(radial, tangential, axial) whose centres lie at mid-depth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Keys of the ``scanner`` config section that describe geometry (the rest is digitizer).
GEOMETRY_KEYS = (
    "crystals_per_ring",
    "rings",
    "modules_per_ring",
    "crystals_per_module_axial",
    "crystal_pitch_mm",
    "axial_pitch_mm",
    "crystal_width_mm",
    "crystal_axial_width_mm",
    "crystal_depth_mm",
    "module_gap_mm",
    "axial_module_gap_mm",
    "crystal_material",
)


@dataclass(frozen=True)
class Scanner:
    """Geometry of a ring scanner of flat modules (all lengths in mm)."""

    crystals_per_ring: int = 184
    rings: int = 64
    modules_per_ring: int = 23
    crystals_per_module_axial: int = 8
    crystal_pitch_mm: float = 4.0
    axial_pitch_mm: float = 4.0
    crystal_width_mm: float = 4.0
    crystal_axial_width_mm: float = 4.0
    crystal_depth_mm: float = 20.0
    module_gap_mm: float = 0.0
    axial_module_gap_mm: float = 0.0
    crystal_material: str = "lyso"

    def __post_init__(self) -> None:
        problems = self.consistency_problems()
        if problems:
            raise ValueError("inconsistent scanner geometry: " + "; ".join(problems))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, scanner_cfg: dict[str, Any]) -> Scanner:
        """Build from the ``scanner`` section of the config (digitizer keys are ignored)."""
        return cls(**{k: scanner_cfg[k] for k in GEOMETRY_KEYS if k in scanner_cfg})

    def to_dict(self) -> dict[str, Any]:
        """Geometry parameters as a plain dict (for provenance attributes)."""
        return asdict(self)

    def consistency_problems(self) -> list[str]:
        """Human-readable list of inconsistencies between the parameters (empty when fine)."""
        problems = []
        if self.crystals_per_ring % self.modules_per_ring:
            problems.append(
                f"crystals_per_ring ({self.crystals_per_ring}) is not a multiple of "
                f"modules_per_ring ({self.modules_per_ring})"
            )
        if self.rings % self.crystals_per_module_axial:
            problems.append(
                f"rings ({self.rings}) is not a multiple of crystals_per_module_axial "
                f"({self.crystals_per_module_axial})"
            )
        if self.crystal_width_mm > self.crystal_pitch_mm:
            problems.append(
                f"crystal_width_mm ({self.crystal_width_mm}) exceeds crystal_pitch_mm "
                f"({self.crystal_pitch_mm})"
            )
        if self.crystal_axial_width_mm > self.axial_pitch_mm:
            problems.append(
                f"crystal_axial_width_mm ({self.crystal_axial_width_mm}) exceeds axial_pitch_mm "
                f"({self.axial_pitch_mm})"
            )
        return problems

    # ------------------------------------------------------------------ derived sizes
    @property
    def n_crystals(self) -> int:
        """Total number of crystals."""
        return self.crystals_per_ring * self.rings

    @property
    def crystals_per_module(self) -> int:
        """Crystals across one module, transaxially."""
        return self.crystals_per_ring // self.modules_per_ring

    @property
    def axial_modules(self) -> int:
        """Modules stacked along z."""
        return self.rings // self.crystals_per_module_axial

    @property
    def module_width_mm(self) -> float:
        """Width of a module's front face (crystal cells only), mm."""
        return self.crystals_per_module * self.crystal_pitch_mm

    @property
    def inner_radius_mm(self) -> float:
        """Distance from the axis to the front face of every module (polygon apothem), mm."""
        half_angle = np.pi / self.modules_per_ring
        side_mm = self.module_width_mm + self.module_gap_mm / np.cos(half_angle)
        return side_mm / (2.0 * np.tan(half_angle))

    @property
    def axial_length_mm(self) -> float:
        """Axial extent of the crystal cells, mm."""
        return (
            self.axial_modules * self.crystals_per_module_axial * self.axial_pitch_mm
            + (self.axial_modules - 1) * self.axial_module_gap_mm
        )

    @property
    def crystal_size_mm(self) -> np.ndarray:
        """Crystal box size (depth, width, axial width), mm, shape (3,)."""
        return np.array(
            [self.crystal_depth_mm, self.crystal_width_mm, self.crystal_axial_width_mm]
        )

    # ------------------------------------------------------------------ angles and offsets
    def _tangential_offsets_mm(self) -> np.ndarray:
        """Offset of each crystal of a module along the module tangent, mm, shape (n,)."""
        n = self.crystals_per_module
        return (np.arange(n) - (n - 1) / 2.0) * self.crystal_pitch_mm

    @property
    def first_module_angle_rad(self) -> float:
        """Polar angle of module 0's normal that puts crystal 0's centre on +x, rad."""
        t0 = self._tangential_offsets_mm()[0]
        return float(-np.arctan2(t0, self.inner_radius_mm + self.crystal_depth_mm / 2.0))

    @property
    def module_angles_rad(self) -> np.ndarray:
        """Polar angle of each module's outward normal, rad, shape (modules_per_ring,)."""
        step = 2.0 * np.pi / self.modules_per_ring
        return self.first_module_angle_rad + step * np.arange(self.modules_per_ring)

    @property
    def ring_z_mm(self) -> np.ndarray:
        """Axial centre of each ring, mm, shape (rings,), increasing with the ring number."""
        ring = np.arange(self.rings)
        module, row = np.divmod(ring, self.crystals_per_module_axial)
        module_pitch_mm = self.crystals_per_module_axial * self.axial_pitch_mm
        return (
            -self.axial_length_mm / 2.0
            + module * (module_pitch_mm + self.axial_module_gap_mm)
            + (row + 0.5) * self.axial_pitch_mm
        )

    # ------------------------------------------------------------------ ids
    def crystal_id(self, ring: np.ndarray | int, index: np.ndarray | int) -> np.ndarray:
        """Global crystal id from ring and transaxial index (int32, same shape as inputs)."""
        ring = np.asarray(ring)
        index = np.asarray(index)
        if np.any((ring < 0) | (ring >= self.rings)):
            raise ValueError(f"ring out of range [0, {self.rings})")
        if np.any((index < 0) | (index >= self.crystals_per_ring)):
            raise ValueError(f"transaxial index out of range [0, {self.crystals_per_ring})")
        return (ring * self.crystals_per_ring + index).astype(np.int32)

    def ring_and_index(self, crystal_id: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Ring and transaxial index of crystal ids (each int32, shape of the input)."""
        crystal_id = np.asarray(crystal_id)
        if np.any((crystal_id < 0) | (crystal_id >= self.n_crystals)):
            raise ValueError(f"crystal id out of range [0, {self.n_crystals})")
        ring, index = np.divmod(crystal_id, self.crystals_per_ring)
        return ring.astype(np.int32), index.astype(np.int32)

    def _all_ids(self, crystal_id: np.ndarray | None) -> np.ndarray:
        if crystal_id is None:
            return np.arange(self.n_crystals)
        return np.asarray(crystal_id)

    # ------------------------------------------------------------------ GATE hierarchy
    def gate_ids(self, crystal_id: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """GATE ``cylindricalPET`` ids (rsector, module, crystal) of global crystal ids.

        The GATE system (macros of ``gate_macros/``, the opengate builder) repeats one
        rsector per angular module with a ring repeater (copy 0 on +x at
        :attr:`first_module_angle_rad`, counter-clockwise), stacks ``axial_modules`` modules
        along z in each rsector (copy 0 at the lowest z) and fills each module with a
        ``1 x crystals_per_module x crystals_per_module_axial`` cubic array, whose copy number
        is ``j + ny * k`` (GATE's ``GateArrayRepeater``: x fastest, then y, then z) with ``j``
        along the tangent and ``k`` along z.

        Returns
        -------
        rsector, module, crystal : numpy.ndarray
            int32 arrays of the input's shape.
        """
        ring, index = self.ring_and_index(crystal_id)
        rsector, j = np.divmod(index, self.crystals_per_module)
        module, k = np.divmod(ring, self.crystals_per_module_axial)
        crystal = j + self.crystals_per_module * k
        return rsector.astype(np.int32), module.astype(np.int32), crystal.astype(np.int32)

    def crystal_id_from_gate(
        self, rsector: np.ndarray, module: np.ndarray, crystal: np.ndarray
    ) -> np.ndarray:
        """Global crystal ids from GATE (rsector, module, crystal) ids; inverse of :meth:`gate_ids`.

        Raises
        ------
        ValueError
            If an id is outside this scanner's range (data from another geometry).
        """
        rsector, module, crystal = (np.asarray(a, dtype=np.int64) for a in (rsector, module,
                                                                            crystal))
        limits = {"rsector": (rsector, self.modules_per_ring),
                  "module": (module, self.axial_modules),
                  "crystal": (crystal, self.crystals_per_module * self.crystals_per_module_axial)}
        for name, (ids, n) in limits.items():
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise ValueError(f"{name} id out of range [0, {n}) for this scanner "
                                 f"(found {ids.min()}..{ids.max()})")
        j, k = crystal % self.crystals_per_module, crystal // self.crystals_per_module
        ring = module * self.crystals_per_module_axial + k
        index = rsector * self.crystals_per_module + j
        return self.crystal_id(ring, index)

    # ------------------------------------------------------------------ positions
    def crystal_frames(self, crystal_id: np.ndarray | None = None) -> np.ndarray:
        """Orthonormal frame of each crystal: rows are the outward normal, tangent and axis.

        Returns
        -------
        numpy.ndarray
            Shape (..., 3, 3): ``[..., 0, :]`` the module's outward normal (depth direction),
            ``[..., 1, :]`` the tangent (direction of growing transaxial index),
            ``[..., 2, :]`` +z.
        """
        _, index = self.ring_and_index(self._all_ids(crystal_id))
        phi = self.module_angles_rad[index // self.crystals_per_module]
        cos, sin = np.cos(phi), np.sin(phi)
        zero, one = np.zeros_like(phi), np.ones_like(phi)
        normal = np.stack([cos, sin, zero], axis=-1)
        tangent = np.stack([-sin, cos, zero], axis=-1)
        axis = np.stack([zero, zero, one], axis=-1)
        return np.stack([normal, tangent, axis], axis=-2)

    def crystal_position_mm(
        self, crystal_id: np.ndarray | None = None, depth_mm: np.ndarray | float | None = None
    ) -> np.ndarray:
        """Point on the crystal's central axis at a depth below its front face.

        Parameters
        ----------
        crystal_id : array of int, optional
            Crystal ids, any shape; all crystals in id order when omitted.
        depth_mm : float or array broadcastable to ``crystal_id``, optional
            Depth below the front face, mm; mid-depth (the crystal centre) when omitted.

        Returns
        -------
        numpy.ndarray
            (x, y, z) in mm, shape ``crystal_id.shape + (3,)``.
        """
        ids = self._all_ids(crystal_id)
        ring, index = self.ring_and_index(ids)
        if depth_mm is None:
            depth_mm = self.crystal_depth_mm / 2.0
        module, within = np.divmod(index, self.crystals_per_module)
        frames = self.crystal_frames(ids)
        radial_mm = self.inner_radius_mm + np.asarray(depth_mm, dtype=float)
        tangential_mm = self._tangential_offsets_mm()[within]
        pos = (radial_mm[..., None] * frames[..., 0, :]
               + tangential_mm[..., None] * frames[..., 1, :])
        pos[..., 2] = self.ring_z_mm[ring]
        return pos

    def crystal_centres_mm(self, crystal_id: np.ndarray | None = None) -> np.ndarray:
        """Crystal centres (mid-depth), mm, shape ``crystal_id.shape + (3,)`` or (n_crystals, 3)."""
        return self.crystal_position_mm(crystal_id)

    def crystal_id_at(self, position_mm: np.ndarray) -> np.ndarray:
        """Id of the crystal that contains each point, -1 where no crystal does.

        Parameters
        ----------
        position_mm : numpy.ndarray
            Points (x, y, z) in mm, shape (..., 3).

        Returns
        -------
        numpy.ndarray
            int32 ids, shape (...,).
        """
        p = np.asarray(position_mm, dtype=float)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        step = 2.0 * np.pi / self.modules_per_ring
        # The module whose normal is angularly closest holds the point if any module does:
        # a module subtends at most +-pi/M seen from the axis.
        module = np.mod(
            np.rint((np.arctan2(y, x) - self.first_module_angle_rad) / step), self.modules_per_ring
        ).astype(np.int64)
        cos_phi = np.cos(self.module_angles_rad)[module]
        sin_phi = np.sin(self.module_angles_rad)[module]
        depth = x * cos_phi + y * sin_phi - self.inner_radius_mm
        tangential = y * cos_phi - x * sin_phi
        n = self.crystals_per_module
        within = np.floor(tangential / self.crystal_pitch_mm + n / 2.0).astype(np.int64)
        centre_t = (within - (n - 1) / 2.0) * self.crystal_pitch_mm

        module_pitch_mm = self.crystals_per_module_axial * self.axial_pitch_mm
        z_rel = z + self.axial_length_mm / 2.0
        axial_module = np.floor(z_rel / (module_pitch_mm + self.axial_module_gap_mm)).astype(
            np.int64
        )
        z_in_module = z_rel - axial_module * (module_pitch_mm + self.axial_module_gap_mm)
        row = np.floor(z_in_module / self.axial_pitch_mm).astype(np.int64)
        centre_z = (row + 0.5) * self.axial_pitch_mm

        inside = (
            (depth >= 0.0)
            & (depth <= self.crystal_depth_mm)
            & (within >= 0)
            & (within < n)
            & (np.abs(tangential - centre_t) <= self.crystal_width_mm / 2.0)
            & (axial_module >= 0)
            & (axial_module < self.axial_modules)
            & (row >= 0)
            & (row < self.crystals_per_module_axial)
            & (np.abs(z_in_module - centre_z) <= self.crystal_axial_width_mm / 2.0)
        )
        ring = axial_module * self.crystals_per_module_axial + row
        index = module * n + within
        ids = ring * self.crystals_per_ring + index
        return np.where(inside, ids, -1).astype(np.int32)
