"""The user's part: its settings, and its named volumes placed in the scanner frame.

A part is what an inspection engineer has from CAD or from a segmented scan: named volumes,
each of one material, given as a closed triangle mesh or as one label of a labelled image, the
way opengate and GATE build a geometry from tessellated volumes or a voxelised phantom with a
label-to-material table. Volumes are painted in the order given (a later volume wins where it
applies), so an aluminium body followed by the channel inside it, of water, gives a part with
a water-filled channel. The volumes named in ``fill`` are the cavities that hold the
positron-emitting solution (activity, uniform concentration); a cavity left out of ``fill``
keeps its material (air for a dry channel) and no activity.

Placement, in this order (GATE's convention for a volume: rotation about its own origin, then
translation): file units times ``unit_mm``; with ``centre``, the box around all the volumes is
moved to the origin; the fixed rotation ``rotation_deg`` (extrinsic x, then y, then z); the
phantom's own turn about the scanner axis (``rotation_z_deg``, drawn per phantom); then
``translation_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from sim.phantoms.parts.files import PartError, load_label_image, load_mesh
from sim.phantoms.parts.solids import LabelRegion, MeshSolid, SurfaceSolid


@dataclass(frozen=True)
class VolumeSettings:
    """One named volume: a mesh file, or a label of the part's labelled image."""

    name: str
    material: str
    mesh: str | None = None
    label: int | None = None


@dataclass(frozen=True)
class PartSettings:
    """The ``part`` section of a dataset, parsed once (see config/schema.yaml)."""

    volumes: tuple[VolumeSettings, ...]
    fill: tuple[str, ...]
    label_image: str | None = None
    unit_mm: float = 1.0
    centre: bool = True
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_z_deg: tuple[float, float] = (0.0, 0.0)
    translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_config(cls, part: dict[str, Any]) -> PartSettings:
        """Parse and cross-check a ``part`` section; ValueError names the sub-key."""
        volumes = tuple(VolumeSettings(str(v["name"]), str(v["material"]), v.get("mesh"),
                                       v.get("label")) for v in part["volumes"])
        names = [v.name for v in volumes]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"volumes: name(s) {', '.join(duplicated)} used twice")
        for v in volumes:
            if (v.mesh is None) == (v.label is None):
                raise ValueError(f"volumes: volume {v.name!r} needs exactly one of mesh (a file) "
                                 "and label (a value of label_image)")
        if any(v.label is not None for v in volumes) and not part.get("label_image"):
            raise ValueError("label_image: volumes given by label need the labelled image")
        unknown = [n for n in part["fill"] if n not in names]
        if unknown:
            raise ValueError(f"fill: {', '.join(map(repr, unknown))} is not a volume; volumes: "
                             f"{', '.join(names)}")
        return cls(volumes, tuple(part["fill"]), part.get("label_image"), float(part["unit_mm"]),
                   bool(part["centre"]), tuple(map(float, part["rotation_deg"])),
                   tuple(map(float, part["rotation_z_deg"])),
                   tuple(map(float, part["translation_mm"])))


#: Units a part's files are commonly drawn in, with the ``unit_mm`` that reads them.
FILE_UNITS = (("metres", 1000.0), ("centimetres", 10.0), ("inches", 25.4),
              ("millimetres", 1.0), ("micrometres", 0.001))


class PartScaleError(PartError):
    """A part whose size is implausible for the grid and scanner (its units look wrong); the
    config key to look at is ``part.unit_mm``."""

    key = "unit_mm"


@dataclass(frozen=True)
class PartRoom:
    """What a part's size is judged against.

    Attributes
    ----------
    voxel_mm : float
        The grid's largest voxel edge: a part under two of them is too small to image.
    room_mm : float
        The larger of the grid's largest extent and the scanner bore's diameter: a part over
        twice this is not a part that misses the grid by a little.
    """

    voxel_mm: float
    room_mm: float

    @classmethod
    def of(cls, grid_shape: Any, voxel_size_mm: Any, bore_radius_mm: float) -> PartRoom:
        """The room of a grid (shape and voxel size, any axis order) in a scanner bore."""
        voxel = np.asarray(voxel_size_mm, dtype=float)
        extent = np.asarray(grid_shape, dtype=float) * voxel
        return cls(float(voxel.max()), float(max(extent.max(), 2.0 * bore_radius_mm)))


def _mm(value: float) -> str:
    """A length for a message: 3 significant digits, whole millimetres from 1000 mm."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def check_scale(settings: PartSettings, bounds: dict[str, tuple[np.ndarray, np.ndarray]],
                room: PartRoom) -> None:
    """Refuse a part whose size says its units are wrong, before it is placed or voxelised.

    The part's box (all volumes, file units times ``unit_mm``) must span at least two voxels
    and at most twice ``room.room_mm``; otherwise one error names the part's files, its
    extent in mm and the ``unit_mm`` of :data:`FILE_UNITS` that would give it a plausible
    size (metres read as millimetres make a 50 mm part 0.05 mm across, and the defects
    then find no place in it).

    Parameters
    ----------
    settings : PartSettings
    bounds : dict
        Volume name -> (lower, upper) corner of its box in file units.
    room : PartRoom

    Raises
    ------
    PartScaleError
    """
    lo = np.min([b[0] for b in bounds.values()], axis=0)
    hi = np.max([b[1] for b in bounds.values()], axis=0)
    extent_file = hi - lo
    extent = float(extent_file.max()) * settings.unit_mm
    smallest, largest = 2.0 * room.voxel_mm, 2.0 * room.room_mm
    if smallest <= extent <= largest:
        return
    if extent < smallest:
        reason = (f"less than two voxels of the grid ({_mm(smallest)} mm): too small to image "
                  "or to hold a defect")
    else:
        reason = (f"more than twice the room it must fit in ({_mm(room.room_mm)} mm, the larger "
                  "of the grid's extent and the scanner bore's diameter)")
    guesses = [f"{name} (part.unit_mm: {unit:g}, {_mm(extent_file.max() * unit)} mm across)"
               for name, unit in FILE_UNITS if unit != settings.unit_mm
               and smallest <= extent_file.max() * unit <= room.room_mm]
    hint = (f"are the files in {' or '.join(guesses)}?" if guesses else
            "check the files' units (part.unit_mm) and the grid's voxel_size_mm")
    files = list(dict.fromkeys(v.mesh for v in settings.volumes if v.mesh is not None))
    if settings.label_image and any(v.label is not None for v in settings.volumes):
        files.append(settings.label_image)
    kind = ("mesh" if settings.volumes[0].mesh is not None else "label image") \
        if len(files) == 1 else "part files"
    x, y, z = (float(e) * settings.unit_mm for e in extent_file)
    raise PartScaleError(f"{kind} {', '.join(files)}: the part measures {_mm(extent)} mm across "
                         f"({_mm(x)} x {_mm(y)} x {_mm(z)} mm along x, y, z with part.unit_mm "
                         f"{settings.unit_mm:g}), {reason}; {hint}")


@dataclass(frozen=True)
class PartVolume:
    """One placed volume: its solid, material and whether it holds the solution."""

    solid: SurfaceSolid
    material: str
    filled: bool


def placement(settings: PartSettings, bounds: list[tuple[np.ndarray, np.ndarray]],
              turn_z_deg: float) -> np.ndarray:
    """4 x 4 transform from file coordinates to the scanner frame, mm; ``bounds`` are the
    volumes' boxes in file coordinates."""
    scale = np.diag([settings.unit_mm] * 3 + [1.0])
    centre = np.eye(4)
    if settings.centre:
        lo = np.min([b[0] for b in bounds], axis=0) * settings.unit_mm
        hi = np.max([b[1] for b in bounds], axis=0) * settings.unit_mm
        centre[:3, 3] = -0.5 * (lo + hi)
    rotate = np.eye(4)
    rotate[:3, :3] = (Rotation.from_euler("z", turn_z_deg, degrees=True)
                      * Rotation.from_euler("xyz", settings.rotation_deg, degrees=True)).as_matrix()
    move = np.eye(4)
    move[:3, 3] = settings.translation_mm
    return move @ rotate @ centre @ scale


def load_part(settings: PartSettings, turn_z_deg: float = 0.0,
              spacing_mm: float = 0.5, room: PartRoom | None = None) -> list[PartVolume]:
    """Read, check and place every volume of a part (order kept: painter's rule).

    ``spacing_mm`` is the surface-point spacing of mesh volumes (half the phantom's smallest
    voxel size keeps the voxeliser's near-surface test tight). With ``room``, a part whose
    size makes its units look wrong is refused before it is placed (:func:`check_scale`).
    """
    meshes = {v.name: load_mesh(v.mesh) for v in settings.volumes if v.mesh is not None}
    labels, affine = (load_label_image(settings.label_image) if settings.label_image
                      else (None, None))
    raw: dict[str, SurfaceSolid] = {}
    for v in settings.volumes:
        if v.mesh is not None:
            raw[v.name] = MeshSolid(v.name, v.mesh, meshes[v.name])
        else:
            if not np.any(labels == v.label):
                raise PartError(f"label image {settings.label_image}: holds no voxel of label "
                                f"{v.label} (volume {v.name!r}); labels present: "
                                f"{np.unique(labels).tolist()}")
            raw[v.name] = LabelRegion(v.name, settings.label_image, labels, v.label, affine)
    bounds = {name: solid.bounds_mm() for name, solid in raw.items()}
    if room is not None:
        check_scale(settings, bounds, room)
    transform = placement(settings, list(bounds.values()), turn_z_deg)
    out = []
    for v in settings.volumes:
        if v.mesh is not None:
            placed = meshes[v.name].copy()
            placed.apply_transform(transform)
            solid: SurfaceSolid = MeshSolid(v.name, v.mesh, placed, spacing_mm)
        else:
            solid = LabelRegion(v.name, settings.label_image, labels, v.label,
                                transform @ affine)
        out.append(PartVolume(solid, v.material, v.name in settings.fill))
    return out


def check_fit(volumes: list[PartVolume], half_extent_xyz_mm: np.ndarray,
              turns_about_z: bool) -> None:
    """Refuse a part that leaves the voxel grid (the config check keeps the grid inside the
    scanner bore, so a part that fits the grid fits the bore).

    With ``turns_about_z`` the part is turned by a random angle per phantom, so it must fit
    the grid's inscribed cylinder, not only its box.
    """
    for v in volumes:
        vertices = v.solid.mesh.vertices
        radius = float(np.max(np.hypot(vertices[:, 0], vertices[:, 1])))
        where = f"{v.solid.path} (volume {v.solid.name!r})"
        reach = np.max(np.abs(vertices), axis=0)
        limit = np.asarray(half_extent_xyz_mm, dtype=float).copy()
        if turns_about_z:
            reach[:2] = radius
            limit[:2] = min(limit[0], limit[1])
        if np.any(reach > limit):
            axis = "xyz"[int(np.argmax(reach - limit))]
            raise PartError(f"{where}: extends to {reach.max():.1f} mm along {axis}; it does not "
                            f"fit the voxel grid (half-extent {np.round(limit, 1).tolist()} mm "
                            "along x, y, z)")
