"""Image sets are opened with their contract checked: a per-image column whose length or shape
disagrees with ``images``, pairs outside the rows, and NaN or infinite images are refused by
every reader with one message naming the file, the column, its length and the expected one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from models.data.labels import image_classes
from models.data.loaders import CTImages, PositronImages, PositronPairs
from models.data.positron_dataset import build_positron_dataset
from models.evaluate.enhance import held_out_pairs
from models.evaluate.feature_network import labelled_images
from models.evaluate.table1 import read_generated
from models.training.generate import training_scales
from pipeline.config import load_config
from pipeline.specs import positron_features_spec
from tests.models.fixtures import make_results
from tests.models.test_positron_dataset import PHANTOMS, spec

#: Every reader of positron.h5, as the stages call them.
READERS = {
    "PositronImages": lambda p: PositronImages(p, "train", with_masks=True),
    "PositronPairs": lambda p: PositronPairs(p, "train"),
    "image_classes": image_classes,
    "training_scales": lambda p: training_scales(p, None),
    "held_out_pairs": lambda p: held_out_pairs(p, "test"),
    "labelled_images": lambda p: labelled_images(p, "reference"),
}


@pytest.fixture(scope="module")
def positron_h5(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    make_results(root, PHANTOMS, np.random.default_rng(4))
    out = root / "positron.h5"
    build_positron_dataset(spec(), root, out)
    return out


def _crafted(source, path, name: str, change):
    """A copy of ``source`` whose dataset ``name`` is replaced by ``change(old values)``."""
    shutil.copy(source, path)
    with h5py.File(path, "a") as f:
        data = change(f[name][...])
        del f[name]
        f[name] = data
    return path


@pytest.mark.parametrize("name, change, expected", [
    ("split", lambda a: a[:-3], "dataset split has {short} entries, but images has {n} (one "
                                "per image expected)"),
    ("defect_class", lambda a: np.concatenate([a, a[:2]]),
     "dataset defect_class has {long} entries, but images has {n} (one per image expected)"),
    ("phantom", lambda a: a[:1], "dataset phantom has 1 entries, but images has {n}"),
    ("acquisition", lambda a: a[0], "dataset acquisition holds a single value; it must have "
                                    "one entry per image ({n})"),
    ("scale", lambda a: a[:-1], "dataset scale has {short1} entries, but images has {n}"),
    ("masks", lambda a: a[:-1], "dataset masks has shape ({short1}, 16, 16), but images has "
                                "({n}, 16, 16) (one per image, of the images' size, "
                                "expected)"),
    ("truth", lambda a: a[:, :8, :8], "dataset truth has shape ({n}, 8, 8), but images has "
                                      "({n}, 16, 16)"),
    ("pairs", lambda a: a + len(a) * 10, "dataset pairs has {outside} row number(s) outside "
                                         "the {n} images"),
    ("pairs", lambda a: a[:, :1], "dataset pairs has shape ({pairs}, 1), expected (m, 2) image "
                                  "rows"),
    ("pairs", lambda a: a + 0.5, "dataset pairs is stored as float64 with"),
])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_refuses_a_column_that_disagrees_with_the_images(positron_h5, tmp_path,
                                                                      reader, name, change,
                                                                      expected):
    with h5py.File(positron_h5) as f:
        n, pairs = len(f["images"]), len(f["pairs"])
    bad = _crafted(positron_h5, tmp_path / "bad.h5", name, change)
    with pytest.raises(ValueError) as info:
        READERS[reader](bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: "), message
    assert expected.format(n=n, short=n - 3, long=n + 2, short1=n - 1, pairs=pairs,
                           outside=2 * pairs) in message


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("reader", ["PositronImages", "PositronPairs", "held_out_pairs",
                                    "labelled_images"])
def test_non_finite_images_are_refused(positron_h5, tmp_path, reader, value):
    def spoil(images):
        images[:, 5, 5] = value  # every image: whichever rows a reader takes hold one
        return images

    bad = _crafted(positron_h5, tmp_path / "bad.h5", "images", spoil)
    with pytest.raises(ValueError, match=r"bad\.h5: .*NaN or infinite"):
        READERS[reader](bad)


def test_non_finite_truth_and_generated_images_are_refused(positron_h5, tmp_path):
    def spoil(images):
        images[:, 0, 0] = np.nan
        return images

    bad = _crafted(positron_h5, tmp_path / "truth.h5", "truth", spoil)
    with pytest.raises(ValueError, match=r"truth\.h5: dataset truth has \d+ NaN or infinite"):
        held_out_pairs(bad, "test")
    generated = tmp_path / "generated.h5"
    with h5py.File(generated, "w") as f:
        f["images"] = np.zeros((4, 16, 16), np.float32)
        f["images"][1, 2, 3] = np.inf
        f["labels"] = np.zeros(3, np.int64)  # and one label short
    with pytest.raises(ValueError, match=r"generated\.h5: dataset labels has 3 entries, but "
                                         r"images has 4"):
        read_generated(generated, {})
    with h5py.File(generated, "a") as f:
        del f["labels"]
    with pytest.raises(ValueError, match=r"generated\.h5: dataset images has 1 NaN or "
                                         r"infinite value\(s\) \(first at index \(1, 2, 3\)\)"):
        read_generated(generated, {})


def test_a_ct_set_with_a_short_split_is_refused(tmp_path):
    path = tmp_path / "ct.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((5, 8, 8), np.float32)
        f["split"] = np.array(["train"] * 4, dtype=object)
        f["series"] = np.array(["a"] * 5, dtype=object)
    with pytest.raises(ValueError, match=r"ct\.h5: dataset split has 4 entries, but images "
                                         r"has 5 \(one per image expected\)"):
        CTImages(path, "train")


def test_cli_gives_one_error_line_and_no_output(positron_h5, tmp_path):
    bad = _crafted(positron_h5, tmp_path / "positron.h5", "split", lambda a: a[:-3])
    with h5py.File(bad) as f:
        n = len(f["images"])
    out = tmp_path / "features.h5"
    run = subprocess.run([sys.executable, "-m", "models", "positron-features", "--spec",
                          json.dumps(positron_features_spec(load_config(), "tubes")),
                          "--positron", str(bad), "--out", str(out)],
                         capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0] == (f"error: {bad}: dataset split has {n - 3} entries, but images has {n} "
                      "(one per image expected)")
    assert not out.exists()
