"""The data-scarcity curve (:mod:`models.evaluate.scarcity`): nested subsets, refusals of
bad sizes, draws and methods naming the key, the augmentation's effect, the subset image
set (:mod:`models.data.subset`), and a small run whose table holds every size and arm
(generated ones included) with the whole split last."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from models.data.loaders import string_column
from models.data.positron_dataset import build_positron_dataset
from models.data.subset import write_train_subset
from models.evaluate.scarcity import (
    ScarcitySettings,
    intensity_augmentation,
    nested_subsets,
    run_scarcity,
    subset_names,
    subset_phantoms,
)
from pipeline.config import ConfigError, validate_config
from pipeline.specs import phantom_names, positron_dataset_spec, scarcity_spec
from tests.models.fixtures import make_results, tiny_generative_config

SECTION = {"sizes": [1, 2], "draws": 3, "noise_sd": 0.05, "intensity": 0.2, "seed": 5}


def test_subsets_are_nested_within_a_draw_and_differ_between_draws():
    names = [f"tube_{i:04d}" for i in range(10)]
    subsets = nested_subsets(names * 3, [2, 4, 8], 4, seed=1)
    assert sorted(subsets) == [2, 4, 8, 10] and subsets[10] == [tuple(names)]
    for d in range(4):
        assert set(subsets[2][d]) < set(subsets[4][d]) < set(subsets[8][d])
        assert len(subsets[4][d]) == 4
    assert len({subsets[2][d] for d in range(4)}) > 1  # draws differ
    assert nested_subsets(names, [2, 4, 8], 4, seed=1) == subsets  # seeded


@pytest.mark.parametrize("section, message", [
    ({"sizes": []}, "non-empty"), ({"sizes": [2.5]}, "whole number"),
    ({"sizes": [0]}, "whole number"), ({"sizes": [2, 2]}, "repeats"),
    ({"sizes": [9]}, "training split holds 8"), ({"draws": 0}, "scarcity.draws"),
    ({"draws": 1.5}, "scarcity.draws"), ({"noise_sd": float("nan")}, "noise_sd"),
])
def test_bad_sizes_and_draws_are_refused_naming_the_key(section, message):
    with pytest.raises(ValueError, match=message) as err:
        ScarcitySettings.from_section({**SECTION, **section}, train_phantoms=8)
    assert "config key scarcity." in str(err.value)


def test_the_config_refuses_sizes_beyond_the_training_split_before_any_job():
    cfg = tiny_generative_config()
    cfg["scarcity"]["sizes"] = [5]  # 8 phantoms: 4 in the training split
    with pytest.raises(ConfigError, match="scarcity.sizes: 5 phantoms asked.*holds 4"):
        validate_config(cfg)


def test_the_augmentation_scales_activity_keeps_the_background_and_adds_noise():
    images = torch.full((400, 1, 8, 8), -1.0)
    images[:, :, 2:6, 2:6] = 0.0  # activity at half the range
    out = intensity_augmentation(0.0, 0.2)(images, torch.Generator().manual_seed(1))
    assert torch.all(out[:, :, 0, 0] == -1.0)  # background kept without noise
    scale = out[:, 0, 3, 3] + 1.0  # (0 + 1) s - 1 + 1
    assert 0.8 <= scale.min() and scale.max() <= 1.2 and scale.std() > 0.09  # U(0.8, 1.2)
    noisy = intensity_augmentation(0.05, 0.0)(images, torch.Generator().manual_seed(1))
    residual = (noisy - images)[:, :, 2:6, 2:6]
    assert residual.std().item() == pytest.approx(0.05, rel=0.05)


@pytest.mark.slow
def test_a_small_curve_has_every_size_and_arm(tmp_path):
    cfg = tiny_generative_config()
    cfg["downstream"].update(epochs=2, seeds=[1], channels=4)
    cfg["scarcity"].update(sizes=[1, 2], draws=2)
    cfg["evaluate"]["bootstrap"] = 50
    cfg = validate_config(cfg)
    root = tmp_path / "results" / "tubes"
    make_results(root, phantom_names(cfg, "tubes"), np.random.default_rng(0))
    positron = root / "datasets" / "positron.h5"
    build_positron_dataset(positron_dataset_spec(cfg, "tubes"), root, positron)
    rows = run_scarcity(scarcity_spec(cfg, "tubes"), positron, root / "eval")
    assert [(r["phantoms"], r["arm"]) for r in rows] == [
        (1, "real"), (1, "real + augmentation"), (2, "real"), (2, "real + augmentation"),
        (4, "real"), (4, "real + augmentation")]
    assert [r["draws"] for r in rows] == [2, 2, 2, 2, 1, 1]
    assert rows[-1]["whole_split"] and not rows[0]["whole_split"]
    table = (root / "eval" / "scarcity.md").read_text()
    assert "| 4 (all) | real + augmentation |" in table
    stored = json.loads((root / "eval" / "scarcity.json").read_text())
    assert len(stored["rows"]) == 6 and (root / "eval" / "scarcity.png").stat().st_size > 0
    with pytest.raises(FileExistsError):
        run_scarcity(scarcity_spec(cfg, "tubes"), positron, root / "eval")


def _positron(tmp_path, cfg):
    root = tmp_path / "results" / "tubes"
    make_results(root, phantom_names(cfg, "tubes"), np.random.default_rng(0))
    positron = root / "datasets" / "positron.h5"
    build_positron_dataset(positron_dataset_spec(cfg, "tubes"), root, positron)
    return root, positron


def test_a_subset_image_set_keeps_the_other_splits_and_renumbers_the_pairs(tmp_path):
    cfg = tiny_generative_config()
    _, positron = _positron(tmp_path, cfg)
    with h5py.File(positron) as f:
        split, phantom = string_column(f["split"]), string_column(f["phantom"])
        images, pairs = f["images"][...], f["pairs"][...]
    train = sorted(set(phantom[split == "train"]))
    keep = train[:1]
    out = write_train_subset(positron, keep, tmp_path / "subset.h5")
    kept = (split != "train") | (phantom == keep[0])
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["images"][...], images[kept])
        np.testing.assert_array_equal(string_column(f["phantom"]), phantom[kept])
        assert set(string_column(f["phantom"])[string_column(f["split"]) == "train"]) == {
            keep[0]}
        # Each kept pair points at the same two images as before.
        new_pairs = f["pairs"][...]
        old_of_new = np.flatnonzero(kept)
        expected = [p for p in pairs if kept[p].all()]
        np.testing.assert_array_equal(old_of_new[new_pairs], np.reshape(expected, (-1, 2)))
        assert json.loads(f.attrs["train_phantoms"]) == keep
        assert f.attrs["dataset"] == "tubes"
    with pytest.raises(ValueError, match="not in the training split"):
        write_train_subset(positron, ["tube_9999"], tmp_path / "bad.h5")
    with pytest.raises(FileExistsError):
        write_train_subset(positron, keep, out)


def test_subset_names_follow_the_sizes_below_the_whole_split():
    settings = ScarcitySettings.from_section({**SECTION, "sizes": [1, 2, 4]})
    assert subset_names(settings, 4) == ["n1_d0", "n1_d1", "n1_d2", "n2_d0", "n2_d1",
                                         "n2_d2"]
    names = [f"tube_{i:04d}" for i in range(4)]
    assert set(subset_phantoms(names, settings, "n1_d2")) < set(
        subset_phantoms(names, settings, "n2_d2"))
    with pytest.raises(ValueError, match="n4_d0"):
        subset_phantoms(names, settings, "n4_d0")


def test_a_method_outside_train_methods_is_refused_naming_the_key():
    cfg = tiny_generative_config()
    cfg["scarcity"]["methods"] = ["mask2image_patch"]
    with pytest.raises(ConfigError, match="scarcity.methods"):
        validate_config(cfg)


@pytest.mark.slow
def test_generated_arms_join_the_subset_images_and_stand_alone(tmp_path):
    """Generated sets given per subset and method (here random labelled images) make the
    arms `real + m` and `m only` of every size; a missing one is refused naming the key."""
    cfg = tiny_generative_config()
    cfg["downstream"].update(epochs=1, seeds=[1], channels=4)
    cfg["scarcity"].update(sizes=[2], draws=1)
    cfg["evaluate"]["bootstrap"] = 20
    cfg = validate_config(cfg)
    root, positron = _positron(tmp_path, cfg)
    spec = scarcity_spec(cfg, "tubes")
    spec["methods"] = ["mask2image_patch"]
    rng = np.random.default_rng(1)
    generated = {}
    for key in ("n2_d0", "all"):
        path = tmp_path / f"{key}.h5"
        with h5py.File(path, "w") as f:
            f["images"] = rng.uniform(-1, 1, (12, 16, 16)).astype(np.float32)
            f["labels"] = rng.integers(0, 3, 12)
            f["masks"] = (rng.random((12, 16, 16)) > 0.9).astype(np.uint8)
        generated[f"{key}/mask2image_patch"] = path
    with pytest.raises(ValueError, match="scarcity.methods.*all/mask2image_patch"):
        run_scarcity(spec, positron, root / "eval0",
                     generated={"n2_d0/mask2image_patch": generated[
                         "n2_d0/mask2image_patch"]})
    rows = run_scarcity(spec, positron, root / "eval", generated=generated)
    arms = [(r["phantoms"], r["arm"]) for r in rows]
    assert (2, "real + mask2image_patch") in arms and (4, "mask2image_patch only") in arms
    assert len(rows) == 8
    only = [r for r in rows if r["arm"] == "mask2image_patch only"]
    assert all(r["images"] == 0 for r in only)
