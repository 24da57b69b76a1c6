"""Torch datasets over positron.h5 and ct.h5: split filtering, pairing, seeded shuffling and
augmentation applied identically to both images of a pair."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from models.data.loaders import CTImages, PositronImages, PositronPairs, dihedral, make_loader
from models.data.positron_dataset import build_positron_dataset
from tests.models.fixtures import make_results
from tests.models.test_positron_dataset import PHANTOMS, spec


@pytest.fixture(scope="module")
def positron_h5(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_results(root, PHANTOMS, np.random.default_rng(2))
    out = root / "positron.h5"
    build_positron_dataset(spec(), root, out)
    return out


def test_dihedral_group():
    image = torch.arange(9.0).reshape(1, 3, 3)
    outs = {tuple(dihedral(image, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8  # 8 distinct symmetries of a generic square
    assert torch.equal(dihedral(image, 0), image)
    assert torch.equal(dihedral(image, 1), torch.rot90(image, 1, dims=(1, 2)))


@pytest.mark.parametrize("in_memory", [True, False])
def test_pairs_follow_the_file(positron_h5, in_memory):
    with h5py.File(positron_h5) as f:
        images, pairs = f["images"][...], f["pairs"][...]
        split = np.asarray([s.decode() for s in f["split"][...]])
    train = PositronPairs(positron_h5, "train", in_memory=in_memory)
    expected = pairs[split[pairs[:, 0]] == "train"]
    assert len(train) == len(expected) > 0
    low, ref = train[3]
    assert low.shape == (1, 16, 16)
    np.testing.assert_array_equal(low[0].numpy(), images[expected[3, 0]])
    np.testing.assert_array_equal(ref[0].numpy(), images[expected[3, 1]])
    sizes = [len(PositronPairs(positron_h5, s)) for s in ("train", "val", "test")]
    assert sum(sizes) == len(pairs)
    short = PositronImages(positron_h5, "val", acquisition="short")
    assert len(short) == sizes[1]


def test_augmentation_is_shared_by_the_pair_and_seeded(positron_h5):
    plain = PositronPairs(positron_h5, "train")
    aug = PositronPairs(positron_h5, "train", augment=True, seed=1)
    again = PositronPairs(positron_h5, "train", augment=True, seed=1)
    used = set()
    for i in range(len(plain)):
        low, ref = plain[i]
        a_low, a_ref = aug[i]
        k = next(k for k in range(8) if torch.equal(dihedral(low, k), a_low))
        assert torch.equal(dihedral(ref, k), a_ref)  # the same transform for both
        assert torch.equal(again[i][0], a_low)
        used.add(k)
    assert len(used) > 3
    aug.set_epoch(1)
    assert any(not torch.equal(aug[i][0], again[i][0]) for i in range(len(plain)))


def test_seeded_shuffling(positron_h5):
    data = PositronImages(positron_h5, "train")

    def order(seed):
        return torch.cat([b.flatten(1)[:, :4] for b in make_loader(data, 8, seed=seed)])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_ct_images_and_bad_files(tmp_path, positron_h5):
    from models.data.ct_dataset import build_ct_dataset

    cfg = {"source": "synthetic", "path": None, "size_px": 16, "window_hu": [-1000.0, 1000.0],
           "n_images": 10, "field_of_view_mm": 400.0, "split_fractions": [0.8, 0.1, 0.1],
           "seed": 5}
    build_ct_dataset({"ct_images": cfg}, tmp_path / "ct.h5")
    assert len(CTImages(tmp_path / "ct.h5", "train")) == 8
    with pytest.raises(ValueError, match="ct.h5: missing dataset pairs"):
        PositronPairs(tmp_path / "ct.h5")
    with pytest.raises(FileNotFoundError, match="nothing.h5 does not exist"):
        CTImages(tmp_path / "nothing.h5")


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("value, what", [
    (np.nan, "dataset images has 1 NaN or infinite value(s)"),
    (np.inf, "dataset images has 1 NaN or infinite value(s)"),
    (3.0, "dataset images has values outside [-1, 1] (row 2)"),
])
def test_image_sets_with_bad_values_are_refused_where_read(tmp_path, positron_h5, in_memory,
                                                           value, what):
    import re
    import shutil

    bad = tmp_path / "positron.h5"
    shutil.copy(positron_h5, bad)
    with h5py.File(bad, "r+") as f:
        f["images"][2, 1, 1] = value
    with pytest.raises(ValueError, match=re.escape(f"{bad}: {what}")):
        data = PositronImages(bad, "train", in_memory=in_memory)
        for i in range(len(data)):  # read per item when not in memory
            data[i]
