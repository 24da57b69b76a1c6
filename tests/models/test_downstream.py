"""The downstream test (train on synthetic, test on real): the detector learns a toy
presence-and-mask task, its scores are the detection metrics of fixed predictions, the labels
of a generated set are required, and the enhancement table's measures equal their formulas."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_cdt, gaussian_filter

from models.data.labels import DEFECT_CLASSES, _from_types, class_index, image_classes
from models.data.positron_dataset import _defects_in
from models.evaluate.downstream import (
    DownstreamSettings,
    LabelledSet,
    ensemble_comparison,
    generated_set,
    predict,
    score,
    train_detector,
)
from models.evaluate.enhance import FWHM_PER_SIGMA, defect_cnr, post_filter, psnr, renormalise

SIZE = 16


def toy_defects(n: int, seed: int) -> LabelledSet:
    """Half the images hold a cold square (class ``hole``) at a random place, half none."""
    rng = np.random.default_rng(seed)
    images = (0.5 + 0.15 * rng.standard_normal((n, SIZE, SIZE))).astype(np.float32)
    masks = np.zeros((n, SIZE, SIZE), bool)
    classes = np.zeros(n, np.int64)
    for i in range(0, n, 2):  # images, not pixels
        y, x = rng.integers(2, SIZE - 6, size=2)
        masks[i, y : y + 4, x : x + 4] = True
        classes[i] = DEFECT_CLASSES.index("hole")
    images[masks] = -0.6
    return LabelledSet(np.clip(images, -1, 1), classes, masks, np.ones(n, bool))


def test_the_detector_learns_presence_class_and_mask_of_a_toy_set():
    s = DownstreamSettings(epochs=1, batch_size=16, lr=3e-3, channels=8,
                           segmentation_weight=1.0, seeds=(0,))
    net = train_detector(toy_defects(64, 0), steps=150, s=s, seed=0,
                         device=torch.device("cpu")).net
    result = score(net, toy_defects(40, 1), torch.device("cpu"))
    assert result["auc"] > 0.95
    assert result["per_class"]["hole"] > 0.9 and result["per_class"]["none"] > 0.9
    assert np.isnan(result["per_class"]["crack"])  # no crack among the test images
    assert result["dice"] > 0.6


def test_an_untrained_detector_scores_at_chance():
    s = DownstreamSettings(1, 16, 1e-3, 8, 1.0, (0,))
    net = train_detector(toy_defects(8, 0), steps=0, s=s, seed=0,
                         device=torch.device("cpu")).net
    result = score(net, toy_defects(200, 2), torch.device("cpu"))
    assert abs(result["auc"] - 0.5) < 0.2


def test_early_stopping_keeps_the_check_with_the_best_validation_auc():
    """The kept weights are those of a plain run stopped at the chosen check, and no other
    check's plain run scores higher on the validation images."""
    from models.metrics.detection import presence_auc

    s = DownstreamSettings(1, 16, 3e-3, 8, 1.0, (0,))
    cpu = torch.device("cpu")
    train, val = toy_defects(24, 3), toy_defects(30, 4)
    stopped = train_detector(train, 45, s, 0, cpu, val, check_every=15)
    assert stopped.step in (15, 30, 45)

    def val_auc(net):
        return presence_auc(1.0 - predict(net, val.images, cpu)[0][:, 0], val.classes > 0)

    plain = {k: train_detector(train, k, s, 0, cpu).net for k in (15, 30, 45)}
    for a, b in zip(plain[stopped.step].state_dict().values(),
                    stopped.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert stopped.val_auc == pytest.approx(val_auc(plain[stopped.step]))
    assert all(val_auc(net) <= stopped.val_auc + 1e-12 for net in plain.values())
    # Without validation images, or with a validation set of one class: the last weights.
    assert train_detector(train, 45, s, 0, cpu).step == 45
    one_class = LabelledSet(val.images[val.classes == 0], val.classes[val.classes == 0],
                            val.masks[val.classes == 0], val.has_mask[val.classes == 0])
    assert train_detector(train, 45, s, 0, cpu, one_class, 15).val_auc is None


def test_a_generated_set_without_labels_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "vae.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, SIZE, SIZE), np.float32)
    with pytest.raises(ValueError, match=r"downstream\.methods: vae cannot be conditioned"):
        generated_set(path, "vae", SIZE)
    with h5py.File(path, "a") as f:
        f["labels"] = np.array([0, 1, 2, 9])
    with pytest.raises(ValueError, match=r"labels must be 4 class numbers"):
        generated_set(path, "vae", SIZE)
    with pytest.raises(ValueError, match=r"do not match the real images' 32 x 32"):
        generated_set(path, "vae", 32)


def test_the_class_of_a_slice_is_its_largest_defect_type():
    defects = [{"label": 1, "type": "pit"}, {"label": 2, "type": "crack"},
               {"label": 3, "type": "bubble"}, {"label": 4, "type": "hole"}]
    labels = np.zeros((10, 10), np.uint8)
    labels[0, :5] = 1  # 5 pit pixels
    labels[1, :3] = 2  # 3 crack pixels
    assert _defects_in(labels, defects) == ("crack,pit", "pit", 2)
    labels[2, :2] = 2  # crack now 5: a tie, broken by class order (crack before pit)
    assert _defects_in(labels, defects)[1] == "crack"
    assert _defects_in(np.zeros((4, 4), np.uint8), defects) == ("", "none", 0)
    assert _from_types(np.array(["", "pit,hole", "bubble"])).tolist() == ["none", "hole",
                                                                           "bubble"]
    with pytest.raises(ValueError, match=r"x\.h5: defect_class holds 'rust'"):
        class_index(["none", "rust"], "x.h5")


def test_old_image_sets_get_their_classes_from_the_defect_types(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 4, 4), np.float32)
        f["defect_types"] = np.array(["", "inclusion", "crack,inclusion"], dtype=object)
    assert image_classes(path).tolist() == [0, 4, 1]


def test_psnr_and_the_post_filter_follow_their_formulas():
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (3, 12, 12))
    image = target + 0.1 * rng.standard_normal(target.shape)
    mse = ((image - target) ** 2).reshape(3, -1).mean(1)
    assert np.allclose(psnr(image, target), 10 * np.log10(2.0**2 / mse))
    x = renormalise(rng.uniform(0, 5, (2, 12, 12)))
    smooth = post_filter(x, 3.0)
    sigma = 3.0 / FWHM_PER_SIGMA
    by_hand = gaussian_filter((x[0] + 1) / 2, sigma, mode="nearest")
    assert np.allclose(smooth[0], 2 * by_hand / by_hand.max() - 1)
    assert np.array_equal(post_filter(x, 0.0), x)
    assert FWHM_PER_SIGMA == pytest.approx(2.3548, abs=1e-4)


def test_defect_cnr_by_hand():
    rng = np.random.default_rng(3)
    image = rng.normal(2.0, 1.0, (1, 20, 20))
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 3:6, 4:8] = True
    image[mask] = -1.0
    truth = np.ones((1, 20, 20))
    truth[0, :, [0, -1]] = 0.0  # the empty field around the part: never in a ring
    truth[mask] = 0.5  # a cold defect in truth
    # Rings by their definition: taxicab distance to the mask in (2, 4] px, inside the part.
    def ring(m):
        distance = distance_transform_cdt(~m, metric="taxicab")
        return (distance > 2) & (distance <= 4) & (truth[0] > 0)

    control = mask[0][::-1, ::-1]  # turned by 180 degrees about the centre
    r, rc = ring(mask[0]), ring(control)
    expected = ((image[0][r].mean() - -1.0) / image[0][r].std()
                - (image[0][rc].mean() - image[0][control].mean()) / image[0][rc].std())
    assert expected > 2
    assert defect_cnr(image, mask, truth)[0] == pytest.approx(expected, rel=1e-12)
    # The same image against a warm defect in truth: shown inverted, a negative CNR.
    warm = truth.copy()
    warm[mask] = 2.0
    assert defect_cnr(image, mask, warm)[0] == pytest.approx(-expected, rel=1e-12)
    # A smooth image with nothing at the defect: zero, whatever its slope (the control sees
    # the same roll-off as the defect does).
    yy, xx = np.mgrid[:20, :20]
    disk = -(((yy - 9.5) ** 2 + (xx - 9.5) ** 2) / 50.0)[None]
    assert defect_cnr(disk, mask, truth)[0] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(defect_cnr(image, np.zeros_like(mask), truth)[0])


def test_downstream_json_is_read_back_by_table1(tmp_path):
    from models.evaluate.table1 import _downstream_columns, _read_downstream

    good = tmp_path / "downstream.json"
    good.write_text(json.dumps({"rows": [
        {"training_set": "real", "auc": 0.7},
        {"training_set": "real + dcgan_conditional", "auc": 0.8, "delta_auc": 0.1},
        {"training_set": "dcgan_conditional only", "auc": 0.6, "delta_auc": -0.1}],
        "class_agreement": {}}))
    cols = _downstream_columns(_read_downstream(good), "dcgan_conditional")
    assert cols == {"detector_auc_real_plus": 0.8, "detector_delta_auc": 0.1,
                    "detector_auc_only": 0.6}
    assert all(np.isnan(v) for v in _downstream_columns(_read_downstream(good), "vae").values())
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": [{"auc": 1}]}')
    with pytest.raises(ValueError, match=r"bad\.json: not a downstream\.json"):
        _read_downstream(bad)


def test_sensitivity_at_a_false_positive_rate_is_sklearns_roc_point():
    """Per class, the true positive rate of the ROC operating point with the largest
    sensitivity whose false positive rate is at most 10 % (scikit-learn's roc_curve)."""
    from sklearn.metrics import roc_curve

    from models.metrics.detection import sensitivity_at_fpr

    rng = np.random.default_rng(12)
    classes = rng.choice([0, 0, 0, 2, 3], 400)
    scores = rng.normal(size=400) + 1.2 * (classes > 0) + 0.5 * (classes == 3)
    got = sensitivity_at_fpr(scores, classes, 0.1)
    for name, k in (("hole", 2), ("pit", 3), ("all", None)):
        keep = (classes == 0) | ((classes > 0) if k is None else (classes == k))
        fpr, tpr, _ = roc_curve(classes[keep] > 0, scores[keep], drop_intermediate=False)
        assert got[name] == pytest.approx(tpr[fpr <= 0.1].max()), name
    assert set(got) == {"hole", "pit", "all"}
    # Too few defect-free slices to set a 10 % threshold: nothing is read.
    assert sensitivity_at_fpr(scores[:5], np.array([0, 0, 2, 2, 2]), 0.1) == {}


def test_a_set_is_compared_with_the_real_set_over_phantoms():
    """Eight held-out phantoms of 10 slices: scores that rank every defect slice first
    against scores at chance give an AUC of 1 with an interval that excludes the chance
    set's, p below 0.05 and the verdict 'helps' (the reverse: 'hurts'); the same scores
    give 'no evidence'; one phantom gives the AUC but no interval and no verdict."""
    rng = np.random.default_rng(2)
    phantoms = np.repeat([f"tube_{i:04d}" for i in range(8)], 10)
    present = np.tile(np.arange(10) < 4, 8)
    perfect = present + 0.1 * rng.random(present.size)
    chance = rng.random(present.size)
    better = ensemble_comparison(perfect, chance, present, phantoms, 500, 0)
    assert better["ensemble_auc"] == 1.0 and better["auc_lo"] == 1.0
    assert better["p_vs_real"] < 0.05 and better["verdict"] == "helps"
    alone = ensemble_comparison(chance, None, present, phantoms, 500, 0)
    assert alone["auc_hi"] < 1.0 and alone["verdict"] == "n/a"
    assert ensemble_comparison(chance, perfect, present, phantoms, 500, 0)["verdict"] == "hurts"
    same = ensemble_comparison(chance, chance, present, phantoms, 500, 0)
    assert same["verdict"] == "no evidence"
    one = ensemble_comparison(perfect, chance, present, np.full(present.size, "t"), 500, 0)
    assert one["verdict"] == "n/a" and np.isnan(one["auc_lo"]) and one["ensemble_auc"] == 1.0
