"""Phantom family ``part``: the user's part (see :mod:`sim.phantoms.parts.layout`) with defects.

The part is placed in the scanner frame (turned about the scanner axis by an angle drawn per
phantom from ``rotation_z_deg``) and voxelised like the tube, with the same partial-volume
sampling, label map and outputs. The defect library is the tube's, placed on the part:

* wall defects (``crack``, ``hole``, ``pit``) sit on a *wetted wall*: a point drawn uniformly
  by area on the surfaces of the filled cavities, where the material just beyond the surface
  is metal (a volume that is neither filled nor air). The outward normal of the cavity there
  points into the wall; the local wall thickness is the distance along it to the next surface
  (a ray test). A pit is a sphere cut into the wall from the cavity, a hole a cylinder along
  the normal through the whole wall, a crack a thin slot in the plane of the normal and a
  direction in the wall at ``tilt_deg`` from the scanner axis's projection on the wall (the
  tube's convention: 0 axial, 90 circumferential), from just inside the cavity (its inner
  face must lie in the solution at all four corners) to ``depth_fraction`` of the wall. They
  replace only the wall's metal by the cavity's solution, as in the tube.
* ``inclusion`` and ``bubble`` spheres sit in a filled cavity (drawn by volume), at least
  their radius plus 1 mm from every surface of the part.

Each draw that finds no valid site (a point on a wall that is not metal behind, a crack that
does not open onto the solution) is drawn again; overlaps are rejected as for the tube
(:func:`sim.phantoms.families.place_defects`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh

from sim.phantoms.families import (
    CLEARANCE_MM,
    DrawnDefect,
    PhantomModel,
    background_layer,
    place_defects,
    uniform_in,
)
from sim.phantoms.parts.layout import PartRoom, PartSettings, PartVolume, load_part
from sim.phantoms.shapes import Box, Cylinder, Shape, Sphere
from sim.phantoms.voxelise import Grid, Layer

#: Distance from a wall point at which the materials on both sides are probed, mm.
_PROBE_MM = 0.1
#: Candidate depths of a crack's inner face inside the cavity, mm (first that fits).
_CRACK_INNER_MM = (0.5, 1.0, 2.0, 4.0)
#: Candidate points per draw of an inclusion or bubble centre.
_CENTRE_CANDIDATES = 64


@dataclass(frozen=True)
class WallSite:
    """A point on a wetted wall and its local frame (scanner frame, mm)."""

    point_mm: np.ndarray  # (3,) on the cavity surface
    normal: np.ndarray  # (3,) unit, from the solution into the metal
    along: np.ndarray  # (3,) unit, the scanner axis projected on the wall (or x)
    across: np.ndarray  # (3,) unit, normal x along
    wall_mm: float  # metal thickness along the normal
    cavity: int  # index of the cavity's volume
    host: int  # index of the metal volume


class PartGeometry:
    """Placed volumes of one phantom with the queries that defect placement needs."""

    def __init__(self, volumes: list[PartVolume]):
        self.volumes = volumes
        self.filled = [i for i, v in enumerate(volumes) if v.filled]
        wet = [volumes[i].solid.mesh for i in self.filled]
        owner = np.concatenate([np.full(len(m.faces), i) for i, m in zip(self.filled, wet,
                                                                          strict=True)])
        self._wet = trimesh.util.concatenate(wet)
        self._wet_owner = owner
        self._wet_cdf = np.cumsum(self._wet.area_faces) / self._wet.area
        self._all = trimesh.util.concatenate([v.solid.mesh for v in volumes])

    def owner(self, points: np.ndarray) -> np.ndarray:
        """Index of the volume owning each point (painter's rule), -1 outside every volume."""
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        out = np.full(points.shape[0], -1)
        for i, v in enumerate(self.volumes):
            out[v.solid.contains(points)] = i
        return out

    def is_metal(self, index: int) -> bool:
        return index >= 0 and not self.volumes[index].filled and \
            self.volumes[index].material != "air"

    def wall_site(self, rng: np.random.Generator) -> WallSite | None:
        """A uniformly drawn point on a wetted wall, or None when the draw is not on one."""
        face = int(np.searchsorted(self._wet_cdf, rng.random() * self._wet_cdf[-1]))
        face = min(face, len(self._wet_cdf) - 1)
        r1, r2 = rng.random(2)
        a, b, c = self._wet.triangles[face]
        s = np.sqrt(r1)
        point = (1 - s) * a + s * (1 - r2) * b + s * r2 * c
        normal = np.asarray(self._wet.face_normals[face], dtype=float)
        cavity = int(self._wet_owner[face])
        inside, beyond = self.owner(np.stack([point - _PROBE_MM * normal,
                                              point + _PROBE_MM * normal]))
        if inside != cavity or not self.is_metal(int(beyond)):
            return None
        hits, _, _ = self._all.ray.intersects_location(
            (point + 1e-3 * normal)[None], normal[None], multiple_hits=False)
        if len(hits) == 0:
            return None
        wall = float(np.linalg.norm(hits[0] - point))
        along = np.array([0.0, 0.0, 1.0]) - normal[2] * normal
        if np.linalg.norm(along) < 0.1:  # wall across the axis: measure tilt from x
            along = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
        along /= np.linalg.norm(along)
        return WallSite(point, normal, along, np.cross(normal, along), wall, cavity,
                        int(beyond))

    def fluid_centre(self, radius_mm: float, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                int] | None:
        """A point of a filled cavity (drawn by volume) at least ``radius_mm`` from every
        surface, or None when no candidate of this draw qualifies."""
        volumes = np.array([self.volumes[i].solid.volume_mm3 for i in self.filled])
        cavity = self.filled[int(rng.choice(len(self.filled), p=volumes / volumes.sum()))]
        lo, hi = self.volumes[cavity].solid.bounds_mm()
        points = lo + rng.random((_CENTRE_CANDIDATES, 3)) * (hi - lo)
        clearance = np.min([v.solid.distance_lower_bound_mm(points) for v in self.volumes],
                           axis=0)
        ok = np.flatnonzero(clearance >= radius_mm)
        ok = ok[self.owner(points[ok]) == cavity] if ok.size else ok
        return (points[ok[0]], cavity) if ok.size else None


def _wall_defect(kind: str, params: dict, site: WallSite, part: PartGeometry,
                 rng: np.random.Generator) -> DrawnDefect | None:
    p, n, wall = site.point_mm, site.normal, site.wall_mm
    shape: Shape
    if kind == "crack":
        length = uniform_in(rng, params["length_mm"])
        width = uniform_in(rng, params["width_mm"])
        depth_fraction = uniform_in(rng, params["depth_fraction"])
        tilt = np.deg2rad(uniform_in(rng, params["tilt_deg"]))
        direction = np.cos(tilt) * site.along + np.sin(tilt) * site.across
        thin = np.cross(n, direction)
        r_out = wall + 0.5 if depth_fraction >= 1.0 else depth_fraction * wall
        for r_in in _CRACK_INNER_MM:
            corners = np.array([p - r_in * n + sl * 0.5 * length * direction + sw * 0.5 * width
                                * thin for sl in (-1, 1) for sw in (-1, 1)])
            if np.all(part.owner(corners) == site.cavity):
                break
        else:
            return None
        centre = p + 0.5 * (r_out - r_in) * n
        shape = Box(tuple(centre), (tuple(n), tuple(direction), tuple(thin)),
                    (0.5 * (r_out + r_in), 0.5 * length, 0.5 * width))
        desc = {"length_mm": length, "width_mm": width, "depth_fraction": depth_fraction,
                "depth_mm": min(depth_fraction, 1.0) * wall, "tilt_deg": float(np.rad2deg(tilt))}
        bound_r = 0.5 * np.hypot(length, r_out + r_in)
    elif kind == "hole":
        diameter = uniform_in(rng, params["diameter_mm"])
        centre = p + 0.5 * wall * n
        shape = Cylinder(tuple(centre), tuple(n), diameter / 2.0, 0.5 * wall + 1.0)
        desc = {"diameter_mm": diameter}
        bound_r = 0.5 * np.hypot(diameter, wall + 2.0)
    else:  # pit
        diameter = uniform_in(rng, params["diameter_mm"])
        depth = uniform_in(rng, params["depth_fraction"]) * wall
        radius = max(diameter / 2.0, depth)
        centre = p + (depth - radius) * n
        shape = Sphere(tuple(centre), radius)
        desc = {"diameter_mm": 2 * radius, "depth_mm": depth}
        bound_r = radius
    cavity, host = part.volumes[site.cavity], part.volumes[site.host]
    desc = {"type": kind, "material": cavity.material, "replaces": [host.material], **desc,
            "shape": shape.describe(), "surface_point_mm": p.tolist(), "normal": n.tolist(),
            "local_wall_mm": wall, "cavity": cavity.solid.name, "host": host.solid.name}
    return shape, desc, np.asarray(centre, dtype=float), float(bound_r)


def _draw_part_defect(kind: str, params: dict, part: PartGeometry,
                      rng: np.random.Generator) -> DrawnDefect | None:
    if kind in ("crack", "hole", "pit"):
        site = part.wall_site(rng)
        return None if site is None else _wall_defect(kind, params, site, part, rng)
    diameter = uniform_in(rng, params["diameter_mm"])
    found = part.fluid_centre(diameter / 2.0 + CLEARANCE_MM, rng)
    if found is None:
        return None
    centre, cavity = found
    shape = Sphere(tuple(centre), diameter / 2.0)
    fill = part.volumes[cavity].material
    material = params["material"] if kind == "inclusion" else "air"
    desc: dict[str, Any] = {"type": kind, "material": material, "replaces": [fill],
                            "diameter_mm": diameter}
    desc.update(shape=shape.describe(), cavity=part.volumes[cavity].solid.name)
    return shape, desc, centre, diameter / 2.0


def part_model(spec: dict, rng: np.random.Generator, grid: Grid) -> PhantomModel:
    """The solid model of one ``part`` phantom (see the module docstring)."""
    settings = PartSettings.from_config(spec["part"])
    turn_deg = uniform_in(rng, settings.rotation_z_deg)
    # A part whose size says its units are wrong is refused here, before the defects look
    # for room in it (they would fail to fit for no reason the user could see).
    room = PartRoom.of(grid.shape, grid.voxel_size_mm, float(spec["scanner_inner_radius_mm"]))
    volumes = load_part(settings, turn_deg, spacing_mm=0.5 * min(grid.voxel_size_mm),
                        room=room)
    part = PartGeometry(volumes)
    layers = [background_layer(grid)] + [Layer(v.solid, v.material, active=v.filled)
                                         for v in volumes]
    defect_layers, defects = place_defects(
        spec, rng, lambda kind, params: _draw_part_defect(kind, params, part, rng),
        {volumes[i].material for i in part.filled})
    description = {"family": "part", **spec["part"], "rotation_z_drawn_deg": turn_deg,
                   "volumes_placed": [v.solid.describe() for v in volumes]}
    return PhantomModel(layers + defect_layers, grid, description, defects)
