"""Torch datasets over ``positron.h5`` and ``ct.h5`` for the GAN stage.

* :class:`PositronPairs`: (low-count, reference) image pairs of one split, (1, H, W) each;
* :class:`PositronImages`: single positron images of one split (optionally one acquisition);
* :class:`CTImages`: CT slices of one split.

Positron images also give their defect class (:meth:`PositronImages.labels`, from
:mod:`models.data.labels`) and, as a second channel, their defect mask
(``with_masks=True``: -1 outside, +1 inside a defect, the [-1, 1] range of the images, so the
loop flips image and mask together); pairs give ``batch`` as two channels (low-count,
reference) and the reference image's class.

Images are read once into memory (a 64 px set of thousands of slices is a few MB; pass
``in_memory=False`` for large 256 px sets, which reads each item from the chunked file).
Augmentation (``augment=True``) applies one of the 8 flips and quarter turns of the square,
the same to both images of a pair, drawn from a generator seeded by ``(seed, epoch, index)``:
reproducible, and different every epoch after :meth:`set_epoch`. :func:`make_loader`
shuffles with a seeded generator, so the batch order is the same for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from models.data.image_set import check_images, open_image_set
from models.data.labels import image_classes

__all__ = ["CTImages", "PositronImages", "PositronPairs", "check_images", "dihedral",
           "make_loader", "string_column"]


def string_column(column) -> np.ndarray:
    """A string column of an HDF5 file as a numpy array of str."""
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in column[...]])


def dihedral(image: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) flip/rotation of the last two axes: k % 4 quarter turns, then a
    left-right flip when k >= 4."""
    out = torch.rot90(image, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


class _H5Images(Dataset):
    """Rows of the ``images`` dataset of a file, in memory or read per item."""

    def __init__(self, path: str | Path, rows: np.ndarray, augment: bool, seed: int,
                 in_memory: bool) -> None:
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._memory = None
        self._file = None
        if in_memory:
            with open_image_set(self.path, "image set") as f:
                images = f["images"][...]
            check_images(self.path, images)
            self._memory = torch.from_numpy(images)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (call once per epoch)."""
        self.epoch = int(epoch)

    def _image(self, row: int) -> torch.Tensor:
        if self._memory is not None:
            return self._memory[row][None]
        if self._file is None:  # one handle per process (DataLoader workers)
            self._file = h5py.File(self.path, "r")
        image = self._file["images"][row]
        check_images(self.path, image[None], first_row=int(row))
        return torch.from_numpy(image)[None]

    def _transform(self, index: int) -> int:
        if not self.augment:
            return 0
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & 0xFFFFFFFF)
        return int(torch.randint(0, 8, (1,), generator=g))


class PositronPairs(_H5Images):
    """(low-count, reference) pairs of one split of ``positron.h5``."""

    def __init__(self, path: str | Path, split: str = "train", augment: bool = False,
                 seed: int = 0, in_memory: bool = True) -> None:
        with open_image_set(Path(path), "positron image set") as f:
            for name in ("images", "pairs", "split"):
                if name not in f:
                    raise ValueError(f"{path}: missing dataset {name} (not a positron.h5)")
            pairs = f["pairs"][...]
            splits = string_column(f["split"])
        keep = pairs[(splits[pairs[:, 0]] == split) & (splits[pairs[:, 1]] == split)] if len(
            pairs) else pairs
        super().__init__(path, np.arange(len(keep)), augment, seed, in_memory)
        self.pairs = keep

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, ref = self.pairs[index]
        k = self._transform(index)
        return dihedral(self._image(int(low)), k), dihedral(self._image(int(ref)), k)

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """Pairs at positions ``indices``, (B, 2, H, W): channel 0 the low-count image,
        channel 1 the reference (not augmented: the loop flips both channels together)."""
        picked = self.pairs[np.asarray(indices, dtype=np.int64)]
        return torch.cat([_read_rows(self, picked[:, 0]), _read_rows(self, picked[:, 1])], 1)

    def labels(self, indices: np.ndarray) -> torch.Tensor:
        """Defect class (B,) int64 of the pairs' slices (their reference image's)."""
        return _classes(self)[self.pairs[np.asarray(indices, dtype=np.int64), 1]]


class _SplitImages(_H5Images):
    def __init__(self, path, what, split, augment, seed, in_memory, extra=None) -> None:
        with open_image_set(Path(path), what) as f:
            for name in ("images", "split"):
                if name not in f:
                    raise ValueError(f"{path}: missing dataset {name} (not a {what})")
            keep = string_column(f["split"]) == split
            if extra is not None:
                keep &= extra(f)
        super().__init__(path, np.flatnonzero(keep), augment, seed, in_memory)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return dihedral(self._image(int(self.rows[index])), self._transform(index))

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        """Images at positions ``indices`` of this split, (B, 1, H, W), not augmented (the
        training loop draws its own flips)."""
        return _read_rows(self, self.rows[np.asarray(indices, dtype=np.int64)])


class PositronImages(_SplitImages):
    """Single images of one split of ``positron.h5`` (of one acquisition when given);
    ``with_masks``: :meth:`batch` gives the defect mask as a second channel."""

    def __init__(self, path: str | Path, split: str = "train", acquisition: str | None = None,
                 augment: bool = False, seed: int = 0, in_memory: bool = True,
                 with_masks: bool = False) -> None:
        def only(f):
            return (string_column(f["acquisition"]) == acquisition) if acquisition else True

        super().__init__(path, "positron image set", split, augment, seed, in_memory, only)
        self.with_masks = bool(with_masks)
        self._masks = None
        if with_masks:
            with open_image_set(self.path, "positron image set") as f:
                if "masks" not in f:
                    raise ValueError(f"{self.path}: missing dataset masks (defect masks); "
                                     "rebuild the image set")
                # Their shape is the images' (checked on opening, models.data.image_set).
                self._masks = torch.from_numpy(f["masks"][...][self.rows] > 0)

    def batch(self, indices: np.ndarray) -> torch.Tensor:
        images = super().batch(indices)
        if not self.with_masks:
            return images
        masks = self._masks[torch.from_numpy(np.asarray(indices, dtype=np.int64))]
        return torch.cat([images, masks[:, None].to(images.dtype) * 2 - 1], dim=1)

    def masks(self, indices: np.ndarray) -> torch.Tensor:
        """Defect masks (B, H, W) bool of the images at positions ``indices``."""
        if self._masks is None:
            with open_image_set(self.path, "positron image set") as f:
                self._masks = torch.from_numpy(f["masks"][...][self.rows] > 0)
        return self._masks[torch.from_numpy(np.asarray(indices, dtype=np.int64))]

    def labels(self, indices: np.ndarray) -> torch.Tensor:
        """Defect class (B,) int64 of the images at positions ``indices``."""
        return _classes(self)[self.rows[np.asarray(indices, dtype=np.int64)]]

    def phantoms(self) -> np.ndarray:
        """Phantom name (N,) of every image of this split, in order: the unit of a bootstrap
        (slices of one phantom are not independent)."""
        with open_image_set(self.path, "positron image set") as f:
            if "phantom" not in f:
                raise ValueError(f"{self.path}: missing dataset phantom (the phantom of each "
                                 "image); rebuild the image set")
            return string_column(f["phantom"])[self.rows]


class CTImages(_SplitImages):
    """CT slices of one split of ``ct.h5``."""

    def __init__(self, path: str | Path, split: str = "train", augment: bool = False,
                 seed: int = 0, in_memory: bool = True) -> None:
        super().__init__(path, "CT image set", split, augment, seed, in_memory)


def _read_rows(data: _H5Images, rows: np.ndarray) -> torch.Tensor:
    """Images of file rows ``rows`` (any order, repeats allowed), (B, 1, H, W)."""
    if data._memory is not None:
        return data._memory[torch.from_numpy(rows)][:, None]
    if data._file is None:
        data._file = h5py.File(data.path, "r")
    order = np.argsort(rows)  # h5py reads increasing, unique indices
    unique, inverse = np.unique(rows[order], return_inverse=True)
    block = torch.from_numpy(data._file["images"][unique])[torch.from_numpy(inverse)]
    out = torch.empty_like(block)
    out[torch.from_numpy(order)] = block
    return out[:, None]


def _classes(data: _H5Images) -> torch.Tensor:
    """Defect class of every row of the file, (N,) int64 (read once)."""
    if getattr(data, "_class_rows", None) is None:
        data._class_rows = torch.from_numpy(image_classes(data.path))
    return data._class_rows


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling is seeded (same seed, same order of batches)."""
    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=False)
