"""Split sizes by largest remainder (worked out by hand here) and seeded assignment."""

from __future__ import annotations

import pytest

from models.data.splits import assign_splits, split_counts


@pytest.mark.parametrize("n, fractions, expected", [
    (4, [0.5, 0.25, 0.25], (2, 1, 1)),
    (10, [0.8, 0.1, 0.1], (8, 1, 1)),
    (7, [0.7, 0.15, 0.15], (5, 1, 1)),   # 4.9, 1.05, 1.05 -> floors 4, 1, 1, +1 to train
    (1, [0.5, 0.25, 0.25], (1, 0, 0)),
    (3, [0.1, 0.45, 0.45], (1, 1, 1)),   # 0.3, 1.35, 1.35 -> 0, 2, 1 -> one moved to train
    (6, [1, 1, 0], (3, 3, 0)),           # fractions need not sum to 1
])
def test_split_counts(n, fractions, expected):
    assert split_counts(n, fractions) == expected


def test_assignment_is_seeded_and_covers_every_group():
    groups = [f"g{i}" for i in range(20)] * 3
    a = assign_splits(groups, [0.6, 0.2, 0.2], seed=1)
    assert a == assign_splits(groups, [0.6, 0.2, 0.2], seed=1)
    assert a != assign_splits(groups, [0.6, 0.2, 0.2], seed=2)
    assert sorted(a) == sorted(set(groups))
    assert [list(a.values()).count(s) for s in ("train", "val", "test")] == [12, 4, 4]
    with pytest.raises(ValueError, match="train > 0"):
        split_counts(5, [0, 1, 1])
