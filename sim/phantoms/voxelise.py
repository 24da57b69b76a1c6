"""Voxelise a layered solid model with partial-volume handling.

A phantom is an ordered list of :class:`Layer` (painter's rule: a later layer wins where it
applies). Each voxel gets the volume fraction of every material, of the positron-emitting
solution and of every defect:

* voxels that no surface cuts (decided with the shapes' ``near_surface``: signed distance
  bounds for primitives, see :mod:`sim.phantoms.shapes`; surface points for parts, see
  :mod:`sim.phantoms.parts.solids`) take the owner of their centre;
* voxels that a surface may cut are sampled with ``subsamples**3`` stratified, jittered points
  (one uniform point per sub-cell, seeded), an unbiased estimate of every fraction.

From the fractions: ``mu511`` is the volume-weighted mixture of the materials' attenuation
(exact for a linear coefficient), ``activity`` is proportional to the solution fraction (so a
0.2 mm crack in a 1 mm voxel keeps its 20 % of activity), ``material`` is the dominant material
(GATE needs one material per voxel) and ``labels`` marks a voxel with the defect of largest
fraction as soon as any sample falls in a defect, so sub-voxel defects are never lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from sim.phantoms.materials import MATERIALS, get_material
from sim.phantoms.shapes import Shape

#: Global material ids: position in :data:`sim.phantoms.materials.MATERIALS` (air is 0).
MATERIAL_IDS: dict[str, int] = {name: i for i, name in enumerate(MATERIALS)}

#: Points evaluated per chunk of boundary voxels (bounds memory to ~100 MB).
_POINTS_PER_CHUNK = 2_000_000


@dataclass(frozen=True)
class Layer:
    """One solid region of a phantom.

    Attributes
    ----------
    shape : Shape
        Geometry.
    material : str
        Material name filling the region.
    active : bool
        Whether the region holds the positron-emitting solution (uniform concentration).
    label : int
        Defect instance number (1..255), 0 for the base object.
    replaces : tuple of str or None
        Only points currently of these materials are painted; None paints everything. A crack
        ``replaces=("aluminium",)`` changes only the wall, so the defect region (and its label)
        is exactly the metal it removed.
    """

    shape: Shape
    material: str
    active: bool = False
    label: int = 0
    replaces: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Grid:
    """Voxel grid centred on the scanner centre. Shapes and sizes in (z, y, x) order."""

    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]

    @property
    def origin_mm(self) -> np.ndarray:
        """Centre of voxel (0, 0, 0), (z, y, x) mm."""
        return -(np.asarray(self.shape) - 1) / 2.0 * np.asarray(self.voxel_size_mm, dtype=float)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.voxel_size_mm))

    def axis_centres_mm(self, axis: int) -> np.ndarray:
        """Voxel centre coordinates along array axis 0 (z), 1 (y) or 2 (x), mm."""
        return self.origin_mm[axis] + self.voxel_size_mm[axis] * np.arange(self.shape[axis])

    def centres_xyz_mm(self) -> np.ndarray:
        """Voxel centres as (x, y, z) points, shape (nz, ny, nx, 3)."""
        z, y, x = np.meshgrid(*(self.axis_centres_mm(a) for a in range(3)), indexing="ij")
        return np.stack([x, y, z], axis=-1)


@dataclass
class VoxelisedPhantom:
    """Result of :func:`voxelise`; arrays are (z, y, x)."""

    material: np.ndarray  # uint8 global material id of the dominant material
    activity: np.ndarray  # float32, sums to 1
    mu511_per_mm: np.ndarray  # float32, 1/mm
    labels: np.ndarray  # uint8 defect instance number, 0 = none
    material_volume_mm3: dict[str, float] = field(default_factory=dict)
    label_volume_mm3: dict[int, float] = field(default_factory=dict)
    solution_volume_mm3: float = 0.0
    boundary_voxels: int = 0


def _owners(
    layers: list[Layer],
    points: np.ndarray,
    mat_code: np.ndarray,
    candidates: list[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, ...]:
    """Material code (index into ``mat_code`` order), active flag and label of each point.

    The first layer is the background and covers every point. ``candidates[i]``, when given,
    lists the points that may lie in layer i (None: test all points in the layer's box).
    """
    n = points.shape[0]
    material = np.full(n, mat_code[MATERIAL_IDS[layers[0].material]], dtype=np.int16)
    active = np.full(n, layers[0].active, dtype=bool)
    label = np.full(n, layers[0].label, dtype=np.int16)
    for i, layer in enumerate(layers[1:], start=1):
        cand = None if candidates is None else candidates[i]
        if cand is None:
            lo, hi = layer.shape.bounds_mm()
            cand = np.nonzero(np.all((points >= lo) & (points <= hi), axis=1))[0]
        if cand.size == 0:
            continue
        inside = layer.shape.contains(points[cand])
        if layer.replaces is not None:
            allowed = [mat_code[MATERIAL_IDS[m]] for m in layer.replaces]
            inside &= np.isin(material[cand], allowed)
        hit = cand[inside]
        material[hit] = mat_code[MATERIAL_IDS[layer.material]]
        active[hit] = layer.active
        label[hit] = layer.label
    return material, active, label


def _voxel_candidates(
    layers: list[Layer], centres: np.ndarray, half_size_xyz: np.ndarray, n_sub: int
) -> list[np.ndarray | None]:
    """Per layer, the sub-sample indices of the voxels whose box meets the layer's box."""
    out: list[np.ndarray | None] = [None]
    for layer in layers[1:]:
        lo, hi = layer.shape.bounds_mm()
        meets = np.all((centres + half_size_xyz >= lo) & (centres - half_size_xyz <= hi), axis=1)
        vox = np.flatnonzero(meets)
        out.append((vox[:, None] * n_sub + np.arange(n_sub)).ravel())
    return out


def _boundary_mask(layers: list[Layer], grid: Grid, centres: np.ndarray) -> np.ndarray:
    """Voxels that some layer's surface may cut."""
    half_diag_mm = 0.5 * float(np.linalg.norm(grid.voxel_size_mm))
    boundary = np.zeros(grid.shape, dtype=bool)
    for layer in layers[1:]:  # the background layer has no surface inside the grid
        lo, hi = layer.shape.bounds_mm()
        slices = []
        for axis_zyx, axis_xyz in ((0, 2), (1, 1), (2, 0)):
            coords = grid.axis_centres_mm(axis_zyx)
            inside = np.nonzero(
                (coords >= lo[axis_xyz] - half_diag_mm) & (coords <= hi[axis_xyz] + half_diag_mm)
            )[0]
            slices.append(slice(inside[0], inside[-1] + 1) if inside.size else slice(0, 0))
        region = tuple(slices)
        if any(s.stop <= s.start for s in slices):
            continue
        boundary[region] |= layer.shape.near_surface(centres[region], half_diag_mm)
    return boundary


def voxelise(
    layers: list[Layer],
    grid: Grid,
    subsamples: int,
    rng: np.random.Generator,
) -> VoxelisedPhantom:
    """Voxelise ``layers`` on ``grid``.

    Parameters
    ----------
    layers : list of Layer
        First layer is the background (usually an air box covering the grid).
    grid : Grid
        Voxel grid.
    subsamples : int
        Sub-samples per axis in voxels cut by a surface (``subsamples**3`` points each).
    rng : numpy.random.Generator
        Source of the jitter (seeded by the caller for reproducibility).
    """
    used = list(dict.fromkeys(layer.material for layer in layers))
    mat_code = np.full(len(MATERIALS), -1, dtype=np.int16)
    for code, name in enumerate(used):
        mat_code[MATERIAL_IDS[name]] = code
    n_mat = len(used)
    n_labels = max(layer.label for layer in layers) + 1

    centres = grid.centres_xyz_mm()
    boundary = _boundary_mask(layers, grid, centres)
    flat_centres = centres.reshape(-1, 3)
    n_vox = flat_centres.shape[0]

    material, active, label = _owners(layers, flat_centres, mat_code)
    mat_frac = np.zeros((n_vox, n_mat), dtype=np.float32)
    mat_frac[np.arange(n_vox), material] = 1.0
    act_frac = active.astype(np.float32)
    label_frac = np.zeros((n_vox, n_labels), dtype=np.float32)
    label_frac[np.arange(n_vox), label] = 1.0

    bidx = np.flatnonzero(boundary)
    n_sub = subsamples**3
    cell = (np.stack(np.meshgrid(*[np.arange(subsamples)] * 3, indexing="ij"), -1)
            .reshape(-1, 3).astype(float))
    size_xyz = np.asarray(grid.voxel_size_mm, dtype=float)[::-1]
    per_chunk = max(1, _POINTS_PER_CHUNK // n_sub)
    chunks = range(0, bidx.size, per_chunk)
    for start in tqdm(chunks, desc="partial volume", unit="chunk", disable=None, leave=False):
        vox = bidx[start : start + per_chunk]
        k = vox.size
        jitter = rng.random((k, n_sub, 3))
        offsets = ((cell[None] + jitter) / subsamples - 0.5) * size_xyz
        points = (flat_centres[vox][:, None, :] + offsets).reshape(-1, 3)
        candidates = _voxel_candidates(layers, flat_centres[vox], size_xyz / 2.0, n_sub)
        m, a, lab = _owners(layers, points, mat_code, candidates)
        local = np.repeat(np.arange(k), n_sub)
        mat_frac[vox] = np.bincount(local * n_mat + m, minlength=k * n_mat).reshape(k, n_mat)
        act_frac[vox] = np.bincount(local, weights=a, minlength=k)
        label_frac[vox] = np.bincount(local * n_labels + lab, minlength=k * n_labels).reshape(
            k, n_labels
        )
        mat_frac[vox] /= n_sub
        act_frac[vox] /= n_sub
        label_frac[vox] /= n_sub

    global_ids = np.array([MATERIAL_IDS[name] for name in used], dtype=np.uint8)
    mu_table = np.array([get_material(name).mu511_per_mm for name in used], dtype=np.float64)
    dominant = global_ids[np.argmax(mat_frac, axis=1)]
    mu511 = (mat_frac.astype(np.float64) @ mu_table).astype(np.float32)
    if n_labels > 1:
        defect_frac = label_frac[:, 1:]
        labels = np.where(defect_frac.max(axis=1) > 0, defect_frac.argmax(axis=1) + 1, 0)
    else:
        labels = np.zeros(n_vox, dtype=np.int64)
    total_active = float(act_frac.sum(dtype=np.float64))
    if total_active <= 0:
        raise ValueError("phantom has no voxel with activity (no active layer inside the grid)")
    activity = (act_frac / total_active).astype(np.float32)

    vv = grid.voxel_volume_mm3
    return VoxelisedPhantom(
        material=dominant.reshape(grid.shape),
        activity=activity.reshape(grid.shape),
        mu511_per_mm=mu511.reshape(grid.shape),
        labels=labels.astype(np.uint8).reshape(grid.shape),
        material_volume_mm3={
            name: float(mat_frac[:, c].sum(dtype=np.float64)) * vv for c, name in enumerate(used)
        },
        label_volume_mm3={
            lab: float(label_frac[:, lab].sum(dtype=np.float64)) * vv for lab in range(1, n_labels)
        },
        solution_volume_mm3=total_active * vv,
        boundary_voxels=int(bidx.size),
    )
