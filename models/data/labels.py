"""Defect classes of the positron images: the labels of class-conditional generation and of
the downstream detector.

Each image has one class (:data:`DEFECT_CLASSES`): ``none``, or the type of the defect
covering most of the slice's pixels (``defect_class`` column of ``positron.h5``; a slice
cutting a crack and a small pit is a ``crack`` image). Image sets written before that column
existed are read from ``defect_types`` with the same tie rule, by class order, since the
areas are not stored there. Masks are the phantom's defect numbers per pixel; a defect mask
is ``masks > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.data.image_set import open_image_set

#: Defect classes of the image sets, in label order (``none``: no defect in the image).
DEFECT_CLASSES = ("none", "crack", "hole", "pit", "inclusion", "bubble")


def class_index(names: Sequence[str], path: Path | str = "", field: str = "defect_class"
                ) -> np.ndarray:
    """Class numbers (n,) int64 of class names; an unknown name is refused naming the field."""
    lookup = {name: i for i, name in enumerate(DEFECT_CLASSES)}
    names = np.asarray(names, dtype=object)
    unknown = sorted({str(n) for n in names if n not in lookup})
    if unknown:
        raise ValueError(f"{path}: {field} holds {', '.join(map(repr, unknown))}, not one of "
                         f"{', '.join(DEFECT_CLASSES)}")
    return np.asarray([lookup[n] for n in names], dtype=np.int64)


def _from_types(types: np.ndarray) -> np.ndarray:
    """One class per comma-separated ``defect_types`` entry: the first of its types in
    :data:`DEFECT_CLASSES` order, ``none`` for an empty entry."""
    rank = {name: i for i, name in enumerate(DEFECT_CLASSES)}
    out = []
    for entry in types:
        present = [t for t in str(entry).split(",") if t]
        out.append(min(present, key=lambda t: rank.get(t, len(rank))) if present else "none")
    return np.asarray(out, dtype=object)


def image_classes(positron_h5: Path | str) -> np.ndarray:
    """The class number of every image of ``positron.h5``, (N,) int64."""
    with open_image_set(Path(positron_h5), "positron image set") as f:
        if "defect_class" in f:
            return class_index(f["defect_class"].asstr()[...], positron_h5)
        if "defect_types" not in f:
            raise ValueError(f"{positron_h5}: missing dataset defect_class (and defect_types): "
                             "no defect labels; rebuild the image set")
        return class_index(_from_types(f["defect_types"].asstr()[...]), positron_h5,
                           "defect_types")


def class_names(indices: Sequence[int]) -> list[str]:
    """Names of class numbers."""
    return [DEFECT_CLASSES[int(i)] for i in indices]
