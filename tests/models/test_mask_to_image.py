"""Mask-to-image generation (seed 003): on a toy set where a cold disc sits where the mask
says, the trained generator puts the cold spot of a new mask at the mask's disc, with the
PatchGAN and with the global discriminator; the methods' data contract (masks as a second
channel flipped with the image) and the refusals of bad masks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from models.data.loaders import PositronImages
from models.methods.base import StageInputs
from models.methods.image_to_image import (
    ImageToImageSettings,
    MaskToImageGlobal,
    MaskToImagePatch,
    Pix2Pix,
)
from models.training.loop import in_eval_mode
from models.training.settings import LoopSettings
from tests.models.fixtures import LabelledImages, train_in_memory

SIZE = 16


def toy_masks(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(n, 2, 16, 16): channel 0 a bright noisy field with a cold disc of radius 3 px,
    channel 1 its mask (+1 in the disc, -1 outside); and the discs' centres (n, 2)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(4, 12, size=(n, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (yy[None] - centres[:, 0, None, None]) ** 2 + (
        xx[None] - centres[:, 1, None, None]) ** 2 <= 9
    image = 0.6 + 0.1 * rng.standard_normal((n, SIZE, SIZE))
    image[disc] = -0.8
    both = np.stack([np.clip(image, -1, 1), np.where(disc, 1.0, -1.0)], axis=1)
    return torch.from_numpy(both.astype(np.float32)), centres


def _settings() -> ImageToImageSettings:
    return ImageToImageSettings(generator_channels=8, discriminator_channels=8, l1_weight=10.0,
                                dropout=0.5, norm="batch", gan_loss="bce",
                                section="mask2image_patch")


@pytest.mark.parametrize("cls", [MaskToImagePatch, MaskToImageGlobal])
def test_mask_to_image_puts_the_cold_disc_where_the_mask_says(cls):
    both, _ = toy_masks(128, seed=0)
    source = LabelledImages(both, torch.zeros(128, dtype=torch.int64))
    method = cls.build(_settings(), StageInputs({"real": source}, SIZE),
                       torch.Generator().manual_seed(0))
    loop = LoopSettings(steps=150, batch_size=16, lr=2e-4, betas=(0.5, 0.999), seed=0,
                        flips=True, device="cpu")
    train_in_memory(method, source, loop)
    new, centres = toy_masks(40, seed=1)
    inputs = {"mask": new[:, 1:2], "noise": torch.randn(40, 1, SIZE, SIZE,
                                                        generator=torch.Generator())}
    with torch.no_grad(), in_eval_mode(method):
        fake = method.sample(inputs)[:, 0].numpy()
    # The coldest 3 x 3 neighbourhood of each generated image, against the disc's centre.
    smooth = ndimage.uniform_filter(fake, size=(1, 3, 3), mode="nearest")
    coldest = np.stack(np.unravel_index(smooth.reshape(40, -1).argmin(1), (SIZE, SIZE)), 1)
    hit = np.linalg.norm(coldest - centres, axis=1) <= 2.0
    assert hit.mean() >= 0.9, hit.mean()
    # Inside the disc cold, outside warm: the image follows the mask, not an average image.
    disc = new[:, 1].numpy() > 0
    assert fake[disc].mean() < fake[~disc].mean() - 0.3


def test_the_two_discriminators_are_a_patch_map_and_one_logit():
    source = LabelledImages(toy_masks(4, 0)[0], torch.zeros(4, dtype=torch.int64))
    patch = MaskToImagePatch.build(_settings(), StageInputs({"real": source}, 64),
                                   torch.Generator())
    glob = MaskToImageGlobal.build(_settings(), StageInputs({"real": source}, 64),
                                   torch.Generator())
    x = torch.zeros(2, 2, 64, 64)
    assert patch.nets["discriminator"](x).shape[-1] > 1  # one logit per 34 px patch
    assert glob.nets["discriminator"](x).shape == (2, 1, 1, 1)
    assert patch.nets["generator"].down[0][0].in_channels == 2  # mask and noise


def test_pix2pix_splits_a_pair_into_its_low_count_input_and_reference_target():
    method = Pix2Pix.build(_settings(), StageInputs({}, SIZE), torch.Generator())
    pair = torch.stack([torch.zeros(3, SIZE, SIZE), torch.ones(3, SIZE, SIZE)], 1)
    low, ref = method.split(pair)
    assert torch.equal(low, pair[:, :1]) and torch.equal(ref, pair[:, 1:])
    assert method.nets["generator"].down[0][0].in_channels == 1  # no noise: dropout is


def _positron_file(path, masks_shape=None):
    n = 6
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((n, SIZE, SIZE), np.float32)
        f["masks"] = np.zeros(masks_shape or (n, SIZE, SIZE), np.uint8)
        f["split"] = np.array(["train"] * n, dtype=object)
        f["acquisition"] = np.array(["reference"] * n, dtype=object)
        f["defect_class"] = np.array(["none"] * n, dtype=object)


def test_masks_come_as_a_second_channel_and_masks_of_the_wrong_size_are_refused(tmp_path):
    good = tmp_path / "good.h5"
    _positron_file(good)
    with h5py.File(good, "a") as f:
        f["masks"][2, 3:5, 4:6] = 7  # a defect number, not a class: any > 0 is defect
    data = PositronImages(good, "train", with_masks=True)
    batch = data.batch(np.array([2, 0]))
    assert batch.shape == (2, 2, SIZE, SIZE)
    assert set(batch[0, 1].unique().tolist()) == {-1.0, 1.0} and (batch[0, 1] > 0).sum() == 4
    assert (batch[1, 1] == -1).all()
    bad = tmp_path / "bad.h5"
    _positron_file(bad, masks_shape=(6, 8, 8))
    with pytest.raises(ValueError, match=r"bad\.h5: dataset masks has shape \(6, 8, 8\), but "
                                         r"images has \(6, 16, 16\)"):
        PositronImages(bad, "train", with_masks=True)


def test_dropout_draws_are_a_function_of_seed_and_step():
    """pix2pix's only noise is the U-Net's dropout, drawn from torch's global stream: two runs
    with the same seed give the same weights whatever else used that stream before."""
    both, _ = toy_masks(16, seed=0)
    pairs = LabelledImages(both, torch.zeros(16, dtype=torch.int64))
    weights = []
    for disturb in (0, 5):
        torch.manual_seed(disturb)
        torch.rand(disturb + 1)  # another consumer of the global stream
        method = Pix2Pix.build(_settings(), StageInputs({"real": pairs}, SIZE),
                               torch.Generator().manual_seed(0))
        loop = LoopSettings(steps=3, batch_size=4, lr=2e-4, betas=(0.5, 0.999), seed=0,
                            device="cpu")
        train_in_memory(method, pairs, loop)
        weights.append(torch.cat([p.detach().flatten() for p in method.nets.parameters()]))
    assert torch.equal(weights[0], weights[1])
