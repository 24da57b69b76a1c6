"""Image grids of the reconstruction: voxel geometry in the scanner frame.

Arrays are indexed (z, y, x); ``voxel_size_mm`` and ``origin_mm`` are (z, y, x) too, with the
origin at the centre of voxel 0 (the phantom file's convention), so a reconstructed image and
the phantom it came from share one physical frame.

The reconstruction grid of a phantom keeps the phantom's transaxial extent at the configured
transaxial voxel size, and its axial planes are the planes of single-slice rebinning: spaced
half a ring pitch, centred on the rings and half-way between neighbouring rings, kept where
their voxels lie inside the phantom's axial extent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scanner.geometry import Scanner


@dataclass(frozen=True)
class ImageGrid:
    """A regular voxel grid; all vectors are (z, y, x), lengths in mm."""

    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "voxel_size_mm", tuple(float(v) for v in self.voxel_size_mm))
        object.__setattr__(self, "origin_mm", tuple(float(v) for v in self.origin_mm))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"image grid shape must be 3 positive integers, got {self.shape}")
        if len(self.voxel_size_mm) != 3 or min(self.voxel_size_mm) <= 0:
            raise ValueError(f"voxel sizes must be 3 positive lengths, got {self.voxel_size_mm}")

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def lower_mm(self) -> np.ndarray:
        """Lower corner of the grid box (z, y, x), mm."""
        return np.asarray(self.origin_mm) - np.asarray(self.voxel_size_mm) / 2.0

    @property
    def upper_mm(self) -> np.ndarray:
        """Upper corner of the grid box (z, y, x), mm."""
        return self.lower_mm + np.asarray(self.shape) * np.asarray(self.voxel_size_mm)

    def centres_mm(self, axis: int) -> np.ndarray:
        """Voxel centres along one axis (0 = z, 1 = y, 2 = x), mm."""
        return self.origin_mm[axis] + self.voxel_size_mm[axis] * np.arange(self.shape[axis])

    def with_planes(self, nz: int, dz_mm: float, z0_mm: float) -> ImageGrid:
        """The same transaxial grid with other axial planes."""
        return ImageGrid((nz, *self.shape[1:]), (dz_mm, *self.voxel_size_mm[1:]),
                         (z0_mm, *self.origin_mm[1:]))

    def fov_mask(self, radius_mm: float) -> np.ndarray:
        """Transaxial field-of-view mask: True where the voxel centre lies within
        ``radius_mm`` of the scanner axis; shape (ny, nx)."""
        y = self.centres_mm(1)[:, None]
        x = self.centres_mm(2)[None, :]
        return x * x + y * y <= radius_mm * radius_mm

    def covers(self, other: ImageGrid, tolerance_mm: float = 1e-6) -> bool:
        """True when this grid's box contains ``other``'s box."""
        return bool(np.all(self.lower_mm <= other.lower_mm + tolerance_mm)
                    and np.all(self.upper_mm >= other.upper_mm - tolerance_mm))

    def to_attrs(self) -> dict[str, np.ndarray]:
        """HDF5 attributes of the grid (z, y, x)."""
        return {"voxel_size_mm": np.asarray(self.voxel_size_mm),
                "origin_mm": np.asarray(self.origin_mm)}


def recon_grid(phantom: ImageGrid, scanner: Scanner, voxel_size_xy_mm: float,
               fov_xy_mm: float | None = None) -> ImageGrid:
    """Reconstruction grid of a phantom (module docstring): the phantom's transaxial box, or
    a square box ``fov_xy_mm`` wide centred on the axis, at ``voxel_size_xy_mm``, and the
    rebinning planes inside the phantom's axial extent.

    Raises
    ------
    ValueError
        When no rebinning plane falls inside the phantom's axial extent.
    """
    lower, upper = phantom.lower_mm, phantom.upper_mm
    if fov_xy_mm is not None:
        lower = np.array([lower[0], -fov_xy_mm / 2, -fov_xy_mm / 2])
        upper = np.array([upper[0], fov_xy_mm / 2, fov_xy_mm / 2])
    n_xy = np.maximum(1, np.rint((upper[1:] - lower[1:]) / voxel_size_xy_mm)).astype(int)
    centre_xy = (lower[1:] + upper[1:]) / 2
    origin_xy = centre_xy - (n_xy - 1) / 2 * voxel_size_xy_mm
    planes = rebinning_planes_mm(scanner)
    dz = scanner.axial_pitch_mm / 2.0
    # Whole plane voxels inside the phantom's axial extent.
    inside = planes[(planes - dz / 2 >= lower[0] - 1e-9) & (planes + dz / 2 <= upper[0] + 1e-9)]
    if inside.size == 0:
        raise ValueError(f"no rebinning plane of the scanner lies in the phantom's axial extent "
                         f"[{lower[0]}, {upper[0]}] mm")
    return ImageGrid((inside.size, *n_xy), (dz, voxel_size_xy_mm, voxel_size_xy_mm),
                     (inside[0], *origin_xy))


def rebinning_planes_mm(scanner: Scanner) -> np.ndarray:
    """Axial centres of the ``2 rings - 1`` rebinning planes ``(z_r1 + z_r2) / 2`` with
    ``r1 + r2 = 0 .. 2 rings - 2``, mm.

    Raises
    ------
    ValueError
        For scanners with axial gaps between modules (the planes are not equally spaced).
    """
    if scanner.axial_module_gap_mm:
        raise ValueError("single-slice rebinning needs equally spaced rings "
                         "(scanner.axial_module_gap_mm must be 0)")
    z = scanner.ring_z_mm
    return z[0] + scanner.axial_pitch_mm / 2.0 * np.arange(2 * scanner.rings - 1)


def check_grid_in_ring(grid: ImageGrid, scanner: Scanner, what: str = "image grid") -> None:
    """Refuse a grid whose transaxial box reaches the crystals.

    Raises
    ------
    ValueError
        When the inscribed circle of the grid's transaxial box (its half-width) is not
        inside the scanner's inner radius: voxels there could not be seen by any LOR.
    """
    half_width_mm = np.min(np.maximum(np.abs(grid.lower_mm[1:]), np.abs(grid.upper_mm[1:])))
    if half_width_mm >= scanner.inner_radius_mm:
        raise ValueError(
            f"{what} is larger than the ring: it reaches {half_width_mm:.1f} mm from the axis "
            f"along x or y, the crystals start at {scanner.inner_radius_mm:.1f} mm; use a "
            "smaller grid")


def box_chord_mm(p1: np.ndarray, p2: np.ndarray, grid: ImageGrid) -> np.ndarray:
    """Length of each segment p1-p2 ((n, 3) arrays, (x, y, z) mm) inside the grid box, mm (slab
    test; 0 for segments that miss it)."""
    lower, upper = grid.lower_mm[::-1], grid.upper_mm[::-1]
    d = p2 - p1
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (lower - p1) / d
        t1 = (upper - p1) / d
    inside = (p1 > lower) & (p1 < upper)
    t_lo = np.where(d == 0, np.where(inside, -np.inf, np.inf), np.minimum(t0, t1))
    t_hi = np.where(d == 0, np.where(inside, np.inf, -np.inf), np.maximum(t0, t1))
    enter = np.maximum(t_lo.max(axis=1), 0.0)
    leave = np.minimum(t_hi.min(axis=1), 1.0)
    return np.clip(leave - enter, 0.0, None) * np.linalg.norm(d, axis=1)
