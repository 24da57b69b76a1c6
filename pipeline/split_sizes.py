"""How many phantoms (or CT series) each of the train, validation and test splits gets:
arithmetic on the config's split fractions, shared by the datasets stage that draws the
splits (:mod:`models.data.splits`) and the config checks that must know a split's size
before any job runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
