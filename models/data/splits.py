"""Seeded train/validation/test splits of groups (phantoms, CT series): every member of a
group lands in the same split, so no phantom or patient is in two splits.

Groups may carry labels (a phantom's defect types, several per phantom): the split is then
stratified. scikit-learn stratifies single labels only, so the multi-label case is written
here as a local search: start from the seeded unstratified split, then swap groups between
splits (which keeps the split sizes of :func:`split_counts`) while a swap lowers

    sum over labels l and splits s of (n_ls - f_s n_l)^2 + MISSING_PENALTY [n_ls = 0],

``n_ls`` the groups of split ``s`` holding label ``l``, ``n_l`` all groups holding it,
``f_s`` the split's fraction; the indicator counts only where ``n_l`` is at least the
number of non-empty splits, so a label held by that many groups is in every split whenever a
swap can put it there. Each step takes the best swap; of the searches from several seeded
starts the best result is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from pipeline.split_sizes import split_counts

SPLITS = ("train", "val", "test")
__all__ = ["SPLITS", "assign_splits", "split_counts"]


def assign_splits(groups: Sequence[str], fractions: Sequence[float], seed: int,
                  labels: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Split name of each distinct group, drawn with ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    groups : sequence of str
        Group of every member (repeats allowed).
    fractions : sequence of 3 float
        Train, validation and test fractions (:func:`split_counts`).
    seed : int
    labels : mapping of group to iterable of str, optional
        Labels of each group (e.g. defect types), for a stratified split; a group with no
        labels, or missing from the mapping, counts under the label ``"none"``.
    """
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_train, n_val, _ = split_counts(len(unique), fractions)
    if labels is None:
        names = np.array(["test"] * len(unique), dtype=object)
        names[:n_train] = "train"
        names[n_train : n_train + n_val] = "val"
        return {unique[i]: str(names[rank]) for rank, i in enumerate(order)}
    return _stratified([unique[i] for i in order], fractions, labels, rng)


#: Weight of a label missing from a split it could be in, against squared count deviations.
MISSING_PENALTY = 100.0
#: Local searches from different seeded starts; the split of lowest cost is kept (single swaps
#: can stall where only a cycle of three groups would help).
RESTARTS = 16


def _stratified(groups: list[str], fractions: Sequence[float],
                labels: Mapping[str, Iterable[str]], rng: np.random.Generator
                ) -> dict[str, str]:
    """Swap searches from the unstratified split of ``groups`` (in the seeded order) and
    from ``RESTARTS - 1`` further seeded orders; the lowest cost wins (the first on ties)."""
    of = [set(labels.get(g, ())) or {"none"} for g in groups]
    names = sorted(set().union(*of))
    member = np.array([[name in ls for name in names] for ls in of], float)  # (groups, labels)
    sizes = split_counts(len(groups), fractions)
    f = np.asarray(fractions, float) / float(np.sum(fractions))
    held = member.sum(axis=0)
    wanted = f[:, None] * held[None, :]  # (splits, labels)
    could = (held[None, :] >= np.count_nonzero(sizes)) & (np.asarray(sizes)[:, None] > 0)

    def cost(counts: np.ndarray) -> np.ndarray:  # (..., splits, labels) -> (...)
        return (((counts - wanted) ** 2).sum(axis=(-2, -1))
                + MISSING_PENALTY * ((counts == 0) & could).sum(axis=(-2, -1)))

    best_split, best_cost = None, np.inf
    for start in range(RESTARTS):
        split = np.repeat(np.arange(3), sizes)
        if start:
            split = split[rng.permutation(len(groups))]
        value = _swap_search(split, member, cost)
        if value < best_cost - 1e-9:
            best_split, best_cost = split, value
    return {g: SPLITS[k] for g, k in zip(groups, best_split, strict=True)}


def _swap_search(split: np.ndarray, member: np.ndarray, cost) -> float:
    """Swap groups between splits (``split`` changed in place) while the best swap lowers
    ``cost``; returns the final cost."""
    while True:
        counts = np.stack([member[split == s].sum(axis=0) for s in range(3)])
        current, best = float(cost(counts)), None
        for a_split, b_split in ((0, 1), (0, 2), (1, 2)):
            a = np.flatnonzero(split == a_split)
            b = np.flatnonzero(split == b_split)
            if not (a.size and b.size):
                continue
            moved = member[b][None, :, :] - member[a][:, None, :]  # (a, b, labels)
            trial = np.broadcast_to(counts, (*moved.shape[:2], *counts.shape)).copy()
            trial[:, :, a_split] += moved
            trial[:, :, b_split] -= moved
            gain = current - cost(trial)
            i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
            if gain[i, j] > 1e-9 and (best is None or gain[i, j] > best[0]):
                best = (gain[i, j], a[i], b[j])
        if best is None:
            return current
        _, i, j = best
        split[i], split[j] = split[j], split[i]
