"""The detector's metrics (:mod:`models.metrics.detection`) equal scikit-learn's on fixed
predictions, ties and empty masks included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from models.metrics.detection import (
    DEFECT_CLASSES,
    dice_per_image,
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
