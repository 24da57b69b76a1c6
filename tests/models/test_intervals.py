"""Table 1 against held-out images: weighted (resampled) metrics equal their definitions, the
cluster bootstrap resamples whole phantoms, and a generator that copies its training images
ranks first against the training images but not against held-out ones, where memorisation
exposes it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from models.evaluate.intervals import (
    FeatureSet,
    bootstrap_intervals,
    feature_scores,
    ranking_sentence,
    resample_counts,
    separated_pairs,
)
from models.metrics.distances import frechet_distance, weighted_mmd2
from models.metrics.prdc import prdc


def _mmd2_repeated(x, y):
    """Unbiased MMD^2 of the cubic kernel, written out over every pair of draws."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    total = 0.0
    for i in range(m):
        for j in range(m):
            if i != j:
                total += k(x[i:i + 1], x[j:j + 1])[0, 0] / (m * (m - 1))
    for i in range(n):
        for j in range(n):
            if i != j:
                total += k(y[i:i + 1], y[j:j + 1])[0, 0] / (n * (n - 1))
    return total - 2 * k(x, y).mean()


def test_weighted_distances_equal_the_sets_with_vectors_repeated():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(25, 3)), rng.normal(size=(18, 3)) + 0.4
    wx, wy = rng.integers(0, 4, 25), rng.integers(0, 4, 18)
    big_x, big_y = np.repeat(x, wx, 0), np.repeat(y, wy, 0)
    assert weighted_mmd2(x, y, wx, wy) == pytest.approx(_mmd2_repeated(big_x, big_y), rel=1e-9)
    assert frechet_distance(x, y, wx, wy) == pytest.approx(frechet_distance(big_x, big_y),
                                                           rel=1e-9)


def test_weighted_prdc_uses_distinct_neighbours_and_counted_shares():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 0.5
    wr, wf = rng.integers(0, 3, 30), rng.integers(0, 3, 20)
    got = prdc(real, fake, 3, wr, wf)
    # Reference: balls from the distinct vectors present, shares counted per draw.
    r, f = real[wr > 0], fake[wf > 0]
    cr, cf = wr[wr > 0], wf[wf > 0]
    rad_r = np.sort(cdist(r, r), axis=1)[:, 3]
    rad_f = np.sort(cdist(f, f), axis=1)[:, 3]
    d = cdist(r, f)
    precision = sum(cf[j] * any(d[i, j] < rad_r[i] for i in range(len(r)))
                    for j in range(len(f))) / cf.sum()
    recall = sum(cr[i] * any(d[i, j] < rad_f[j] for j in range(len(f)))
                 for i in range(len(r))) / cr.sum()
    density = sum(cf[j] * sum(cr[i] * (d[i, j] < rad_r[i]) for i in range(len(r)))
                  for j in range(len(f))) / cf.sum() / 3
    coverage = sum(cr[i] * (d[i].min() < rad_r[i]) for i in range(len(r))) / cr.sum()
    assert got == pytest.approx({"precision": precision, "recall": recall,
                                 "density": density, "coverage": coverage})
    assert prdc(real, fake, 3, np.ones(30, int), np.ones(20, int)) == prdc(real, fake, 3)


def test_cluster_resampling_keeps_or_drops_whole_phantoms():
    rng = np.random.default_rng(3)
    phantoms = np.repeat([f"p{i}" for i in range(6)], [3, 5, 2, 4, 6, 1])
    counts = np.array([resample_counts(phantoms, len(phantoms), rng) for _ in range(4000)])
    for name in np.unique(phantoms):  # one count per phantom, shared by its images
        assert np.all(counts[:, phantoms == name] == counts[:, phantoms == name][:, :1])
    # A phantom is drawn Binomial(6, 1/6) times: mean 1, variance 5/6.
    per_phantom = counts[:, np.unique(phantoms, return_index=True)[1]]
    assert per_phantom.mean() == pytest.approx(1.0, abs=0.03)
    assert per_phantom.var() == pytest.approx(5 / 6, rel=0.06)
    iid = resample_counts(None, 50, rng)
    assert iid.sum() == 50


def _phantom_images(rng, n_phantoms, per_phantom, dim, spread=1.0, noise=0.5):
    """Features of slices: a centre per phantom plus slice noise (slices of a phantom are
    correlated, as real slices are)."""
    centres = rng.normal(scale=spread, size=(n_phantoms, dim))
    x = np.repeat(centres, per_phantom, 0) + rng.normal(scale=noise,
                                                       size=(n_phantoms * per_phantom, dim))
    return x, np.repeat([f"p{i}" for i in range(n_phantoms)], per_phantom)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_copying_generator_no_longer_ranks_first_and_memorisation_exposes_it(seed):
    rng = np.random.default_rng(seed)
    dim, n = 6, 120
    train, _ = _phantom_images(rng, 24, 10, dim)
    held, held_ph = _phantom_images(rng, 10, 12, dim)
    copier = FeatureSet(train[rng.choice(len(train), n, replace=False)])
    honest = FeatureSet(_phantom_images(rng, n, 1, dim)[0])  # new phantoms, one slice each
    k = 5
    reference = FeatureSet(held, held_ph)
    points = {name: feature_scores(s, reference, train, k)
              for name, s in (("copier", copier), ("honest", honest))}
    # Scored against its training images, the copier would rank first.
    assert points["copier"]["frechet_train"] < points["honest"]["frechet_train"]
    intervals = bootstrap_intervals({"copier": [copier], "honest": [honest]}, reference,
                                    train, k, 200, seed)
    frechet = {name: points[name]["frechet"] for name in points}
    pairs = separated_pairs(frechet, {m: intervals[m]["frechet"] for m in points}, True)
    assert ("copier", "honest") not in pairs
    # Memorisation: the copier is nearer its training images beyond its interval; the
    # honest generator's interval holds 0.
    assert intervals["copier"]["memorisation"][1] < 0
    lo, hi = intervals["honest"]["memorisation"]
    assert lo < 0 < hi
    for name in points:
        lo, hi = intervals[name]["frechet"]
        assert lo <= points[name]["frechet"] <= hi


def test_one_held_out_phantom_gives_no_interval_and_no_ranking():
    rng = np.random.default_rng(4)
    train, _ = _phantom_images(rng, 5, 10, 4)
    held, held_ph = _phantom_images(rng, 1, 30, 4)
    sets = {"a": [FeatureSet(rng.normal(size=(30, 4)))]}
    out = bootstrap_intervals(sets, FeatureSet(held, held_ph), train, 3, 50, 0)
    assert all(np.isnan(v).all() for v in out["a"].values())
    assert "no ranking" in ranking_sentence("Fréchet", {"a": 1.0}, {"a": out["a"]["frechet"]},
                                            True)


def test_ranking_names_only_separated_pairs():
    points = {"a": 1.0, "b": 2.0, "c": 2.2}
    intervals = {"a": (0.8, 1.2), "b": (1.5, 2.5), "c": (2.0, 2.4)}
    assert separated_pairs(points, intervals, True) == [("a", "b"), ("a", "c")]
    assert separated_pairs({"a": 0.9, "b": 0.5}, {"a": (0.8, 1.0), "b": (0.4, 0.6)},
                           False) == [("a", "b")]
    text = ranking_sentence("coverage", {"a": 0.9, "b": 0.5},
                            {"a": (0.8, 1.0), "b": (0.4, 0.6)}, False)
    assert "a better than b" in text and "higher is better" in text
