"""Solids of a part in the scanner frame: a closed mesh, or one label of a labelled image.

Both are :class:`sim.phantoms.shapes.Shape` s for the voxeliser and carry a closed triangle surface
(``mesh``) for defect placement and the fit checks.

* :class:`MeshSolid`: inside/outside by trimesh's ray tests (Embree through ``embreex``, about
  30 times faster than trimesh's numpy fallback); the surface is the mesh.
* :class:`LabelRegion`: a point is inside when the image voxel it falls in (nearest voxel
  centre) holds the label, exactly GATE's reading of a voxelised phantom; the surface is the
  marching-cubes surface of the label's mask (scikit-image), used only to place defects.

The voxeliser's "may a surface cut this voxel" test (:meth:`SurfaceSolid.near_surface`) keeps
a k-d tree of points spread over the true surface such that every surface point lies within
``reach_mm`` of one: the vertices of the mesh subdivided to edges of at most ``spacing_mm``
(reach = spacing), or the centres of the label's boundary voxels (reach = their half-diagonal,
since every face between the label and another lies in such a voxel). A point within
``distance`` of the surface is then within ``distance + reach`` of a tree point, so no cut voxel
is missed; and ``tree distance - reach`` is a lower bound on the distance to the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.ndimage
import scipy.spatial
import trimesh
from skimage.measure import marching_cubes

from sim.phantoms.shapes import Shape

#: Points per call of the ray test (bounds the memory of trimesh's multiple-hit queries).
_POINTS_PER_CALL = 500_000


class SurfaceSolid(Shape):
    """A solid known through a point-membership test and a set of surface points."""

    name: str
    path: str

    @property
    def mesh(self) -> trimesh.Trimesh:  # pragma: no cover - interface
        """Closed surface in the scanner frame, mm, outward normals."""
        raise NotImplementedError

    def _surface_points(self) -> tuple[np.ndarray, float]:  # pragma: no cover - interface
        """(points (n, 3) mm, reach mm): every surface point is within reach of one."""
        raise NotImplementedError

    @cached_property
    def _tree(self) -> tuple[scipy.spatial.cKDTree, float]:
        points, reach = self._surface_points()
        return scipy.spatial.cKDTree(points), reach

    def near_surface(self, points: np.ndarray, distance_mm: float) -> np.ndarray:
        tree, reach = self._tree
        flat = np.asarray(points, dtype=float).reshape(-1, 3)
        dist, _ = tree.query(flat, distance_upper_bound=distance_mm + reach)
        return (dist < distance_mm + reach).reshape(np.shape(points)[:-1])

    def distance_lower_bound_mm(self, points: np.ndarray) -> np.ndarray:
        """A lower bound on each point's distance to the surface, mm."""
        tree, reach = self._tree
        dist, _ = tree.query(np.asarray(points, dtype=float).reshape(-1, 3))
        return np.maximum(dist - reach, 0.0).reshape(np.shape(points)[:-1])

    def sdf_bound(self, points: np.ndarray) -> np.ndarray:
        """Signed distance bound: negative inside, magnitude at most the true distance."""
        bound = self.distance_lower_bound_mm(points)
        return np.where(self.contains(points), -bound, bound)

    def describe(self) -> dict:
        lo, hi = self.bounds_mm()
        return {"shape": type(self).__name__, "name": self.name, "path": self.path,
                "volume_mm3": self.volume_mm3, "bounds_mm": [lo.tolist(), hi.tolist()]}

    @property
    def volume_mm3(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class MeshSolid(SurfaceSolid):
    """The solid bounded by a closed mesh already placed in the scanner frame (mm)."""

    name: str
    path: str
    surface: trimesh.Trimesh = field(repr=False)
    spacing_mm: float = 0.5

    @property
    def mesh(self) -> trimesh.Trimesh:
        return self.surface

    def _surface_points(self) -> tuple[np.ndarray, float]:
        vertices, _ = trimesh.remesh.subdivide_to_size(
            self.surface.vertices, self.surface.faces, max_edge=self.spacing_mm, max_iter=64)
        return vertices, self.spacing_mm

    def contains(self, points: np.ndarray) -> np.ndarray:
        flat = np.asarray(points, dtype=float).reshape(-1, 3)
        out = np.zeros(flat.shape[0], dtype=bool)
        lo, hi = self.bounds_mm()
        boxed = np.flatnonzero(np.all((flat >= lo) & (flat <= hi), axis=1))
        for start in range(0, boxed.size, _POINTS_PER_CALL):
            idx = boxed[start:start + _POINTS_PER_CALL]
            out[idx] = self.surface.contains(flat[idx])
        return out.reshape(np.shape(points)[:-1])

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return self.surface.bounds[0].copy(), self.surface.bounds[1].copy()

    @property
    def volume_mm3(self) -> float:
        return float(self.surface.volume)

    def describe(self) -> dict:
        return {**super().describe(), "triangles": int(len(self.surface.faces))}


@dataclass(frozen=True, eq=False)
class LabelRegion(SurfaceSolid):
    """The voxels of ``labels`` equal to ``label``; ``affine`` maps voxel indices (i, j, k)
    to the scanner frame, mm (placement included)."""

    name: str
    path: str
    labels: np.ndarray = field(repr=False)
    label: int = 1
    affine: np.ndarray = field(default_factory=lambda: np.eye(4), repr=False)

    @cached_property
    def _mask(self) -> np.ndarray:
        return self.labels == self.label

    def _to_mm(self, index: np.ndarray) -> np.ndarray:
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    @cached_property
    def half_diagonal_mm(self) -> float:
        corners = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5)
                            for k in (-0.5, 0.5)])
        return float(np.max(np.linalg.norm(corners @ self.affine[:3, :3].T, axis=1)))

    def _surface_points(self) -> tuple[np.ndarray, float]:
        boundary = self._mask & ~scipy.ndimage.binary_erosion(self._mask, border_value=0)
        return self._to_mm(np.argwhere(boundary).astype(float)), self.half_diagonal_mm

    def contains(self, points: np.ndarray) -> np.ndarray:
        flat = np.asarray(points, dtype=float).reshape(-1, 3)
        inverse = np.linalg.inv(self.affine)
        index = np.rint(flat @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
        inside = np.all((index >= 0) & (index < np.array(self.labels.shape)), axis=1)
        out = np.zeros(flat.shape[0], dtype=bool)
        i, j, k = index[inside].T
        out[inside] = self._mask[i, j, k]
        return out.reshape(np.shape(points)[:-1])

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        index = np.argwhere(self._mask)
        lo, hi = index.min(axis=0) - 0.5, index.max(axis=0) + 0.5
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                            for c in (lo[2], hi[2])])
        mm = self._to_mm(corners)
        return mm.min(axis=0), mm.max(axis=0)

    @property
    def volume_mm3(self) -> float:
        return float(np.count_nonzero(self._mask) * abs(np.linalg.det(self.affine[:3, :3])))

    @cached_property
    def mesh(self) -> trimesh.Trimesh:
        padded = np.pad(self._mask, 1).astype(np.float32)
        vertices, faces, _, _ = marching_cubes(padded, level=0.5)
        mesh = trimesh.Trimesh(self._to_mm(vertices - 1.0), faces, process=True)
        if mesh.volume < 0:  # an affine with negative determinant mirrors the surface
            mesh.invert()
        return mesh

    def describe(self) -> dict:
        return {**super().describe(), "label": int(self.label)}
