"""Table 1's feature distances against held-out real images, with bootstrap intervals over
phantoms, and the rankings those intervals allow.

Every row of Table 1 is measured against the **held-out** real images (``evaluate.
held_out_split``): a generator is judged by how close it comes to images it never saw, so one
that returns its training images gains nothing. The training images stay in one column,
**memorisation**: the Fréchet distance to the training images minus the one to the held-out
images (about 0 for a generator of new images of the same distribution, negative for one
nearer the images it learned from; the real images of the other held-out split give its
scale).

Intervals are the 2.5 and 97.5 percentiles over ``replicates`` bootstrap resamples, shifted
by the bootstrap's bias (the mean over resamples minus the estimate): a resample holds about
63 % distinct phantoms, so a distance fitted to it is larger on average than the one fitted
to the whole set, and the plain percentiles can lie above the estimate itself. Bounded
columns are clipped to their range. Slices
of one phantom are not independent, so the real sets are resampled by **phantom** (a cluster
bootstrap: draw the phantoms with replacement, keep all their slices); a generated set is
resampled by image (its images are independent draws of the generator). Each replicate
draws one resample of the held-out phantoms and scores every row against it, and a method
trained with several seeds is scored by the mean over its seeds, each seed's set resampled.
A resample is given to the metrics as its distinct images and their counts
(:mod:`models.metrics.distances`, :mod:`models.metrics.prdc`). With fewer than two held-out
phantoms the phantom-to-phantom spread cannot be estimated: the intervals are NaN and the
table ranks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.metrics.distances import frechet_distance, weighted_mmd2
from models.metrics.prdc import prdc

#: Columns with an interval, and whether a lower value is better (None: no direction).
INTERVAL_COLUMNS = {"frechet": True, "kid_x1e3": True, "memorisation": None,
                    "precision": False, "recall": False, "density": None, "coverage": False}
#: The range of the bounded columns (intervals are clipped to it).
RANGES = {"frechet": (0.0, np.inf), "precision": (0.0, 1.0), "recall": (0.0, 1.0),
          "density": (0.0, np.inf), "coverage": (0.0, 1.0)}


@dataclass(frozen=True)
class FeatureSet:
    """Feature vectors (n, d) of one set of images and the phantom of each (None for a
    generated set, whose images are independent draws)."""

    features: np.ndarray
    phantoms: np.ndarray | None = None


def resample_counts(phantoms: np.ndarray | None, n: int, rng: np.random.Generator
                    ) -> np.ndarray:
    """How many times each of ``n`` images is in one bootstrap resample, (n,) int: by
    phantom when ``phantoms`` (n,) is given, else by image."""
    if phantoms is None:
        return np.bincount(rng.integers(0, n, n), minlength=n)
    names, index = np.unique(phantoms, return_inverse=True)
    drawn = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
    return drawn[index]


def feature_scores(x: FeatureSet, reference: FeatureSet, train: np.ndarray, k: int,
                   weights: np.ndarray | None = None,
                   reference_weights: np.ndarray | None = None) -> dict[str, float]:
    """The interval columns of one set against the held-out ``reference`` (the training
    features (m, d) for memorisation), each image counted ``weights`` times."""
    frechet = frechet_distance(x.features, reference.features, weights, reference_weights)
    to_train = frechet_distance(x.features, train, weights)
    return {"frechet": frechet, "frechet_train": to_train, "memorisation": to_train - frechet,
            "kid_x1e3": 1e3 * weighted_mmd2(x.features, reference.features, weights,
                                            reference_weights),
            **prdc(reference.features, x.features, k, reference_weights, weights)}


def bootstrap_intervals(rows: dict[str, list[FeatureSet]], reference: FeatureSet,
                        train: np.ndarray, k: int, replicates: int, seed: int
                        ) -> dict[str, dict[str, tuple[float, float]]]:
    """Per row (its sets: one per training seed) and interval column, the bias-corrected
    (2.5, 97.5) percentiles of the seed-mean score over bootstrap replicates (module
    docstring); NaN when the held-out set has fewer than two phantoms or ``replicates`` is
    0."""
    nan = {c: (float("nan"), float("nan")) for c in INTERVAL_COLUMNS}
    if replicates == 0 or len(np.unique(reference.phantoms)) < 2:
        return {name: dict(nan) for name in rows}

    def seed_mean(sets: list[FeatureSet], weights: list, ref_w) -> dict[str, float]:
        scores = [feature_scores(s, reference, train, k, w, ref_w)
                  for s, w in zip(sets, weights, strict=True)]
        return {c: float(np.mean([sc[c] for sc in scores])) for c in INTERVAL_COLUMNS}

    points = {name: seed_mean(sets, [None] * len(sets), None) for name, sets in rows.items()}
    rng = np.random.default_rng(seed)
    draws = {name: {c: np.empty(replicates) for c in INTERVAL_COLUMNS} for name in rows}
    for b in range(replicates):
        ref_w = resample_counts(reference.phantoms, len(reference.features), rng)
        for name, sets in rows.items():
            weights = [resample_counts(s.phantoms, len(s.features), rng) for s in sets]
            for c, v in seed_mean(sets, weights, ref_w).items():
                draws[name][c][b] = v
    out = {}
    for name, columns in draws.items():
        out[name] = {}
        for c, v in columns.items():
            bias = v.mean() - points[name][c]
            lo, hi = np.clip(np.percentile(v, [2.5, 97.5]) - bias,
                             *RANGES.get(c, (-np.inf, np.inf)))
            out[name][c] = (float(lo), float(hi))
    return out


def separated_pairs(points: dict[str, float], intervals: dict[str, tuple[float, float]],
                    lower_is_better: bool) -> list[tuple[str, str]]:
    """Pairs (better, worse) of rows whose intervals do not overlap, best first."""
    order = sorted(points, key=lambda n: points[n] if lower_is_better else -points[n])
    out = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            (a_lo, a_hi), (b_lo, b_hi) = intervals[a], intervals[b]
            if (a_hi < b_lo) if lower_is_better else (a_lo > b_hi):
                out.append((a, b))
    return out


def ranking_sentence(column_title: str, points: dict[str, float],
                     intervals: dict[str, tuple[float, float]], lower_is_better: bool) -> str:
    """One sentence: which rows the intervals of a column separate, or that none are."""
    if not all(np.isfinite(v).all() for v in intervals.values()):
        return f"{column_title}: no intervals, no ranking."
    pairs = separated_pairs(points, intervals, lower_is_better)
    if not pairs:
        return f"{column_title}: every interval overlaps another; no evidence of a ranking."
    word = "lower" if lower_is_better else "higher"
    return (f"{column_title} ({word} is better), separated by their intervals: "
            + "; ".join(f"{a} better than {b}" for a, b in pairs)
            + "; no evidence between the other rows.")
