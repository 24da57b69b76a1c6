"""Seeded train/validation/test splits of groups (phantoms, CT series): every member of a
group lands in the same split, so no phantom or patient is in two splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def split_counts(n_groups: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many groups go to train, val and test: the fractions (normalised) rounded by
    largest remainder, with at least one train group."""
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or f[0] <= 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers with train > 0, "
                         f"got {list(fractions)}")
    exact = f / f.sum() * n_groups
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: n_groups - counts.sum()]:
        counts[i] += 1
    if n_groups and counts[0] == 0:  # one train group at least
        counts[int(np.argmax(counts))] -= 1
        counts[0] = 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def assign_splits(groups: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, str]:
    """Split name of each distinct group, drawn with ``numpy.random.default_rng(seed)``."""
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train, n_val, _ = split_counts(len(unique), fractions)
    names = np.array(["test"] * len(unique), dtype=object)
    names[:n_train] = "train"
    names[n_train : n_train + n_val] = "val"
    return {unique[i]: str(names[rank]) for rank, i in enumerate(order)}
