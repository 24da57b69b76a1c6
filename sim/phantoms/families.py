"""Phantom families: the seed paper's aluminium tube with defects, and QA phantoms.

A phantom is built from its *spec* (:func:`sim.phantoms.spec.phantom_spec`: the dataset section, the
phantom's index and name) in two steps: :func:`draw_phantom` draws every random parameter from
the stream ``numpy.random.default_rng([seed, index])`` (so phantom i does not depend on how
many phantoms the set has), and returns the solid model as
:class:`sim.phantoms.voxelise.Layer` s plus a JSON-ready description;
:func:`sim.phantoms.voxelise.voxelise` turns it into voxels.

Tube (family ``tube``). A tube of ``material`` (aluminium) along z, centred at the origin,
outer radius R and outer length L, closed by end caps of thickness c, filled with the solution
(``fill``, water carrying F-18). The bore is a circle of radius R - t, or, for anisotropic tubes
(probability ``anisotropic_probability``), an ellipse with semi-axes R - t and (R - t)(1 - e)
at a random orientation whose centre is offset from the axis: the wall then varies around the
circumference (thinnest t - offset).

Defects, each a numbered label in the label map:

* ``crack``: thin flat slot in the plane spanned by the radial direction and a direction in the
  wall at ``tilt_deg`` from the axis, from the bore to ``depth_fraction`` of the local wall
  (1 = through); replaces wall metal by solution.
* ``hole``: radial cylinder through the wall, filled with solution.
* ``pit``: spherical cap cut into the wall from the bore (corrosion pit), filled with solution.
  The sphere has the drawn diameter, grown to the depth when the depth exceeds its radius, so
  the pit always opens onto the bore.
* ``inclusion``: solid sphere of ``material`` in the bore (cold: no activity).
* ``bubble``: air sphere in the solution.

Defects do not overlap (their bounding spheres are kept 1 mm apart; rejection sampling).

QA families: ``point`` (water sphere of activity in air), ``line`` (water line source along z
in air), ``nema`` (cold cylinder with a hot line source at ``line_offset_mm`` on +y, like
NEMA NU 2's scatter phantom scaled to this bore).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.phantoms.shapes import Box, Cylinder, EllipticCylinderZ, Shape, Sphere
from sim.phantoms.voxelise import Grid, Layer

DEFECT_TYPES = ("crack", "hole", "pit", "inclusion", "bubble")
CLEARANCE_MM = 1.0  # between defects, and between bore defects and the wall
_MAX_TRIES = 1000


@dataclass
class PhantomModel:
    """Solid model of one phantom."""

    layers: list[Layer]
    grid: Grid
    description: dict[str, Any]
    defects: list[dict[str, Any]]


def uniform_in(rng: np.random.Generator, bounds) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


def grid_of(spec: dict) -> Grid:
    shape = tuple(int(n) for n in spec["grid"]["shape"])
    return Grid(shape, tuple(float(v) for v in spec["grid"]["voxel_size_mm"]))


def background_layer(grid: Grid) -> Layer:
    half_zyx = np.asarray(grid.shape) * np.asarray(grid.voxel_size_mm) / 2.0 + 1.0
    return Layer(Box((0.0, 0.0, 0.0), np.eye(3).tolist(), tuple(half_zyx[::-1])), "air")


# ---------------------------------------------------------------------- tube
def _draw_tube(spec: dict, rng: np.random.Generator) -> dict[str, Any]:
    t = spec["tube"]
    outer = uniform_in(rng, t["outer_radius_mm"])
    wall = uniform_in(rng, t["wall_thickness_mm"])
    length = uniform_in(rng, t["length_mm"])
    anisotropic = bool(rng.random() < t["anisotropic_probability"])
    if anisotropic:
        offset = uniform_in(rng, t["eccentricity_mm"])
        offset_angle = float(rng.uniform(0, 2 * np.pi))
        ellipticity = uniform_in(rng, t["ellipticity"])
        ellipse_angle = float(rng.uniform(0, np.pi))
    else:
        offset = offset_angle = ellipticity = ellipse_angle = 0.0
    bore_a = outer - wall
    return {
        "outer_radius_mm": outer,
        "wall_thickness_mm": wall,
        "length_mm": length,
        "end_cap_mm": float(t["end_cap_mm"]),
        "material": t["material"],
        "fill": t["fill"],
        "anisotropic": anisotropic,
        "bore_centre_xy_mm": [offset * np.cos(offset_angle), offset * np.sin(offset_angle)],
        "bore_semi_axes_mm": [bore_a, bore_a * (1.0 - ellipticity)],
        "bore_angle_rad": ellipse_angle,
    }


def _bore(tube: dict) -> EllipticCylinderZ:
    inner_half = tube["length_mm"] / 2.0 - tube["end_cap_mm"]
    return EllipticCylinderZ(
        tuple(tube["bore_centre_xy_mm"]),
        tube["bore_semi_axes_mm"][0],
        tube["bore_semi_axes_mm"][1],
        tube["bore_angle_rad"],
        -inner_half,
        inner_half,
    )


def _radial_frame(phi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normal = np.array([np.cos(phi), np.sin(phi), 0.0])
    tangent = np.array([-np.sin(phi), np.cos(phi), 0.0])
    return normal, tangent, np.array([0.0, 0.0, 1.0])


def _draw_defect(kind: str, params: dict, tube: dict, bore: EllipticCylinderZ,
                 rng: np.random.Generator) -> tuple[Shape, dict[str, Any], np.ndarray, float]:
    """One defect: shape, description, bounding-sphere centre and radius."""
    outer = tube["outer_radius_mm"]
    fill, metal = tube["fill"], tube["material"]
    inner_half = bore.z_max_mm
    if kind in ("crack", "hole", "pit"):
        phi = float(rng.uniform(0, 2 * np.pi))
        r_bore = float(bore.radius_along_mm(phi))
        local_wall = outer - r_bore
        normal, tangent, axial = _radial_frame(phi)
    if kind == "crack":
        length = uniform_in(rng, params["length_mm"])
        width = uniform_in(rng, params["width_mm"])
        depth_fraction = uniform_in(rng, params["depth_fraction"])
        tilt = np.deg2rad(uniform_in(rng, params["tilt_deg"]))
        along = np.cos(tilt) * axial + np.sin(tilt) * tangent
        thin = np.cross(normal, along)
        half_span_t = 0.5 * length * np.sin(tilt) + width
        # The flat inner face must sit inside the bore over the whole crack: the bore surface
        # sags by r - sqrt(r^2 - s^2) at tangential distance s. Only metal is replaced, so
        # reaching into the bore changes nothing there.
        sag = r_bore - np.sqrt(max(r_bore**2 - half_span_t**2, 0.0)) + 0.5
        r_in = r_bore - sag
        r_out = outer + 0.5 if depth_fraction >= 1.0 else r_bore + depth_fraction * local_wall
        z = float(rng.uniform(-inner_half + length / 2, inner_half - length / 2))
        centre = (0.5 * (r_in + r_out)) * normal + z * axial
        shape: Shape = Box(tuple(centre), (tuple(normal), tuple(along), tuple(thin)),
                           (0.5 * (r_out - r_in), 0.5 * length, 0.5 * width))
        desc = {"length_mm": length, "width_mm": width, "depth_fraction": depth_fraction,
                "depth_mm": min(depth_fraction, 1.0) * local_wall,
                "tilt_deg": float(np.rad2deg(tilt))}
        bound_r = 0.5 * np.hypot(length, r_out - r_in)
        material, replaces = fill, (metal,)
    elif kind == "hole":
        diameter = uniform_in(rng, params["diameter_mm"])
        z = float(rng.uniform(-inner_half + diameter, inner_half - diameter))
        r_in, r_out = r_bore - 1.0, outer + 1.0
        centre = 0.5 * (r_in + r_out) * normal + z * axial
        shape = Cylinder(tuple(centre), tuple(normal), diameter / 2.0, 0.5 * (r_out - r_in))
        desc = {"diameter_mm": diameter}
        bound_r = 0.5 * np.hypot(diameter, r_out - r_in)
        material, replaces = fill, (metal,)
    elif kind == "pit":
        diameter = uniform_in(rng, params["diameter_mm"])
        depth = uniform_in(rng, params["depth_fraction"]) * local_wall
        radius = max(diameter / 2.0, depth)
        z = float(rng.uniform(-inner_half + radius, inner_half - radius))
        centre = (r_bore + depth - radius) * normal + z * axial
        shape = Sphere(tuple(centre), radius)
        desc = {"diameter_mm": 2 * radius, "depth_mm": depth}
        bound_r = radius
        material, replaces = fill, (metal,)
    elif kind in ("inclusion", "bubble"):
        diameter = uniform_in(rng, params["diameter_mm"])
        radius = diameter / 2.0
        margin = radius + CLEARANCE_MM
        # Uniform point in the bore's ellipse shrunk by radius + clearance (the polar form
        # sqrt(U) keeps the density uniform over the area).
        rho, angle = np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        u = rho * np.cos(angle) * (bore.a_mm - margin)
        v = rho * np.sin(angle) * (bore.b_mm - margin)
        c, s = np.cos(bore.angle_rad), np.sin(bore.angle_rad)
        cx, cy = bore.centre_xy_mm
        x, y = cx + u * c - v * s, cy + u * s + v * c
        z = float(rng.uniform(-inner_half + margin, inner_half - margin))
        centre = np.array([x, y, z])
        shape = Sphere(tuple(centre), radius)
        desc = {"diameter_mm": diameter}
        if kind == "inclusion":
            desc["material"] = params["material"]
            material, replaces = params["material"], (fill,)
        else:
            material, replaces = "air", (fill,)
        bound_r = radius
    else:  # pragma: no cover - the schema rejects other types
        raise ValueError(f"unknown defect type {kind!r}")
    desc = {"type": kind, "material": material, "replaces": list(replaces), **desc,
            "shape": shape.describe()}
    if kind in ("crack", "hole", "pit"):
        desc.update(azimuth_rad=phi, z_mm=z, local_wall_mm=local_wall)
    return shape, desc, np.asarray(centre, dtype=float), float(bound_r)


#: One drawn defect: shape, description, bounding-sphere centre (x, y, z) mm and radius mm.
DrawnDefect = tuple[Shape, dict[str, Any], np.ndarray, float]


def place_defects(spec: dict, rng: np.random.Generator,
                  draw: Callable[[str, dict], DrawnDefect | None],
                  active_materials: set[str]) -> tuple[list[Layer], list[dict[str, Any]]]:
    """Draw the number and types of defects from ``spec['defects']`` and place each with
    ``draw(kind, params)`` (None: no site found, draw again), rejecting overlaps.

    Returns one :class:`Layer` (labelled 1, 2, ...) and one description per defect; a defect
    whose material is in ``active_materials`` carries the solution's activity.
    """
    d = spec["defects"]
    n_defects = int(rng.integers(d["count"][0], d["count"][1] + 1))
    weights = np.array([d["types"][k] for k in DEFECT_TYPES], dtype=float)
    layers: list[Layer] = []
    defects: list[dict[str, Any]] = []
    placed: list[tuple[np.ndarray, float]] = []
    for label in range(1, n_defects + 1):
        kind = str(rng.choice(DEFECT_TYPES, p=weights / weights.sum()))
        for _ in range(_MAX_TRIES):
            drawn = draw(kind, d[kind])
            if drawn is None:
                continue
            shape, desc, centre, bound_r = drawn
            if all(np.linalg.norm(centre - c) > bound_r + r + CLEARANCE_MM for c, r in placed):
                break
        else:
            raise ValueError(
                f"phantom {spec['phantom']}: could not place {kind} #{label} without overlapping "
                f"the {label - 1} defect(s) already placed; lower datasets.{spec['dataset']}"
                ".defects.count or the defect sizes"
            )
        placed.append((centre, bound_r))
        layers.append(Layer(shape, desc["material"], active=desc["material"] in active_materials,
                            label=label, replaces=tuple(desc["replaces"])))
        defects.append({"label": label, **desc})
    return layers, defects


def _tube_model(spec: dict, rng: np.random.Generator, grid: Grid) -> PhantomModel:
    tube = _draw_tube(spec, rng)
    outer = Cylinder((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), tube["outer_radius_mm"],
                     tube["length_mm"] / 2.0)
    bore = _bore(tube)
    layers = [
        background_layer(grid),
        Layer(outer, tube["material"]),
        Layer(bore, tube["fill"], active=True),
    ]
    defect_layers, defects = place_defects(
        spec, rng, lambda kind, params: _draw_defect(kind, params, tube, bore, rng),
        {tube["fill"]})
    tube_desc = {"family": "tube", **tube, "bore": bore.describe()}
    return PhantomModel(layers + defect_layers, grid, tube_desc, defects)


# ---------------------------------------------------------------------- QA phantoms
def _qa_model(spec: dict, grid: Grid) -> PhantomModel:
    family = spec["family"]
    layers = [background_layer(grid)]
    if family == "point":
        p = spec["point"]
        layers.append(Layer(Sphere(tuple(p["position_mm"]), p["diameter_mm"] / 2.0), "water",
                            active=True))
    elif family == "line":
        p = spec["line"]
        layers.append(Layer(Cylinder(tuple(p["position_mm"]), (0.0, 0.0, 1.0),
                                     p["diameter_mm"] / 2.0, p["length_mm"] / 2.0),
                            "water", active=True))
    elif family == "nema":
        p = spec["nema"]
        half = p["length_mm"] / 2.0
        layers.append(Layer(Cylinder((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), p["diameter_mm"] / 2.0,
                                     half), p["material"]))
        layers.append(Layer(Cylinder((0.0, p["line_offset_mm"], 0.0), (0.0, 0.0, 1.0),
                                     p["line_diameter_mm"] / 2.0, half), "water", active=True))
    else:
        raise ValueError(f"unknown phantom family {family!r}")
    description = {"family": family, **spec[family],
                   "shapes": [layer.shape.describe() for layer in layers[1:]]}
    return PhantomModel(layers, grid, description, [])


def _part_model(spec: dict, rng: np.random.Generator, grid: Grid) -> PhantomModel:
    # Imported here: trimesh is needed by this family only.
    from sim.phantoms.parts.family import part_model

    return part_model(spec, rng, grid)


#: Phantom families by name (the schema's ``datasets.*.family`` enum).
_FAMILIES: dict[str, Callable[[dict, np.random.Generator, Grid], PhantomModel]] = {
    "tube": _tube_model,
    "part": _part_model,
    **{name: (lambda spec, rng, grid: _qa_model(spec, grid)) for name in ("point", "line", "nema")},
}


def draw_phantom(spec: dict) -> PhantomModel:
    """Draw the solid model of the phantom described by ``spec`` (deterministic in
    ``spec['seed']`` and ``spec['index']``)."""
    rng = np.random.default_rng([spec["seed"], spec["index"]])
    grid = grid_of(spec)
    return _FAMILIES[spec["family"]](spec, rng, grid)


def phantom_rng_for_voxelising(spec: dict) -> np.random.Generator:
    """Independent stream for the partial-volume jitter of phantom ``spec['index']``."""
    return np.random.default_rng([spec["seed"], spec["index"], 1])
