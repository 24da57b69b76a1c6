"""The phantom's truth on the reconstruction grid: exact box averages of the phantom's voxel
arrays over each image voxel, and the sub-voxel fraction of every defect.

Both grids are regular and axis-aligned, so the average of a phantom array over an image
voxel is separable: along each axis the overlap length of every image voxel with every
phantom voxel (divided by the image voxel's width) is a small matrix, and the 3D average is
those three matrices applied in turn (no interpolation, no sampling error). Image voxels that
stick out of the phantom's box average over the part inside and count the rest as empty
(activity 0, no material).

Defect fractions come from the defect's own solid (its ``shape`` record in the phantom file,
:mod:`sim.phantoms.shapes`) sampled ``subsamples**3`` times per image voxel and intersected with the
phantom voxels that carry the defect's label, because the phantom stage clips a defect to the
material it replaces (a hole only where there was wall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recon.grid import ImageGrid
from sim.phantoms import shapes
from sim.phantoms.file import PhantomData

#: Sub-samples per image voxel edge when a defect's fraction is measured.
DEFECT_SUBSAMPLES = 4


def phantom_image_grid(phantom: PhantomData) -> ImageGrid:
    """The grid of a phantom file's arrays."""
    return ImageGrid(phantom.activity.shape, tuple(phantom.voxel_size_mm),
                     tuple(phantom.origin_mm))


def overlap_fractions(dst_centres_mm: np.ndarray, dst_width_mm: float,
                      src_centres_mm: np.ndarray, src_width_mm: float) -> np.ndarray:
    """Share of each destination cell covered by each source cell along one axis.

    Returns
    -------
    numpy.ndarray
        (n_dst, n_src); row ``i`` sums to the share of cell ``i`` inside the source extent.
    """
    lo = np.maximum(dst_centres_mm[:, None] - dst_width_mm / 2,
                    src_centres_mm[None, :] - src_width_mm / 2)
    hi = np.minimum(dst_centres_mm[:, None] + dst_width_mm / 2,
                    src_centres_mm[None, :] + src_width_mm / 2)
    return np.clip(hi - lo, 0.0, None) / dst_width_mm


def box_average(volume: np.ndarray, src: ImageGrid, dst: ImageGrid) -> np.ndarray:
    """Average of ``volume`` (on ``src``, (z, y, x)) over each voxel of ``dst``, float64."""
    wz, wy, wx = (overlap_fractions(dst.centres_mm(a), dst.voxel_size_mm[a],
                                    src.centres_mm(a), src.voxel_size_mm[a]) for a in range(3))
    return np.einsum("az,by,cx,zyx->abc", wz, wy, wx, np.asarray(volume, np.float64),
                     optimize=True)


def activity_concentration(phantom: PhantomData, grid: ImageGrid) -> np.ndarray:
    """The phantom's activity per mm^3 (fraction of the phantom's activity) averaged over each
    voxel of ``grid``, float32 (z, y, x): the image an ideal reconstruction would give, up to
    the reconstruction's own scale."""
    voxel_mm3 = float(np.prod(phantom.voxel_size_mm))
    return (box_average(phantom.activity / voxel_mm3, phantom_image_grid(phantom), grid)
            .astype(np.float32))


def material_fraction(phantom: PhantomData, names: list[str], grid: ImageGrid) -> np.ndarray:
    """Share of each voxel of ``grid`` made of any of the named materials, (z, y, x)."""
    ids = [i for i, m in phantom.materials.items() if m.get("name") in names]
    return box_average(np.isin(phantom.material, ids), phantom_image_grid(phantom), grid)


def shape_from_record(record: dict[str, Any]) -> shapes.Shape:
    """Rebuild a solid from its ``describe()`` record (``{"shape": "Sphere", ...}``).

    Raises
    ------
    ValueError
        For an unknown shape name or fields that do not fit it.
    """
    record = dict(record)
    name = record.pop("shape", None)
    cls = getattr(shapes, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, shapes.Shape) and cls is not shapes.Shape):
        raise ValueError(f"unknown defect shape {name!r}")
    try:
        return cls(**record)
    except TypeError as err:
        raise ValueError(f"defect shape {name}: {err}") from None


@dataclass(frozen=True)
class DefectFraction:
    """Where a defect lies on the image grid.

    Attributes
    ----------
    fraction : numpy.ndarray
        Share of each voxel inside the defect, (z, y, x), float32 in [0, 1].
    """

    fraction: np.ndarray

    @property
    def max_fraction(self) -> float:
        return float(self.fraction.max(initial=0.0))


def defect_fraction(defect: dict[str, Any], phantom: PhantomData, grid: ImageGrid,
                    subsamples: int = DEFECT_SUBSAMPLES) -> DefectFraction:
    """Sub-voxel fraction of one defect of the phantom on ``grid`` (module docstring).

    Only the image voxels inside the solid's bounding box are sampled, so the cost grows
    with the defect's size, not the image's.
    """
    solid = shape_from_record(defect["shape"])
    label = int(defect["label"])
    out = np.zeros(grid.shape, np.float32)
    lower_xyz, upper_xyz = solid.bounds_mm()
    box = []
    for axis in range(3):  # image voxel index range of the bounding box, per (z, y, x) axis
        lo_mm, hi_mm = lower_xyz[2 - axis], upper_xyz[2 - axis]
        first = int(np.floor((lo_mm - grid.lower_mm[axis]) / grid.voxel_size_mm[axis]))
        last = int(np.ceil((hi_mm - grid.lower_mm[axis]) / grid.voxel_size_mm[axis]))
        first, last = max(first, 0), min(last, grid.shape[axis])
        if last <= first:
            return DefectFraction(out)
        box.append((first, last))
    # Sub-sample positions of every voxel in the box, (z, y, x) axes separately.
    offsets = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    axes_mm = [(grid.centres_mm(a)[first:last, None]
                + offsets[None, :] * grid.voxel_size_mm[a]).ravel()
               for a, (first, last) in enumerate(box)]
    z, y, x = np.meshgrid(*axes_mm, indexing="ij")
    inside = solid.contains(np.stack([x, y, z], axis=-1))
    # Clip to the phantom voxels that carry the label (what the defect really replaced).
    p_grid = phantom_image_grid(phantom)
    index = [np.floor((c - p_grid.lower_mm[a]) / p_grid.voxel_size_mm[a]).astype(int)
             for a, c in enumerate((z, y, x))]
    in_box = np.ones(z.shape, bool)
    for a, i in enumerate(index):
        in_box &= (i >= 0) & (i < p_grid.shape[a])
        index[a] = np.clip(i, 0, p_grid.shape[a] - 1)
    inside &= in_box & (phantom.labels[tuple(index)] == label)
    n = [last - first for first, last in box]
    share = inside.reshape(n[0], subsamples, n[1], subsamples, n[2], subsamples).mean(
        axis=(1, 3, 5))
    out[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]] = share
    return DefectFraction(out)
