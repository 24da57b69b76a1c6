"""Opening an image set (``positron.h5``, ``ct.h5``, a generated set) with its contract checked.

An image set holds ``images`` (N, H, W), float, finite, in [-1, 1] (DESIGN.md), and columns
with one entry per image: every other dataset at the file's root except ``pairs`` (``split``,
``phantom``, ``acquisition``, ``labels``, ``defect_class``, ``scale``, ``series``, ... of
length N; ``masks`` and ``truth`` of the images' own shape (N, H, W)). ``pairs`` (M, 2) holds
row numbers of images, in [0, N).

Every reader opens a set with :func:`open_image_set`, which refuses a column whose length or
shape disagrees with ``images`` (or a pair outside the rows) with one message naming the file,
the column, its length and the one expected, before any column is indexed by another (a
``split`` column shorter than ``images`` used to end in a numpy broadcasting error).
:func:`check_images` checks the values of the images a reader reads.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline import values
from pipeline.fileio import open_hdf5

#: Datasets of an image set that are not per-image columns.
NOT_PER_IMAGE = ("images", "pairs")


def check_images(path: Path | str, images: np.ndarray, first_row: int = 0,
                 dataset: str = "images", rows: np.ndarray | None = None) -> None:
    """The image-set contract (DESIGN.md) for images read from ``path``: float images
    (n, size, size), finite, in [-1, 1] (the normalisation every set shares).

    ``dataset`` names what was read (``truth`` images share the contract); the file row of
    ``images[i]`` is ``rows[i]`` when given, else ``first_row + i`` (for the message)."""
    field = f"dataset {dataset}"
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{path}: {field} has shape {images.shape}, expected (n, size, size)")
    if rows is None:
        rows = first_row + np.arange(len(images))
    values.float_array(str(path), field, images)  # NaN or infinity: index into ``images``
    if images.size and np.abs(images).max() > 1 + 1e-6:
        row = int(rows[np.argmax(np.abs(images).reshape(len(images), -1).max(axis=1))])
        raise ValueError(f"{path}: {field} has values outside [-1, 1] (row {row}): not "
                         "normalised as an image set")


def check_columns(f: h5py.File, path: Path | str) -> int:
    """The number of images of an open image set, after checking every column against it.

    Raises
    ------
    ValueError
        Naming ``path``, the dataset and what is wrong: no ``images``, images not
        (N, H, W), a per-image column of another length (or an image-shaped one of another
        shape), ``pairs`` not (M, 2) row numbers in [0, N).
    """
    images = f.get("images")
    if not isinstance(images, h5py.Dataset):
        raise ValueError(f"{path}: missing dataset images (not an image set)")
    if images.ndim != 3:
        raise ValueError(f"{path}: dataset images has shape {images.shape}, expected "
                         "(n, size, size)")
    n = images.shape[0]
    for name, column in f.items():
        if name in NOT_PER_IMAGE or not isinstance(column, h5py.Dataset):
            continue
        if column.ndim == 0:
            raise ValueError(f"{path}: dataset {name} holds a single value; it must have one "
                             f"entry per image ({n})")
        if column.ndim == 3 and column.shape != images.shape:
            raise ValueError(f"{path}: dataset {name} has shape {column.shape}, but images has "
                             f"{images.shape} (one per image, of the images' size, expected)")
        if column.shape[0] != n:
            raise ValueError(f"{path}: dataset {name} has {column.shape[0]} entries, but "
                             f"images has {n} (one per image expected)")
    if "pairs" in f:
        pairs = f["pairs"]
        if not isinstance(pairs, h5py.Dataset) or pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"{path}: dataset pairs has shape "
                             f"{getattr(pairs, 'shape', None)}, expected (m, 2) image rows")
        rows = values.exact_cast(str(path), "dataset pairs", pairs[...], np.int64)
        outside = (rows < 0) | (rows >= n)
        if outside.any():
            at = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ValueError(f"{path}: dataset pairs has {int(outside.sum())} row number(s) "
                             f"outside the {n} images (first {int(rows[at])} at index {at})")
    return n


def open_image_set(path: Path | str, what: str = "image set") -> h5py.File:
    """Open an image set for reading (a context manager, as :func:`h5py.File`) after
    :func:`check_columns`; a missing or unreadable file gives one error naming ``what``."""
    f = open_hdf5(Path(path), what)
    try:
        check_columns(f, path)
    except BaseException:
        f.close()
        raise
    return f
