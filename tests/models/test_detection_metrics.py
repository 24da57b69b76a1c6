"""The detector's metrics (:mod:`models.metrics.detection`) equal scikit-learn's on fixed
predictions, ties and empty masks included; the clustered paired AUC test against a slow
double loop, a cluster bootstrap and the uniformity of its p values under the null."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from models.metrics.detection import (
    DEFECT_CLASSES,
    dice_per_image,
    paired_auc_test,
    per_class_accuracy,
    presence_auc,
)


@pytest.mark.parametrize("seed", range(5))
def test_presence_auc_is_sklearns(seed):
    rng = np.random.default_rng(seed)
    present = rng.random(60) < 0.4
    # Rounded scores: many ties, within and across the two groups.
    scores = np.round(rng.normal(present * 0.8, 1.0), 1)
    assert presence_auc(scores, present) == pytest.approx(roc_auc_score(present, scores),
                                                          abs=1e-12)


def test_presence_auc_limits_and_refusals():
    assert presence_auc([0.1, 0.2, 0.9, 0.95], [False, False, True, True]) == 1.0
    assert presence_auc([0.9, 0.95, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert presence_auc([0.5] * 4, [False, True, False, True]) == 0.5
    with pytest.raises(ValueError, match="with and without a defect"):
        presence_auc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="NaN or infinite"):
        presence_auc([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="3 presence scores for 2 labels"):
        presence_auc([0.1, 0.2, 0.3], [True, False])


def test_per_class_accuracy_is_sklearns_recall_per_class():
    rng = np.random.default_rng(3)
    n = len(DEFECT_CLASSES)
    truth = rng.integers(0, n, 200)
    predicted = np.where(rng.random(200) < 0.6, truth, rng.integers(0, n, 200))
    expected = recall_score(truth, predicted, labels=list(range(n)), average=None,
                            zero_division=0)
    np.testing.assert_allclose(per_class_accuracy(predicted, truth), expected, atol=1e-12)


def test_a_class_without_images_has_no_accuracy():
    accuracy = per_class_accuracy([0, 1, 1], [0, 1, 2], n_classes=4)
    np.testing.assert_array_equal(accuracy[:3], [1.0, 1.0, 0.0])
    assert np.isnan(accuracy[3])
    with pytest.raises(ValueError, match="predicted class 6 is not one of 0 .. 5"):
        per_class_accuracy([6], [0])
    with pytest.raises(ValueError, match="true class -1"):
        per_class_accuracy([0], [-1])


def test_dice_per_image_is_sklearns_f1_of_the_pixels():
    rng = np.random.default_rng(4)
    truth = rng.random((6, 8, 8)) < 0.2
    predicted = truth ^ (rng.random((6, 8, 8)) < 0.1)
    truth[5] = predicted[5] = False  # nothing to find, nothing found
    truth[4] = False  # a false alarm only
    expected = [f1_score(t.ravel(), p.ravel(), zero_division=1.0)
                for t, p in zip(truth, predicted, strict=True)]
    np.testing.assert_allclose(dice_per_image(predicted, truth), expected, atol=1e-12)
    assert dice_per_image(predicted, truth)[5] == 1.0
    assert dice_per_image(predicted, truth)[4] == 0.0
    with pytest.raises(ValueError, match="two stacks"):
        dice_per_image(predicted[0], truth[0])


def test_auc_standard_error_against_hanley_and_mcneil_by_hand():
    from models.metrics.detection import auc_standard_error

    # AUC 0.5, 14 with and 31 without: Q1 = Q2 = 1/3, by hand.
    var = (0.25 + 13 * (1 / 3 - 0.25) + 30 * (1 / 3 - 0.25)) / (14 * 31)
    assert auc_standard_error(0.5, 14, 31) == pytest.approx(np.sqrt(var), rel=1e-12)
    # A = 0.9, 50 and 50: Q1 = 0.9 / 1.1, Q2 = 1.62 / 1.9, worked out to 5 digits by hand:
    # var = (0.09 + 49 x 0.0081818 + 49 x 0.042632) / 2500 = 0.0010319, SE 0.032124.
    assert auc_standard_error(0.9, 50, 50) == pytest.approx(0.032124, abs=2e-6)
    with pytest.raises(ValueError, match="both labels"):
        auc_standard_error(0.5, 0, 10)


def _clustered(rng: np.random.Generator, clusters: int, per: int, shift: float,
               shared_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images in clusters (phantoms), half with a defect whose visibility is the
    phantom's (scores of its defect images raised by ``shift`` plus a per-phantom term of
    spread ``shared_sd``); two scores of each image that share that and part of the
    image's own noise (two detectors of one image)."""
    cluster = np.repeat(np.arange(clusters), per)
    present = rng.random(cluster.size) < 0.5
    visibility = rng.normal(shift, shared_sd, clusters)[cluster]
    common = rng.normal(size=cluster.size)
    a = common + visibility * present + 0.5 * rng.normal(size=cluster.size)
    b = common + visibility * present + 0.5 * rng.normal(size=cluster.size)
    return a, b, present, cluster


def test_paired_auc_components_against_a_slow_double_loop():
    """The areas and the clustered covariance against the definitions written out pair by
    pair (psi over every positive and negative, per-cluster sums, Obuchowski's S10, S01,
    S11), ties included."""
    rng = np.random.default_rng(3)
    a, b, present, cluster = _clustered(rng, 7, 9, 1.0, 1.0)
    a = np.round(a, 1)  # ties
    out = paired_auc_test(a, b, present, cluster)
    pos, neg = np.flatnonzero(present), np.flatnonzero(~present)
    m, n, k = pos.size, neg.size, 7

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    def parts(s):
        v10 = {i: sum(psi(s[i], s[j]) for j in neg) / n for i in pos}
        v01 = {j: sum(psi(s[i], s[j]) for i in pos) / m for j in neg}
        auc = sum(v10.values()) / m
        c10 = [sum(v10[i] for i in pos if cluster[i] == c) - auc * sum(
            cluster[pos] == c) for c in range(k)]
        c01 = [sum(v01[j] for j in neg if cluster[j] == c) - auc * sum(
            cluster[neg] == c) for c in range(k)]
        return auc, np.array(c10), np.array(c01)

    pa, pb = parts(a), parts(b)
    f = k / (k - 1)

    def cov(x, y):
        return f * ((x[1] @ y[1]) / m**2 + (x[2] @ y[2]) / n**2
                    + (x[1] @ y[2] + x[2] @ y[1]) / (m * n))

    assert out.auc_a == pytest.approx(pa[0]) and out.auc_b == pytest.approx(pb[0])
    assert out.auc_a == pytest.approx(roc_auc_score(present, a))
    assert out.se_a == pytest.approx(np.sqrt(cov(pa, pa)))
    var_d = cov(pa, pa) + cov(pb, pb) - 2 * cov(pa, pb)
    assert out.se_difference == pytest.approx(np.sqrt(var_d))
    assert out.clusters == k


def test_the_clustered_standard_error_matches_a_cluster_bootstrap():
    """Strongly clustered images (40 phantoms of 15 slices): the standard error of the AUC
    difference agrees with the spread of 2000 bootstrap resamples of whole phantoms within
    15 %, where the unclustered DeLong error (every image its own cluster) is smaller by
    more than that."""
    rng = np.random.default_rng(8)
    a, b, present, cluster = _clustered(rng, 40, 15, 1.0, 1.5)
    out = paired_auc_test(a, b, present, cluster)
    naive = paired_auc_test(a, b, present)
    diffs = []
    for _ in range(2000):
        pick = rng.integers(0, 40, 40)
        idx = np.concatenate([np.flatnonzero(cluster == c) for c in pick])
        if 0 < present[idx].sum() < idx.size:
            diffs.append(roc_auc_score(present[idx], a[idx])
                         - roc_auc_score(present[idx], b[idx]))
    boot = np.std(diffs, ddof=1)
    assert out.se_difference == pytest.approx(boot, rel=0.15)
    assert naive.se_a < 0.85 * out.se_a


def test_paired_auc_p_values_are_uniform_under_the_null():
    """Two exchangeable scores (equal areas by construction), 400 clustered data sets: the
    p values' distribution is uniform (Kolmogorov-Smirnov p > 0.01) and about 5 % fall
    below 0.05 (between 2 % and 9 %)."""
    rng = np.random.default_rng(12)
    ps = []
    for _ in range(400):
        a, b, present, cluster = _clustered(rng, 30, 6, 1.0, 1.0)
        ps.append(paired_auc_test(a, b, present, cluster).p)
    ps = np.array(ps)
    assert scipy.stats.kstest(ps, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09


def test_paired_auc_refuses_what_it_cannot_compare():
    with pytest.raises(ValueError, match="with and without"):
        paired_auc_test([0.1, 0.2], [0.3, 0.4], [True, True])
    with pytest.raises(ValueError, match="two clusters"):
        paired_auc_test([0.1, 0.2], [0.3, 0.4], [True, False], [5, 5])
    with pytest.raises(ValueError, match="NaN"):
        paired_auc_test([0.1, np.nan], [0.3, 0.4], [True, False])
    with pytest.raises(ValueError, match="3 and 2"):
        paired_auc_test([0.1, 0.2, 0.3], [0.3, 0.4], [True, False])
