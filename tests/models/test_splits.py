"""Split sizes by largest remainder (worked out by hand here), seeded assignment, and the
stratified split against exhaustive search."""

from __future__ import annotations

import itertools

import numpy as np
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


TYPES = ("crack", "hole", "pit", "inclusion", "bubble")


def _random_labels(seed: int, n: int) -> tuple[list[str], dict[str, list[str]]]:
    """``n`` phantoms holding 0, 1 or 2 distinct defect types each."""
    rng = np.random.default_rng(seed)
    groups = [f"p{i:03d}" for i in range(n)]
    return groups, {g: list(rng.choice(TYPES, size=int(rng.integers(0, 3)), replace=False))
                    for g in groups}


def _everywhere(split: dict[str, str], labels: dict[str, list[str]]) -> bool:
    """Every label held by >= 3 groups (no label counting as 'none') is in all three splits."""
    held: dict[str, set[str]] = {}
    for group, name in split.items():
        for label in labels[group] or ["none"]:
            held.setdefault(label, set()).add(name)
    counts = {label: sum(label in (ls or ["none"]) for ls in labels.values()) for label in held}
    return all(len(held[label]) == 3 for label in held if counts[label] >= 3)


def _brute_force_possible(groups, labels, sizes) -> bool:
    """Whether any split of these sizes puts every label held by >= 3 groups everywhere."""
    index = range(len(groups))
    for train in itertools.combinations(index, sizes[0]):
        rest = [i for i in index if i not in train]
        for val in itertools.combinations(rest, sizes[1]):
            names = ["test"] * len(groups)
            for i in train:
                names[i] = "train"
            for i in val:
                names[i] = "val"
            if _everywhere(dict(zip(groups, names, strict=True)), labels):
                return True
    return False


def test_stratified_split_finds_a_split_with_every_type_everywhere_when_one_exists():
    """Against exhaustive search on small sets: whenever some split of the sizes holds every
    type (of >= 3 phantoms) in train, val and test, the stratified split does; the plain
    seeded split often does not."""
    fractions = [0.5, 0.25, 0.25]
    possible = found = plain = 0
    for seed in range(60):
        groups, labels = _random_labels(seed, 8 + seed % 3)
        if not _brute_force_possible(groups, labels, split_counts(len(groups), fractions)):
            continue
        possible += 1
        found += _everywhere(assign_splits(groups, fractions, seed, labels), labels)
        plain += _everywhere(assign_splits(groups, fractions, seed), labels)
    assert possible >= 40
    assert found == possible
    assert plain < possible - 10


@pytest.mark.parametrize("seed", range(8))
def test_stratified_split_keeps_sizes_and_balances_each_type(seed):
    groups, labels = _random_labels(100 + seed, 48)
    fractions = [0.5, 0.25, 0.25]
    split = assign_splits(groups, fractions, seed, labels)
    assert split == assign_splits(groups, fractions, seed, labels)
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [24, 12, 12]
    for label in (*TYPES, "none"):
        holders = [g for g in groups if label in (labels[g] or ["none"])]
        for name, f in zip(("train", "val", "test"), fractions, strict=True):
            # Within 1.5 phantoms of the split's share of the type's phantoms.
            assert abs(sum(split[g] == name for g in holders) - f * len(holders)) <= 1.5
