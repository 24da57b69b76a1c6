"""Solid primitives for phantoms, described by a signed distance bound.

Every shape gives ``sdf_bound(points)``: negative inside, positive outside, and with a
magnitude that never exceeds the true Euclidean distance to the surface. The voxeliser relies
on exactly that property: a voxel whose centre is farther from every surface than its
half-diagonal cannot be cut by a surface, so only the others need sub-sampling. The bound is
exact for spheres, and is ``max`` of per-axis distances for boxes and cylinders (exact inside,
a lower bound outside). For the elliptic cylinder, ``(rho_n - 1) * b`` with the normalised
radius ``rho_n`` and the semi-minor axis ``b`` is a lower bound because the ellipse's support
function is at least ``b`` in every direction.

Points are arrays of shape (..., 3) in (x, y, z) order, mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_vec(v) -> np.ndarray:
    return np.asarray(v, dtype=float).reshape(3)


@dataclass(frozen=True)
class Shape:
    """Base class: a solid with a signed distance bound and an axis-aligned bounding box."""

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """Signed distance bound, mm, shape ``points.shape[:-1]``."""
        raise NotImplementedError

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        """(lower corner, upper corner) of an axis-aligned box containing the shape, (x, y, z)."""
        raise NotImplementedError

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the solid."""
        return self.sdf_bound(points) < 0.0

    def near_surface(self, points: np.ndarray, distance_mm: float) -> np.ndarray:
        """Mask of the points that may lie within ``distance_mm`` of the surface (never misses
        one that does; may include a few that do not)."""
        return np.abs(self.sdf_bound(points)) < distance_mm

    def describe(self) -> dict:
        """JSON-serialisable parameters (type and fields)."""
        out = {"shape": type(self).__name__}
        for key, value in self.__dict__.items():
            out[key] = np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
        return out


@dataclass(frozen=True)
class Sphere(Shape):
    """Sphere of ``radius_mm`` around ``centre_mm``."""

    centre_mm: tuple[float, float, float]
    radius_mm: float

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points - _as_vec(self.centre_mm), axis=-1) - self.radius_mm

    def bounds_mm(self):
        c = _as_vec(self.centre_mm)
        return c - self.radius_mm, c + self.radius_mm

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * np.pi * self.radius_mm**3


@dataclass(frozen=True)
class Cylinder(Shape):
    """Capped circular cylinder: axis through ``centre_mm`` along unit ``axis``."""

    centre_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    radius_mm: float
    half_length_mm: float

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:
        u = _as_vec(self.axis)
        u = u / np.linalg.norm(u)
        c = _as_vec(self.centre_mm)
        if u[0] == 0.0 and u[1] == 0.0:  # axis along z: the common case, cheaper
            along = (points[..., 2] - c[2]) * u[2]
            radial = np.hypot(points[..., 0] - c[0], points[..., 1] - c[1])
        else:
            rel = points - c
            along = rel @ u
            radial = np.linalg.norm(rel - along[..., None] * u, axis=-1)
        return np.maximum(radial - self.radius_mm, np.abs(along) - self.half_length_mm)

    def bounds_mm(self):
        u = _as_vec(self.axis)
        u = u / np.linalg.norm(u)
        c = _as_vec(self.centre_mm)
        # Extent of a disc of radius r with normal u along axis i is r * sqrt(1 - u_i^2).
        half = np.abs(u) * self.half_length_mm + self.radius_mm * np.sqrt(np.clip(1 - u**2, 0, 1))
        return c - half, c + half

    @property
    def volume_mm3(self) -> float:
        return np.pi * self.radius_mm**2 * 2.0 * self.half_length_mm


@dataclass(frozen=True)
class Box(Shape):
    """Oriented box: rows of ``axes`` are orthonormal local axes, ``half_sizes_mm`` along them."""

    centre_mm: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]
    half_sizes_mm: tuple[float, float, float]

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:
        local = (points - _as_vec(self.centre_mm)) @ np.asarray(self.axes, dtype=float).T
        return np.max(np.abs(local) - np.asarray(self.half_sizes_mm), axis=-1)

    def bounds_mm(self):
        axes = np.asarray(self.axes, dtype=float)
        half = np.abs(axes).T @ np.asarray(self.half_sizes_mm, dtype=float)
        c = _as_vec(self.centre_mm)
        return c - half, c + half

    @property
    def volume_mm3(self) -> float:
        return float(8.0 * np.prod(self.half_sizes_mm))


@dataclass(frozen=True)
class EllipticCylinderZ(Shape):
    """Cylinder along z with an elliptical section.

    The ellipse has semi-axes ``a_mm`` (along the direction ``angle_rad`` from +x) and
    ``b_mm`` (perpendicular), centred at ``centre_xy_mm``; it spans ``z_min_mm``..``z_max_mm``.
    """

    centre_xy_mm: tuple[float, float]
    a_mm: float
    b_mm: float
    angle_rad: float
    z_min_mm: float
    z_max_mm: float

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:
        cx, cy = self.centre_xy_mm
        dx, dy = points[..., 0] - cx, points[..., 1] - cy
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        u = dx * c + dy * s
        v = -dx * s + dy * c
        rho_n = np.sqrt((u / self.a_mm) ** 2 + (v / self.b_mm) ** 2)
        radial = (rho_n - 1.0) * min(self.a_mm, self.b_mm)
        z_mid = 0.5 * (self.z_min_mm + self.z_max_mm)
        axial = np.abs(points[..., 2] - z_mid) - 0.5 * (self.z_max_mm - self.z_min_mm)
        return np.maximum(radial, axial)

    def bounds_mm(self):
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        hx = np.hypot(self.a_mm * c, self.b_mm * s)
        hy = np.hypot(self.a_mm * s, self.b_mm * c)
        cx, cy = self.centre_xy_mm
        return (np.array([cx - hx, cy - hy, self.z_min_mm]),
                np.array([cx + hx, cy + hy, self.z_max_mm]))

    def radius_along_mm(self, phi_rad: np.ndarray | float) -> np.ndarray:
        """Distance from the z axis (not the ellipse centre) to the ellipse along direction phi.

        Requires the z axis to lie inside the ellipse. Solves |o + t d| on the ellipse for t > 0.
        """
        phi = np.asarray(phi_rad, dtype=float)
        c, s = np.cos(self.angle_rad), np.sin(self.angle_rad)
        cx, cy = self.centre_xy_mm
        # Origin and direction in the ellipse frame.
        ou, ov = -cx * c - cy * s, cx * s - cy * c
        du, dv = np.cos(phi) * c + np.sin(phi) * s, -np.cos(phi) * s + np.sin(phi) * c
        qa = (du / self.a_mm) ** 2 + (dv / self.b_mm) ** 2
        qb = 2.0 * (ou * du / self.a_mm**2 + ov * dv / self.b_mm**2)
        qc = (ou / self.a_mm) ** 2 + (ov / self.b_mm) ** 2 - 1.0
        return (-qb + np.sqrt(qb * qb - 4.0 * qa * qc)) / (2.0 * qa)

    @property
    def volume_mm3(self) -> float:
        return float(np.pi * self.a_mm * self.b_mm * (self.z_max_mm - self.z_min_mm))
