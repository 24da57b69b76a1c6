"""Baselines through the same loop: WGAN-GP's penalty and clipping against hand values, the
budget in real batches, and the VAE and WGAN-GP baselines trained and sampled by the stages."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from models.methods.base import StageInputs
from models.methods.wgan_gp import WGANGP, WGANSettings
from models.training.checkpoint import load_checkpoint
from models.training.generate import run_generate
from models.training.loop import Trainer
from models.training.settings import LoopSettings
from models.training.stage import run_train
from pipeline.specs import generate_spec, train_spec
from tests.models.fixtures import make_generative_inputs, tiny_generative_config


class _Images:
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def batch(self, indices):
        return self.images[torch.as_tensor(np.asarray(indices))]


def _wgan(clip=None) -> WGANGP:
    settings = WGANSettings(latent_dim=4, generator_channels=2, critic_channels=2, n_critic=5,
                            gp_weight=10.0, clip=clip)
    return WGANGP.build(settings, StageInputs({}, 16), torch.Generator().manual_seed(0))


def test_gradient_penalty_of_a_linear_critic():
    """A linear critic C(x) = w.x has gradient w everywhere: the penalty is (|w| - 1)^2."""
    method = _wgan()
    linear = nn.Sequential(nn.Flatten(), nn.Linear(256, 1))
    with torch.no_grad():
        linear[1].weight.fill_(0.125)  # |w| = 0.125 * 16 = 2
    method.nets["critic"] = linear
    real, fake = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    gp = method.gradient_penalty(real, fake, torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx((2.0 - 1.0) ** 2, rel=1e-6)


def test_weight_clipping_and_the_budget_in_real_batches():
    method = _wgan(clip=0.01)
    with torch.no_grad():
        for p in method.nets["critic"].parameters():
            p.fill_(0.5)
    method.after_step("critic")
    assert all(p.abs().max() <= 0.01 for p in method.nets["critic"].parameters())
    images = _Images(torch.rand(20, 1, 16, 16) * 2 - 1)
    loop = LoopSettings(steps=10, batch_size=4, lr=1e-4, betas=(0.0, 0.9), seed=0,
                        device="cpu")
    trainer = Trainer(method, {"real": images}, loop, "/nonexistent", "x", {},
                      torch.device("cpu"), "wgan")
    assert trainer.draws_per_step == 5 and trainer.total_steps == 2  # 10 batches in all
    trainer.train_step()  # 5 critic steps, 1 generator step: clipping held after each
    assert all(p.abs().max() <= 0.01 for p in method.nets["critic"].parameters())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    cfg = tiny_generative_config(methods=["vae", "wgan_gp", "dcgan"])
    cfg["train"]["vae"].update(latent_dim=4, base_channels=4)
    cfg["train"]["wgan_gp"].update(generator_channels=4, critic_channels=4, n_critic=2)
    cfg["train"]["dcgan"].update(generator_channels=4, discriminator_channels=4)
    return cfg, make_generative_inputs(root, cfg)


@pytest.mark.parametrize("method", ["vae", "wgan_gp", "dcgan"])
def test_baselines_train_and_generate_through_the_stages(inputs, tmp_path, method):
    cfg, files = inputs
    out = tmp_path / method
    run_train(train_spec(cfg, "tubes", method), files, out)
    final = load_checkpoint(out / "final.pt", "final", method)
    draws = 2 if method == "wgan_gp" else 1
    assert final["step"] == cfg["train"]["steps"] // draws
    # Per-method optimiser settings reach the loop (the VAE's 1e-3, WGAN-GP's (0, 0.9)).
    state = load_checkpoint(out / "checkpoint.pt", "checkpoint", method)
    group = next(iter(state["optimizers"].values()))["param_groups"][0]
    expected = cfg["train"][method].get("lr") or cfg["train"]["lr"]
    assert group["lr"] == pytest.approx(expected)
    run_generate(generate_spec(cfg, "tubes", method), out / "final.pt", files["positron"],
                 None, tmp_path / f"{method}.h5")
    with h5py.File(tmp_path / f"{method}.h5") as f:
        images = f["images"][...]
    assert images.shape == (20, 16, 16) and np.abs(images).max() <= 1 and images.std() > 0
