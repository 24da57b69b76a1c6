"""A positron image set whose training split holds only some of its training phantoms:
what the data-scarcity curve trains its generators on (``scarcity_subset`` rule,
``results/{dataset}/scarcity/n{n}_d{d}/datasets/positron.h5``).

Every per-image dataset (the images, masks and truth, and every column) keeps the rows of
the validation and test splits and of the training phantoms named; the other training
phantoms' rows are dropped. The (low-count, reference) ``pairs`` are renumbered to the kept
rows (a pair with a dropped row is dropped). Attributes are copied, with ``subset_of`` (the
source file) and ``train_phantoms`` (JSON) added, so a reader sees which subset it holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from models.data.image_set import open_image_set
from models.data.loaders import string_column
from pipeline.fileio import atomic_output


def subset_rows(split: np.ndarray, phantom: np.ndarray, keep: Sequence[str]) -> np.ndarray:
    """Rows kept (bool (n,)): every non-training row, and the training rows of ``keep``."""
    train = split == "train"
    unknown = sorted(set(keep) - set(phantom[train]))
    if unknown:
        raise ValueError(f"phantoms {unknown} are not in the training split")
    return ~train | np.isin(phantom, list(keep))


def write_train_subset(positron_h5: str | Path, keep: Sequence[str], out_h5: str | Path,
                       overwrite: bool = False) -> Path:
    """Write the image set of ``positron_h5`` with its training split restricted to the
    phantoms ``keep`` (module docstring); returns ``out_h5``."""
    positron_h5, out_h5 = Path(positron_h5), Path(out_h5)
    with open_image_set(positron_h5, "positron image set") as src:
        n = src["images"].shape[0]
        kept = subset_rows(string_column(src["split"]), string_column(src["phantom"]), keep)
        new_index = np.cumsum(kept) - 1
        with atomic_output(out_h5, overwrite) as tmp, h5py.File(tmp, "w") as dst:
            for name, data in src.items():
                if name == "pairs":
                    pairs = data[...].reshape(-1, 2)
                    both = kept[pairs].all(axis=1) if pairs.size else np.zeros(0, bool)
                    dst.create_dataset(name, data=new_index[pairs[both]].astype(np.int64)
                                       .reshape(-1, 2))
                elif isinstance(data, h5py.Dataset) and data.shape[:1] == (n,):
                    values = data[...][kept]
                    options = ({"chunks": (1, *data.shape[1:]), "compression": "gzip",
                                "compression_opts": 4, "shuffle": True}
                               if data.ndim == 3 and values.shape[0] else {})
                    dst.create_dataset(name, data=values, dtype=data.dtype, **options)
                else:
                    src.copy(data, dst, name=name)
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            dst.attrs["subset_of"] = str(positron_h5)
            dst.attrs["train_phantoms"] = json.dumps(sorted(keep))
    return out_h5
