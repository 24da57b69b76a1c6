"""MetaImage (.mhd + .raw) writer and reader, the voxelised-phantom format GATE reads.

Written by hand because the format is a dozen header lines plus raw bytes and the usual readers
(SimpleITK, ITK) are large binary dependencies. Conventions of the format (ITK): ``DimSize``,
``ElementSpacing`` and ``Offset`` are in (x, y, z) order, x fastest in the raw data, and
``Offset`` is the centre of the first voxel. Our arrays are (z, y, x) in C order, which is
exactly that memory layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_output

_TYPES = {
    np.dtype(np.uint8): "MET_UCHAR",
    np.dtype(np.int16): "MET_SHORT",
    np.dtype(np.uint16): "MET_USHORT",
    np.dtype(np.int32): "MET_INT",
    np.dtype(np.float32): "MET_FLOAT",
    np.dtype(np.float64): "MET_DOUBLE",
}
_DTYPES = {v: k for k, v in _TYPES.items()}


def write_mhd(
    path: str | Path,
    array_zyx: np.ndarray,
    voxel_size_zyx_mm,
    origin_zyx_mm,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write ``array_zyx`` as ``path`` (.mhd header) and the .raw file beside it.

    Parameters
    ----------
    array_zyx : numpy.ndarray
        3-D image, (z, y, x); dtype one of uint8, int16, uint16, int32, float32, float64.
    voxel_size_zyx_mm, origin_zyx_mm : sequence of 3 floats
        Voxel size and centre of voxel (0, 0, 0), (z, y, x) mm.

    Returns
    -------
    (header path, raw path)
    """
    path = Path(path)
    if path.suffix != ".mhd":
        raise ValueError(f"{path}: a MetaImage header must end in .mhd")
    array = np.ascontiguousarray(array_zyx)
    if array.ndim != 3 or array.dtype not in _TYPES:
        raise ValueError(f"{path}: need a 3-D array of {sorted(map(str, _TYPES))}, got "
                         f"{array.ndim}-D {array.dtype}")
    raw_path = path.with_suffix(".raw")
    spacing = " ".join(f"{v:.9g}" for v in voxel_size_zyx_mm[::-1])
    offset = " ".join(f"{v:.9g}" for v in origin_zyx_mm[::-1])
    dims = " ".join(str(n) for n in array.shape[::-1])
    header = (
        "ObjectType = Image\n"
        "NDims = 3\n"
        "BinaryData = True\n"
        "BinaryDataByteOrderMSB = False\n"
        "CompressedData = False\n"
        "TransformMatrix = 1 0 0 0 1 0 0 0 1\n"
        f"Offset = {offset}\n"
        "CenterOfRotation = 0 0 0\n"
        "AnatomicalOrientation = RAI\n"
        f"ElementSpacing = {spacing}\n"
        f"DimSize = {dims}\n"
        f"ElementType = {_TYPES[array.dtype]}\n"
        f"ElementDataFile = {raw_path.name}\n"
    )
    with atomic_output(raw_path, overwrite) as tmp:
        array.astype(array.dtype.newbyteorder("<"), copy=False).tofile(tmp)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(header)
    return path, raw_path


def read_mhd(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a MetaImage written by :func:`write_mhd` (or GATE/ITK, uncompressed).

    Returns
    -------
    (array (z, y, x), voxel size (z, y, x) mm, origin (z, y, x) mm)
    """
    path = Path(path)
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    for key in ("DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise ValueError(f"{path}: MetaImage header has no {key}")
    if fields.get("CompressedData", "False") == "True":
        raise ValueError(f"{path}: compressed MetaImage data is not supported")
    dtype = _DTYPES.get(fields["ElementType"])
    if dtype is None:
        raise ValueError(f"{path}: unsupported ElementType {fields['ElementType']}")
    if fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")) == "True":
        dtype = dtype.newbyteorder(">")
    dims = [int(v) for v in fields["DimSize"].split()][::-1]
    raw = np.fromfile(path.parent / fields["ElementDataFile"], dtype=dtype)
    if raw.size != int(np.prod(dims)):
        raise ValueError(f"{path}: raw file holds {raw.size} values, DimSize needs {np.prod(dims)}")
    spacing = np.array([float(v) for v in fields.get("ElementSpacing", "1 1 1").split()][::-1])
    origin = np.array([float(v) for v in fields.get("Offset", "0 0 0").split()][::-1])
    return raw.reshape(dims), spacing, origin
