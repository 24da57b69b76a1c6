"""The domain feature network learns its classes; Table 1 has its rows and refuses sets it
cannot compare, naming the file or key."""

from __future__ import annotations

import copy
import importlib.util
import json

import h5py
import numpy as np
import pytest

from models.evaluate.feature_network import train_feature_network
from models.evaluate.table1 import SANITY_ROWS, run_evaluate
from models.training.generate import run_generate
from models.training.stage import run_train
from pipeline.specs import evaluate_spec, feature_network_spec, generate_spec, train_spec
from tests.models.fixtures import make_generative_inputs, tiny_generative_config


def _separable_positron_set(path, n=160, size=16, seed=0):
    """Low-count images are sparse dots, reference images bright disks; half of each carry
    a cold square (a 'defect'). Splits 60/20/20 by image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    images, acquisition, defects = [], [], []
    for i in range(n):
        reference, defect = i % 2 == 1, (i // 2) % 2 == 1
        if reference:
            img = np.where(disk, rng.uniform(0.4, 1.0, (size, size)), 0.0)
        else:
            img = (rng.uniform(size=(size, size)) < 0.05) * disk * 1.0
        if defect:
            img[6:10, 6:10] = 0.0
        images.append(2 * img - 1)
        acquisition.append("reference" if reference else "short")
        defects.append(int(defect))
    split = np.array(["train"] * 96 + ["val"] * 32 + ["test"] * 32)
    split = split[rng.permutation(n)]
    with h5py.File(path, "w") as f:
        f["images"] = np.asarray(images, np.float32)
        f["split"] = split.astype(object).astype("S")
        f["acquisition"] = np.asarray(acquisition, dtype="S")
        f["defect_count"] = np.asarray(defects, np.int32)
        f["defect_class"] = np.asarray(["pit" if d else "none" for d in defects], dtype="S")
    return path


@pytest.mark.slow
def test_feature_network_separates_its_classes_on_held_out_images(tmp_path, default_config):
    positron = _separable_positron_set(tmp_path / "positron.h5")
    cfg = copy.deepcopy(default_config)
    cfg["evaluate"]["feature_network"].update(epochs=60, embed_dim=8)
    spec = feature_network_spec(cfg, "tubes")
    assert spec["acquisition"] == "reference"  # the images Table 1 compares
    metrics = train_feature_network(spec, positron, tmp_path / "net")
    held = metrics["held_out"]
    assert metrics["classes"] == ["none", "crack", "hole", "pit", "inclusion", "bubble"]
    assert metrics["n_train"] + metrics["n_held_out"] == 80  # the reference images only
    assert held["accuracy"] > held["majority_rate"] + 0.25, held
    # The cold square is the defect: the features see it on images they never saw.
    assert held["presence_auc"] > 0.9, held
    report = json.loads((tmp_path / "net/metrics.json").read_text())
    assert report["held_out"]["accuracy"] == held["accuracy"]
    with pytest.raises(FileExistsError):
        train_feature_network(feature_network_spec(cfg, "tubes"), positron, tmp_path / "net")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cfg = tiny_generative_config()
    files = make_generative_inputs(root, cfg)
    run_train(train_spec(cfg, "tubes", "attention_gan"), files, root / "models/attention_gan")
    gen = root / "generated/attention_gan.h5"
    run_generate(generate_spec(cfg, "tubes", "attention_gan"),
                 root / "models/attention_gan/final.pt", files["positron"], files["ct"], gen)
    train_feature_network(feature_network_spec(cfg, "tubes"), files["positron"],
                          root / "models/feature_net")
    return cfg, files, root, gen


def _evaluate(cfg, files, root, out, **changes):
    args = {"generated": {"attention_gan": root / "generated/attention_gan.h5"},
            "histories": {"attention_gan": root / "models/attention_gan/history.csv"},
            "models": {"attention_gan": root / "models/attention_gan/final.pt"}}
    args.update(changes)
    return run_evaluate(evaluate_spec(cfg, "tubes"), files["positron"],
                        root / "models/feature_net/final.pt", args["generated"],
                        args["histories"], out, models=args["models"], ct_h5=files["ct"])


@pytest.mark.slow
def test_table1_rows_files_and_sanity(evaluated, tmp_path):
    cfg, files, root, _ = evaluated
    rows = _evaluate(cfg, files, root, tmp_path / "eval")
    names = [r["method"] for r in rows]
    floor = f"{SANITY_ROWS[0]} ({'test' if cfg['evaluate']['held_out_split'] == 'val' else 'val'})"
    assert names == ["attention_gan", floor, *SANITY_ROWS[1:]]
    assert len({r["n_images"] for r in rows}) == 1  # every row at one sample size
    by = {r["method"]: r for r in rows}
    # The ceiling rows are far from the real images on every distance.
    assert by["noise"]["frechet"] > by[floor]["frechet"]
    assert by["noise"]["precision"] == 0.0
    assert by["blurred mean"]["msssim_diversity"] == pytest.approx(1.0)
    assert by["attention_gan"]["images_per_s"] > 0
    for name in ("table1.csv", "table1.md", "samples.png", "nearest.png", "latent_walks.png",
                 "curves.png", "metrics/attention_gan.json", "metrics/noise.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0, name
    md = (tmp_path / "eval/table1.md").read_text()
    assert "data range 2" in md and "not FID" in md and "1 scales, 7 px" in md
    assert (tmp_path / "eval/table1.csv").read_text().splitlines()[0].startswith(
        "method,n_runs,n_images,msssim_diversity,msssim_to_real,l1_diversity,frechet,kid_x1e3")


def test_several_training_seeds_give_mean_and_spread(evaluated, tmp_path):
    """With evaluate.seeds, a method's row is the mean over its runs, with the spread."""
    cfg, files, root, gen = evaluated
    cfg = copy.deepcopy(cfg)
    cfg["evaluate"]["seeds"] = [1, 2]
    other = tmp_path / "seed2.h5"
    with h5py.File(gen) as src, h5py.File(other, "w") as dst:
        dst["images"] = np.clip(src["images"][...] * 0.5 - 0.5, -1, 1)
        dst.attrs.update(dict(src.attrs))
    runs = {"attention_gan__seed1": gen, "attention_gan__seed2": other}
    rows = run_evaluate(evaluate_spec(cfg, "tubes"), files["positron"],
                        root / "models/feature_net/final.pt", runs, {}, tmp_path / "eval")
    row = rows[0]
    assert row["method"] == "attention_gan" and row["n_runs"] == 2
    a, b = (row["runs"][r]["frechet"] for r in runs)
    assert row["frechet"] == pytest.approx((a + b) / 2)
    assert row["frechet_std"] == pytest.approx(abs(a - b) / np.sqrt(2))
    md = (tmp_path / "eval/table1.md").read_text()
    assert "attention_gan (2 seeds)" in md and " ± " in md
    with pytest.raises(ValueError, match="attention_gan__seed2"):
        run_evaluate(evaluate_spec(cfg, "tubes"), files["positron"],
                     root / "models/feature_net/final.pt", {"attention_gan__seed1": gen}, {},
                     tmp_path / "eval2")


def test_sets_that_cannot_be_compared_are_refused(evaluated, tmp_path):
    cfg, files, root, gen = evaluated
    bigger = tmp_path / "bigger.h5"
    with h5py.File(gen) as src, h5py.File(bigger, "w") as dst:
        dst["images"] = np.zeros((20, 32, 32), np.float32)
        dst.attrs.update(dict(src.attrs))
    with pytest.raises(ValueError, match=f"{bigger}: images of shape \\(32, 32\\), but the "
                                         "real set's are 16 x 16"):
        _evaluate(cfg, files, root, tmp_path / "e1", generated={"attention_gan": bigger})
    other = tmp_path / "other_norm.h5"
    other.write_bytes(gen.read_bytes())
    with h5py.File(other, "r+") as f:
        f.attrs["normalisation"] = json.dumps({"mode": "dataset"})
    with pytest.raises(ValueError, match=f"{other}: attribute normalisation differs"):
        _evaluate(cfg, files, root, tmp_path / "e2", generated={"attention_gan": other})
    with pytest.raises(ValueError, match="no generated set given for method\\(s\\) attention_gan"):
        _evaluate(cfg, files, root, tmp_path / "e3", generated={})
    big_kid = copy.deepcopy(cfg)
    big_kid["evaluate"]["kid_subset_size"] = 500
    with pytest.raises(ValueError, match="config key evaluate.kid_subset_size: 500 exceeds"):
        _evaluate(big_kid, files, root, tmp_path / "e4")
    too_many = copy.deepcopy(cfg)
    too_many["evaluate"]["sample_size"] = 1000
    with pytest.raises(ValueError, match="config key evaluate.sample_size: 1000 exceeds the "
                                         r"smallest set \(.*: \d+ images\)"):
        _evaluate(too_many, files, root, tmp_path / "e5")
    assert not any((tmp_path / d).exists() for d in ("e1", "e2", "e3", "e4", "e5"))


def test_inception_fid_is_skipped_with_a_note_or_needs_its_file(evaluated, tmp_path):
    cfg, files, root, _ = evaluated
    _evaluate(cfg, files, root, tmp_path / "eval")
    assert "Standard FID (Inception) skipped" in (tmp_path / "eval/table1.md").read_text()
    missing = copy.deepcopy(cfg)
    missing["evaluate"]["inception_weights"] = str(tmp_path / "pt_inception.pth")
    with pytest.raises(FileNotFoundError, match="config key evaluate.inception_weights: "):
        _evaluate(missing, files, root, tmp_path / "eval2")
    (tmp_path / "pt_inception.pth").write_bytes(b"weights")
    if importlib.util.find_spec("torch_fidelity") is None:  # the case on these machines
        with pytest.raises(ValueError, match="needs torchmetrics\\[image\\] and torch-fidel"):
            _evaluate(missing, files, root, tmp_path / "eval3")


@pytest.mark.parametrize("case, images, message", [
    ("NaN", np.full((4, 8, 8), np.nan, np.float32), "dataset images has 256 NaN or infinite"),
    ("infinity", np.full((4, 8, 8), np.inf, np.float32), "NaN or infinite value"),
    ("out of range", np.full((4, 8, 8), 1.5, np.float32), "values outside \\[-1, 1\\] \\(row 0\\)"),
    ("integers", np.zeros((4, 8, 8), np.uint8), "must hold floating-point values"),
    ("not images", np.zeros((4, 64), np.float32), "has shape \\(4, 64\\), expected"),
])
def test_a_generated_set_breaking_the_image_set_contract_is_refused(tmp_path, case, images,
                                                                   message):
    from models.evaluate.table1 import read_generated

    path = tmp_path / f"{case}.h5"
    with h5py.File(path, "w") as f:
        f["images"] = images
        f.attrs["normalisation"] = "{}"
    with pytest.raises(ValueError, match=f"^{path}: .*{message}"):
        read_generated(path, {"size_px": 8, "normalisation": "{}"})
    with h5py.File(path, "w") as f:
        f["pictures"] = images
    with pytest.raises(ValueError, match=f"^{path}: missing dataset images"):
        read_generated(path, {"size_px": 8, "normalisation": "{}"})


def test_a_set_without_the_other_held_out_split_has_no_floor_row(evaluated, tmp_path):
    """Few phantoms may leave the split that is neither training nor held out empty: Table 1
    is then made without the real floor row, and says so."""
    cfg, files, root, _ = evaluated
    other = "val" if cfg["evaluate"]["held_out_split"] == "test" else "test"
    positron = tmp_path / "positron.h5"
    positron.write_bytes(files["positron"].read_bytes())
    with h5py.File(positron, "r+") as f:
        split = f["split"][...].astype(str)
        split[split == other] = "train"
        del f["split"]
        f["split"] = split.astype("S")
    rows = run_evaluate(evaluate_spec(cfg, "tubes"), positron,
                        root / "models/feature_net/final.pt",
                        {"attention_gan": root / "generated/attention_gan.h5"}, {},
                        tmp_path / "eval")
    assert [r["method"] for r in rows] == ["attention_gan", *SANITY_ROWS[1:]]
    assert f"no real floor row: the {other} split holds no image" in (
        tmp_path / "eval/table1.md").read_text()
