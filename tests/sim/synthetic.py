"""Small phantoms built in the tests (no voxeliser): point sources and slabs."""

from __future__ import annotations

import numpy as np

from sim.phantoms.file import PhantomData
from sim.phantoms.materials import get_material
from sim.phantoms.voxelise import MATERIAL_IDS


def phantom_data(material_names: np.ndarray, activity: np.ndarray,
                 voxel_size_mm=(1.0, 1.0, 1.0)) -> PhantomData:
    """A PhantomData of pure materials on a grid centred on the scanner centre (z, y, x)."""
    names = np.asarray(material_names)
    ids = np.vectorize(MATERIAL_IDS.__getitem__)(names).astype(np.uint8)
    mu = np.vectorize(lambda n: get_material(n).mu511_per_mm)(names).astype(np.float32)
    voxel = np.asarray(voxel_size_mm, float)
    origin = -(np.array(names.shape) - 1) / 2.0 * voxel
    materials = {int(MATERIAL_IDS[n]): {"name": str(n)} for n in np.unique(names)}
    return PhantomData(material=ids, activity=np.asarray(activity, np.float32),
                       mu511_per_mm=mu, labels=np.zeros(names.shape, np.uint8),
                       voxel_size_mm=voxel, origin_mm=origin, materials=materials, defects=[],
                       description={}, attrs={})


def point_in_air(shape=(3, 3, 3)) -> PhantomData:
    """Air grid of 1 mm voxels with all activity in the central voxel."""
    activity = np.zeros(shape)
    activity[tuple(s // 2 for s in shape)] = 1.0
    return phantom_data(np.full(shape, "air"), activity)
