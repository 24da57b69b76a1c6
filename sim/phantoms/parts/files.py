"""Reading and checking the user's part files: closed triangle meshes and labelled images.

Meshes (STL, OBJ, PLY) are read with trimesh, unprocessed first (processing would silently
drop the faces of non-finite vertices), then coincident vertices are merged (STL repeats them
per triangle) so that closedness can be checked. A mesh must bound a solid: closed (every edge
shared by exactly two triangles), consistently wound, with outward normals (positive signed
volume) and finite coordinates.

Labelled images are NIfTI (``.nii``, ``.nii.gz``, through nibabel; the affine maps voxel
indices to mm) or MetaImage (``.mhd`` with its raw file, :func:`sim.phantoms.metaimage.read_mhd`;
axis-aligned, ``Offset`` is the first voxel's centre, direction cosines are not read). Voxel
values are integer labels (0 is nothing), as GATE's voxelised phantoms with a label-to-material
table. Any problem raises :class:`PartError` naming the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import trimesh

from sim.phantoms.metaimage import read_mhd

#: File types read as triangle meshes.
MESH_SUFFIXES = (".stl", ".obj", ".ply")
#: File types read as labelled images.
LABEL_SUFFIXES = (".nii", ".nii.gz", ".mhd")


class PartError(ValueError):
    """A part file that cannot be used; the message names the file and what is wrong."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _check_exists(path: Path, kind: str, suffixes: tuple[str, ...]) -> None:
    if _suffix(path) not in suffixes:
        raise PartError(f"{kind} {path}: unsupported file type {_suffix(path)!r}; use "
                        f"{', '.join(suffixes)}")
    if not path.is_file():
        raise PartError(f"{kind} {path}: no such file")


def _open_edges(mesh: trimesh.Trimesh) -> int:
    """Edges not shared by exactly two faces."""
    _, counts = np.unique(mesh.edges_sorted, axis=0, return_counts=True)
    return int(np.count_nonzero(counts != 2))


def load_mesh(path: str | Path) -> trimesh.Trimesh:
    """Read a closed triangle mesh and check that it bounds a solid (file units)."""
    path = Path(path)
    _check_exists(path, "mesh", MESH_SUFFIXES)
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for a corrupt file
        raise PartError(f"mesh {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise PartError(f"mesh {path}: holds no triangles (empty, or not a valid "
                        f"{_suffix(path)[1:].upper()} file)")
    if not np.all(np.isfinite(mesh.vertices)):
        raise PartError(f"mesh {path}: vertex coordinates hold NaN or infinity")
    mesh.merge_vertices()
    open_edges = _open_edges(mesh)
    if open_edges:
        raise PartError(f"mesh {path}: not closed ({open_edges} edges are not shared by exactly "
                        "two triangles); a volume needs a watertight surface")
    if not mesh.is_winding_consistent:
        raise PartError(f"mesh {path}: triangles are not consistently oriented (neighbouring "
                        "faces disagree on the inside)")
    volume = float(mesh.volume)
    if volume <= 0:
        raise PartError(f"mesh {path}: normals point inward (signed volume {volume:.6g} in "
                        "file units); flip the faces' orientation")
    return mesh


def load_label_image(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a labelled image.

    Returns
    -------
    labels : numpy.ndarray
        Integer labels, shape (ni, nj, nk), indexed like the affine's voxel indices.
    affine : numpy.ndarray
        (4, 4) map from voxel indices (i, j, k, 1) to file coordinates (x, y, z, 1), mm.
    """
    path = Path(path)
    _check_exists(path, "label image", LABEL_SUFFIXES)
    try:
        if _suffix(path) == ".mhd":
            zyx, spacing_zyx, origin_zyx = read_mhd(path)
            data = np.transpose(zyx, (2, 1, 0))  # index (x, y, z) like the affine below
            affine = np.eye(4)
            affine[:3, :3] = np.diag(spacing_zyx[::-1])
            affine[:3, 3] = origin_zyx[::-1]
        else:
            image = nib.load(path)
            data = np.asanyarray(image.dataobj)
            affine = np.asarray(image.affine, dtype=float)
    except Exception as exc:  # nibabel and the MetaImage reader raise several types
        raise PartError(f"label image {path}: cannot be read ({type(exc).__name__}: "
                        f"{exc})") from None
    if data.ndim != 3:
        raise PartError(f"label image {path}: has {data.ndim} dimensions; labels need a 3D "
                        "image")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) == 0:
        raise PartError(f"label image {path}: its voxel-to-mm transform is singular or not "
                        "finite")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)):
            raise PartError(f"label image {path}: holds NaN or infinity")
        if np.any(data != np.round(data)):
            raise PartError(f"label image {path}: holds non-integer values; labels are integers "
                            "(is this an intensity image?)")
    elif data.dtype.kind not in "iub":
        raise PartError(f"label image {path}: voxel type {data.dtype} is not integer labels")
    return np.asarray(data).astype(np.int64), affine
