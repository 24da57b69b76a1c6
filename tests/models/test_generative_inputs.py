"""Bad input to the generative stage: one clear error naming the file or key, before any
training, and nothing written."""

from __future__ import annotations

import copy
import re

import h5py
import numpy as np
import pytest

from models.__main__ import main as models_main
from models.data.positron_features import build_positron_features
from models.training.stage import run_pretrain_vae, run_train
from pipeline.config import ConfigError, load_config, validate_config
from pipeline.specs import positron_features_spec, pretrain_vae_spec, train_spec
from tests.models.fixtures import make_generative_inputs, tiny_generative_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative_inputs")
    cfg = tiny_generative_config()
    return cfg, make_generative_inputs(root, cfg)


def _config(**sections) -> dict:
    cfg = copy.deepcopy(load_config())
    for path, value in sections.items():
        node = cfg
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return cfg


@pytest.mark.parametrize(("change", "message"), [
    ({"train__steps": "many"}, "config key train.steps: expected an integer, got the string"),
    ({"train__lr": -1.0}, "config key train.lr"),
    ({"train__lr": float("nan")}, "config key train.lr: NaN or infinity"),
    ({"train__betas": [0.5]}, "config key train.betas"),
    ({"train__methods": ["stylegan"]}, "config key train.methods.0: 'stylegan' is not one of"),
    ({"train__attention_gan__lambda_apg": "x"}, "config key train.attention_gan.lambda_apg"),
    ({"train__attention_gan__generator__growth_rate": 2.5},
     "config key train.attention_gan.generator.growth_rate: expected an integer"),
    ({"train__attention_gan__discriminator__norm": "spectral"},
     "config key train.attention_gan.discriminator.norm: 'spectral' is not one of"),
    ({"train__attention_gan__apg": "attended"}, "config key train.attention_gan: unknown key"),
    ({"train__acquisition": "paper"}, "config key train.acquisition: 'paper' is neither"),
    ({"positron_images__size_px": 48}, "config key positron_images.size_px: 48 px is not "
                                       "supported by the generative networks"),
    ({"ct_images__size_px": 100}, "config key ct_images.size_px: 100 px"),
    ({"positron_features__patch_px": 4}, "config key positron_features.patch_px: 4 must be odd"),
    ({"positron_features__filters": [8, 40]}, "config key positron_features.filters"),
    ({"train__attention_gan__real_domain": "ct", "ct_images__size_px": 128},
     "config key train.attention_gan.real_domain"),
    ({"pretrain_vae__kl_weight": float("inf")}, "config key pretrain_vae.kl_weight: NaN"),
    ({"evaluate__sample_size": 300}, "config key evaluate.sample_size: 300 images per Table 1 "
                                     "row, but each method generates generate.n_images = 256"),
    ({"evaluate__sample_size": 1}, "config key evaluate.sample_size"),
    ({"evaluate__sample_size": 20.5}, "config key evaluate.sample_size: expected"),
    ({"evaluate__sample_size": 20}, "config key evaluate.kid_subset_size: 32 exceeds the 20"),
    ({"evaluate__sample_size": 40, "evaluate__prdc_k": 40}, "config key evaluate.prdc_k: 40"),
    ({"evaluate__bootstrap": -1}, "config key evaluate.bootstrap"),
    ({"evaluate__seeds": [1, 1]}, "config key evaluate.seeds"),
    ({"evaluate__seeds": [1.5]}, "config key evaluate.seeds.0: expected an integer"),
])
def test_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")
                       .replace("[", r"\[")):
        validate_config(_config(**change))


def test_sizes_do_not_matter_when_nothing_is_trained():
    validate_config(_config(positron_images__size_px=48, train__methods=[]))


def test_too_few_training_images_for_the_memory(inputs, tmp_path):
    cfg, files = inputs
    cfg = copy.deepcopy(cfg)
    cfg["positron_features"]["memory_slots"] = 500
    out = tmp_path / "features.h5"
    with pytest.raises(ValueError, match=rf"{files['positron']}: \d+ training images of "
                                         r"acquisition 'reference' but the memory needs at "
                                         r"least 500 \(positron_features.memory_slots = 500"):
        build_positron_features(positron_features_spec(cfg, "tubes"), files["positron"], out)
    assert not out.exists()


def test_image_size_the_networks_do_not_support(inputs, tmp_path):
    """A positron.h5 of 24 px (made by another config) stops training with its name."""
    cfg, files = inputs
    odd = tmp_path / "positron_24.h5"
    with h5py.File(files["positron"]) as src, h5py.File(odd, "w") as dst:
        for name, item in src.items():
            data = item[...]
            if name in ("images", "masks", "truth"):  # a set made at 24 px, consistent
                data = np.repeat(np.repeat(data, 3, axis=1), 3, axis=2)[:, :24, :24]
            dst[name] = data
        dst.attrs.update(dict(src.attrs))
    with pytest.raises(ValueError, match=f"{odd} \\(positron \\(reference\\) images\\): image "
                                         "size 24 px is not supported"):
        run_train(train_spec(cfg, "tubes", "attention_gan"), {**files, "positron": odd},
                  tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_ct_file(inputs, tmp_path, capsys):
    cfg, files = inputs
    missing = tmp_path / "nowhere" / "ct.h5"
    with pytest.raises(FileNotFoundError, match=f"ct file {missing} does not exist"):
        run_pretrain_vae(pretrain_vae_spec(cfg, "tubes"), missing, tmp_path / "vae")
    with pytest.raises(FileNotFoundError, match=f"ct file {missing} does not exist"):
        run_train(train_spec(cfg, "tubes", "attention_gan"), {**files, "ct": missing},
                  tmp_path / "gan")
    assert not (tmp_path / "vae").exists() and not (tmp_path / "gan").exists()
    code = models_main(["pretrain-vae", "--configfile", "config/config.yaml", "--dataset",
                        "tubes", "--ct", str(missing), "--out-dir", str(tmp_path / "vae")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: ct file {missing} does not exist")
    assert len(err.splitlines()) == 1


def test_non_finite_images_are_refused(inputs, tmp_path):
    cfg, files = inputs
    bad = tmp_path / "ct_nan.h5"
    bad.write_bytes(files["ct"].read_bytes())
    with h5py.File(bad, "r+") as f:
        f["images"][0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=re.escape(f"{bad}: dataset images has 1 NaN or "
                                                   "infinite value(s) (first at index (0, 3, 3))")):
        run_pretrain_vae(pretrain_vae_spec(cfg, "tubes"), bad, tmp_path / "vae")


def test_features_of_another_positron_set_are_refused(inputs, tmp_path):
    cfg, files = inputs
    other = tmp_path / "positron_other.h5"
    other.write_bytes(files["positron"].read_bytes())
    with h5py.File(other, "r+") as f:
        f.attrs["created_utc"] = "2000-01-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="was computed from another positron image set"):
        run_train(train_spec(cfg, "tubes", "attention_gan"), {**files, "positron": other},
                  tmp_path / "out")
