"""Metrics of a defect detector on real test images (the downstream test: train on
synthetic, test on real).

* **Presence AUC**: the area under the ROC curve of a defect-presence score, computed as the
  Mann-Whitney statistic ``U / (n_pos n_neg)`` from average ranks (ties count one half), which
  is the trapezoidal ROC area scikit-learn's ``roc_auc_score`` gives.
* **Per-class accuracy**: for each defect type (``none`` included), the share of its images
  given that type (the recall of the class; their mean is the balanced accuracy). A class with
  no test image has no accuracy: NaN, never 0 or 1.
* **Dice** of predicted against true defect masks, per image: ``2 |P and T| / (|P| + |T|)``;
  an image where both masks are empty scores 1 (nothing to find, nothing found), one where
  only one is empty scores 0. The mean over images is reported.

* **Paired comparison of two AUCs** on the same images (:func:`paired_auc_test`): DeLong,
  DeLong and Clarke-Pearson (1988) with the structural components summed per cluster
  (Obuchowski 1997), since the slices of one phantom are not independent: the variance of
  each AUC and of their difference from the spread between phantoms, a z test, and a
  two-sided p value. With one image per cluster it is DeLong's test.

Written here rather than imported because the training loop evaluates them on torch tensors
every epoch, and no maintained library computes the clustered paired test; the tests check
them against scikit-learn on fixed predictions, a slow double loop, a cluster bootstrap and
the uniformity of the p values under the null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from models.data.labels import DEFECT_CLASSES


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return values


def presence_auc(scores: Sequence[float], present: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` (higher: more likely a defect) for the labels
    ``present`` (bool, one per image).

    Raises
    ------
    ValueError
        Scores not finite, lengths differing, or only one label among the images (the
        curve is then undefined).
    """
    scores = _finite("presence scores", scores).ravel()
    present = np.asarray(present, dtype=bool).ravel()
    if scores.shape != present.shape:
        raise ValueError(f"{scores.size} presence scores for {present.size} labels")
    n_pos = int(present.sum())
    n_neg = present.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("presence AUC needs images with and without a defect "
                         f"({n_pos} with, {n_neg} without)")
    ranks = rankdata(scores)  # average ranks: a tie between the two groups counts one half
    u = ranks[present].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def per_class_accuracy(predicted: Sequence[int], truth: Sequence[int],
                       n_classes: int = len(DEFECT_CLASSES)) -> np.ndarray:
    """Share of each class's images predicted as that class, (n_classes,); NaN for a class
    without images.

    Raises
    ------
    ValueError
        Labels outside ``0 .. n_classes - 1`` or lengths differing.
    """
    predicted = np.asarray(predicted).ravel()
    truth = np.asarray(truth).ravel()
    if predicted.shape != truth.shape:
        raise ValueError(f"{predicted.size} predicted classes for {truth.size} true ones")
    for name, labels in (("predicted", predicted), ("true", truth)):
        bad = labels[(labels < 0) | (labels >= n_classes) | (labels != np.floor(labels))]
        if bad.size:
            raise ValueError(f"{name} class {bad[0].item()!r} is not one of 0 .. {n_classes - 1}")
    truth = truth.astype(np.int64)
    hits = np.bincount(truth[predicted == truth], minlength=n_classes).astype(np.float64)
    counts = np.bincount(truth, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.where(counts > 0, counts, 1.0), np.nan)


def dice_per_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of boolean masks (n, height, width) image by image, (n,) (module docstring for
    empty masks).

    Raises
    ------
    ValueError
        Shapes differing or not a stack of 2D masks.
    """
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(f"masks must be two stacks (n, height, width) of one shape, got "
                         f"{predicted.shape} and {truth.shape}")
    overlap = (predicted & truth).sum(axis=(1, 2)).astype(np.float64)
    total = (predicted.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))).astype(np.float64)
    return np.where(total > 0, 2.0 * overlap / np.where(total > 0, total, 1.0), 1.0)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an ROC area from ``n_pos`` positive and ``n_neg`` negative images
    (Hanley and McNeil 1982, their eq. 2 with the exponential approximations of Q1, Q2):
    the resolution of a test set, against which differences of AUC are to be read."""
    if n_pos < 1 or n_neg < 1 or not 0.0 <= auc <= 1.0:
        raise ValueError(f"AUC standard error needs 0 <= AUC <= 1 and images of both labels, "
                         f"got AUC {auc}, {n_pos} with and {n_neg} without a defect")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


#: The false positive rate at which sensitivities are read.
FALSE_POSITIVE_RATE = 0.1


def sensitivity_at_fpr(scores: np.ndarray, classes: np.ndarray, rate: float
                       ) -> dict[str, float]:
    """Per defect class present (and ``all``), the share of its images scoring above the
    threshold that at most ``rate`` of the defect-free images exceed (scores (n,), classes
    (n,) with 0 for no defect): the ROC operating point of highest sensitivity at a false
    positive rate of at most ``rate``. Empty when the defect-free images are too few
    (fewer than ``1 / rate``) to set the threshold."""
    scores, classes = np.asarray(scores, np.float64), np.asarray(classes)
    negatives = np.sort(scores[classes == 0])
    if len(negatives) < int(np.ceil(1.0 / rate)):
        return {}
    # The smallest threshold with at most rate * n negatives strictly above it.
    threshold = negatives[len(negatives) - int(np.floor(rate * len(negatives))) - 1]
    out = {DEFECT_CLASSES[k]: float(np.mean(scores[classes == k] > threshold))
           for k in np.unique(classes) if k > 0}
    if (classes > 0).any():
        out["all"] = float(np.mean(scores[classes > 0] > threshold))
    return out


@dataclass(frozen=True)
class PairedAUC:
    """Two ROC areas on the same images and the test of their difference.

    Attributes
    ----------
    auc_a, auc_b : float
        The areas of scores a and b.
    se_a, se_b : float
        Their standard errors (clustered).
    difference : float
        ``auc_a - auc_b``.
    se_difference : float
        Its standard error, the correlation of the two on the same images included.
    z, p : float
        ``difference / se_difference`` and the two-sided normal p value (NaN when the
        standard error is zero: identical rankings).
    clusters : int
        Clusters (phantoms) the variances were estimated from.
    """

    auc_a: float
    auc_b: float
    se_a: float
    se_b: float
    difference: float
    se_difference: float
    z: float
    p: float
    clusters: int


def _components(scores: np.ndarray, present: np.ndarray) -> tuple[float, np.ndarray,
                                                                    np.ndarray]:
    """AUC and the structural components of each positive (mean over negatives of
    psi(x, y)) and of each negative (mean over positives), psi = 1 above, 1/2 tied."""
    pos, neg = scores[present], scores[~present]
    # Mid-ranks within the pooled and within each group give the counts below, ties half.
    pooled = rankdata(scores)
    v10 = (pooled[present] - rankdata(pos)) / neg.size
    v01 = 1.0 - (pooled[~present] - rankdata(neg)) / pos.size
    return float(v10.mean()), v10, v01


def paired_auc_test(scores_a: Sequence[float], scores_b: Sequence[float],
                    present: Sequence[bool], clusters: Sequence | None = None) -> PairedAUC:
    """Compare the ROC areas of two scores of the same images (module docstring).

    Parameters
    ----------
    scores_a, scores_b : sequence of float, shape (n,)
        Defect-presence scores of the images (higher: more likely a defect).
    present : sequence of bool, shape (n,)
        Whether each image holds a defect.
    clusters : sequence, shape (n,), optional
        The cluster (phantom) of each image; every image its own cluster when omitted.

    Raises
    ------
    ValueError
        Scores not finite, lengths differing, one label only, or fewer than two clusters.
    """
    a = _finite("presence scores", scores_a).ravel()
    b = _finite("presence scores", scores_b).ravel()
    present = np.asarray(present, dtype=bool).ravel()
    if not a.shape == b.shape == present.shape:
        raise ValueError(f"{a.size} and {b.size} presence scores for {present.size} labels")
    m, n = int(present.sum()), int((~present).sum())
    if m == 0 or n == 0:
        raise ValueError(f"an AUC needs images with and without a defect ({m} with, {n} "
                         "without)")
    cluster = np.arange(a.size) if clusters is None else np.unique(
        np.asarray(clusters).ravel(), return_inverse=True)[1].ravel()
    if cluster.size != a.size:
        raise ValueError(f"{cluster.size} cluster labels for {a.size} images")
    k = int(cluster.max()) + 1
    if k < 2:
        raise ValueError("a clustered AUC variance needs images of at least two clusters")
    m_i = np.bincount(cluster[present], minlength=k)
    n_i = np.bincount(cluster[~present], minlength=k)
    centred = []
    for scores in (a, b):
        auc, v10, v01 = _components(scores, present)
        centred.append((auc, np.bincount(cluster[present], v10, k) - m_i * auc,
                        np.bincount(cluster[~present], v01, k) - n_i * auc))
    f = k / (k - 1)

    def cov(x, y) -> float:
        """Covariance of two areas from their per-cluster centred sums (Obuchowski)."""
        _, x10, x01 = x
        _, y10, y01 = y
        return float(f * (np.sum(x10 * y10) / m**2 + np.sum(x01 * y01) / n**2
                          + (np.sum(x10 * y01) + np.sum(x01 * y10)) / (m * n)))

    var_a, var_b = cov(centred[0], centred[0]), cov(centred[1], centred[1])
    var_d = max(var_a + var_b - 2.0 * cov(centred[0], centred[1]), 0.0)
    difference = centred[0][0] - centred[1][0]
    se = float(np.sqrt(var_d))
    z = difference / se if se > 0 else float("nan")
    p = float(2.0 * norm.sf(abs(z))) if se > 0 else float("nan")
    return PairedAUC(centred[0][0], centred[1][0], float(np.sqrt(var_a)),
                     float(np.sqrt(var_b)), float(difference), se, float(z), p, k)
