"""Loop-owned randomness: batch order, flips and DiffAugment against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.training.augment import DiffAugment, cutout, random_dihedral, translate
from models.training.batches import BatchOrder


def test_batch_order_is_a_pure_function_covering_every_image_once_per_epoch():
    order = BatchOrder(10, 4, seed=3, source="real")
    draws = [order.indices(k) for k in range(5)]  # 20 positions: two epochs
    flat = np.concatenate(draws)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    # The same draw whenever it is asked for, by a fresh object too.
    again = BatchOrder(10, 4, seed=3, source="real")
    for k in (4, 0, 2):
        np.testing.assert_array_equal(again.indices(k), draws[k])
    assert not np.array_equal(BatchOrder(10, 4, 3, "query").indices(0), draws[0])
    # A batch larger than the set spans several epochs.
    big = BatchOrder(3, 7, 0, "real").indices(0)
    assert sorted(big[:6]) == [0, 0, 1, 1, 2, 2]


def test_translation_equals_a_shift_with_fill():
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(2, 1, 5, 6)
    out = translate(x, torch.tensor([1, -2]), torch.tensor([-1, 3]), fill=-1.0)
    for b, (dy, dx) in enumerate([(1, -1), (-2, 3)]):
        ref = np.full((5, 6), -1.0, np.float32)
        src = x[b, 0].numpy()
        for i in range(5):
            for j in range(6):
                if 0 <= i - dy < 5 and 0 <= j - dx < 6:
                    ref[i, j] = src[i - dy, j - dx]
        np.testing.assert_array_equal(out[b, 0].numpy(), ref)


def test_cutout_blanks_one_square():
    x = torch.ones(2, 1, 8, 8)
    out = cutout(x, torch.tensor([4, 0]), torch.tensor([4, 7]), size=4, fill=-1.0)
    assert (out[0, 0] == -1).sum() == 16  # inside the image
    assert torch.all(out[0, 0, 2:6, 2:6] == -1)
    assert (out[1, 0] == -1).sum() == 2 * 3  # clipped at the corner: rows 0-1, cols 5-7


def test_diffaugment_is_differentiable_and_seeded():
    aug = DiffAugment(["translation", "cutout"])
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and 0 < (x.grad != 0).float().mean() < 1
    assert torch.equal(DiffAugment([])(x, torch.Generator()), x)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        DiffAugment(["color"])


def test_random_dihedral_gives_each_image_one_symmetry_of_the_square():
    x = torch.randn(64, 1, 5, 5)
    out = random_dihedral(x, torch.Generator().manual_seed(0))
    variants = []
    for k in range(8):
        turned = torch.rot90(x, k % 4, dims=(-2, -1))
        variants.append(torch.flip(turned, dims=(-1,)) if k >= 4 else turned)
    seen = set()
    for i in range(len(x)):
        matches = [k for k in range(8) if torch.equal(out[i], variants[k][i])]
        assert matches
        seen.add(matches[0])
    assert len(seen) == 8
