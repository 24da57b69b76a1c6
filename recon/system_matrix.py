"""Sparse 2D system matrix of one sinogram plane: built once per scanner and image grid with
the Siddon projector, kept on disk (HDF5, CSR arrays) and checked against the geometry it
is loaded for.

Rows are the sinogram bins (views x radial, flat); columns the pixels (y, x) of the
transaxial grid; values the intersection lengths in mm. Invalid bins (see
:mod:`recon.sinogram`) have empty rows. The same matrix serves every plane of a
single-slice-rebinned stack: the planes differ only by their z, which a direct-plane LOR
does not cross.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.sparse
import torch

from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5
from recon.grid import ImageGrid
from recon.projector import Projector
from recon.sinogram import SinogramGeometry


@dataclass
class SystemMatrix2D:
    """CSR system matrix of one plane.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        (bins, ny * nx) intersection lengths, mm, float32.
    grid : ImageGrid
        One-plane grid whose (y, x) part is the transaxial image grid.
    key : dict
        The geometry it was built for (scanner, DOI, sector rule, grid); compared on load.
    """

    matrix: scipy.sparse.csr_matrix
    grid: ImageGrid
    key: dict


def matrix_key(geometry: SinogramGeometry, grid: ImageGrid) -> dict:
    """What a 2D system matrix depends on (JSON-able)."""
    return {"scanner": geometry.scanner.to_dict(), "doi_mm": round(geometry.doi_mm, 9),
            "min_sector_difference": geometry.min_sector_difference,
            "shape_yx": list(grid.shape[1:]), "voxel_size_yx_mm": list(grid.voxel_size_mm[1:]),
            "origin_yx_mm": list(grid.origin_mm[1:])}


def build_system_matrix(geometry: SinogramGeometry, grid: ImageGrid,
                        device: torch.device | str = "cpu") -> SystemMatrix2D:
    """Compute the matrix of the transaxial part of ``grid`` (any number of planes)."""
    plane = ImageGrid((1, *grid.shape[1:]), (1.0, *grid.voxel_size_mm[1:]),
                      (0.0, *grid.origin_mm[1:]))
    p1, p2 = geometry.endpoints_mm(0.0)
    valid = geometry.valid().ravel()
    rows_valid = np.flatnonzero(valid)
    row, col, val = Projector(plane, device=device).matrix_entries(p1[valid], p2[valid])
    matrix = scipy.sparse.csr_matrix(
        (val.astype(np.float32), (rows_valid[row], col)),
        shape=(geometry.n_bins, plane.n_voxels))
    matrix.sum_duplicates()
    return SystemMatrix2D(matrix, plane, matrix_key(geometry, grid))


def write_system_matrix(path: str | Path, system: SystemMatrix2D,
                        overwrite: bool = False) -> Path:
    """Write the CSR arrays and the geometry key (atomically)."""
    path = Path(path)
    m = system.matrix
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        for name in ("data", "indices", "indptr"):
            f.create_dataset(name, data=getattr(m, name), compression="gzip",
                             compression_opts=1, shuffle=True)
        f.attrs["shape"] = np.asarray(m.shape)
        f.attrs["key"] = json.dumps(system.key, sort_keys=True)
        f.attrs["units"] = "mm"
    return path


def check_key(path: Path, attrs: dict, expected: dict[str, Any], what: str) -> None:
    """Check the JSON ``key`` attribute of a cached geometry file against what it is used
    for; the first field that differs is named in the error (with the file)."""
    if "key" not in attrs:
        raise ValueError(f"{path}: not a {what} file (no key attribute)")
    key = json.loads(attrs["key"])
    for field, value in expected.items():
        if key.get(field) != value:
            raise ValueError(f"{path}: made for another geometry: {field} is "
                             f"{key.get(field)!r}, expected {value!r}; rebuild it")


def read_system_matrix(path: str | Path, geometry: SinogramGeometry,
                       grid: ImageGrid) -> SystemMatrix2D:
    """Read a cached matrix and check it was built for this scanner and grid.

    Raises
    ------
    ValueError
        Naming the file and the first field whose value differs.
    """
    path = Path(path)
    expected = matrix_key(geometry, grid)
    with open_hdf5(path, "system matrix file") as f:
        attrs = decoded_attrs(f)
        if any(n not in f for n in ("data", "indices", "indptr")):
            raise ValueError(f"{path}: not a system matrix file (missing CSR arrays)")
        check_key(path, attrs, expected, "system matrix")
        key = json.loads(attrs["key"])
        matrix = scipy.sparse.csr_matrix((f["data"][...], f["indices"][...], f["indptr"][...]),
                                         shape=tuple(attrs["shape"]))
    plane = ImageGrid((1, *grid.shape[1:]), (1.0, *grid.voxel_size_mm[1:]),
                      (0.0, *grid.origin_mm[1:]))
    return SystemMatrix2D(matrix, plane, key)


def to_torch_csr(matrix: scipy.sparse.csr_matrix, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor."""
    matrix = matrix.tocsr()
    # 32-bit indices halve the index traffic of the (memory-bound) sparse products.
    index = torch.int32 if matrix.nnz < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we need
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.as_tensor(matrix.indptr, dtype=index),
            torch.as_tensor(matrix.indices, dtype=index),
            torch.as_tensor(matrix.data), size=matrix.shape, dtype=dtype,
            check_invariants=False).to(device)
