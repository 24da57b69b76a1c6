"""The data-scarcity curve (:mod:`models.evaluate.scarcity`): nested subsets, refusals of
bad sizes and draws naming the key, the augmentation's effect, and a small run whose table
holds every size and arm with the whole split last."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.data.positron_dataset import build_positron_dataset
from models.evaluate.scarcity import (
    ScarcitySettings,
    intensity_augmentation,
    nested_subsets,
    run_scarcity,
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
