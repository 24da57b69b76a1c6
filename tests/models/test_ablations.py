"""The attention GAN's ablations remove exactly one mechanism each: the context, the CT
query, the attention perceptual loss, or the link between attention and slot content."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.methods import method_class
from models.methods.attention_gan import ABLATIONS, AttentionGANSettings
from models.methods.base import StepContext
from pipeline.specs import train_spec
from tests.models.fixtures import tiny_generative_config

SIZE, SLOTS, SLOT_DIM, LATENT = 16, 6, 3, 4


def _build(name: str, seed: int = 0, slots: np.ndarray | None = None):
    cfg = tiny_generative_config()
    settings = AttentionGANSettings.from_section(cfg["train"]["attention_gan"])
    rng = np.random.default_rng(seed)
    slots = rng.normal(size=(SLOTS, SLOT_DIM)) if slots is None else slots
    method = method_class(name).from_parts(
        settings, {"image_size": SIZE, "latent_dim": LATENT, "base_channels": 4,
                   "max_channels": 8}, None, slots,
        torch.from_numpy(rng.uniform(-1, 1, (SLOTS, 1, SIZE, SIZE)).astype(np.float32)),
        SIZE, torch.Generator().manual_seed(seed))
    for net in method.nets.values():
        net.eval()
    return method


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Outputs differ beyond round-off (freshly initialised generators give images of order
    1e-6, so the comparison is relative); an ablated path gives bit-identical images."""
    if torch.equal(a, b):
        return False
    return bool(((a - b).abs().max() / a.abs().max()) > 1e-4)


def _inputs(seed: int, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"query": torch.rand((n, 1, SIZE, SIZE), generator=g) * 2 - 1,
            "eps": torch.randn((n, LATENT), generator=g)}


def test_every_ablation_trains_with_the_full_models_settings():
    cfg = tiny_generative_config(methods=["attention_gan", *ABLATIONS])
    cfg["train"]["attention_gan"]["lambda_apg"] = 0.25
    for name in ABLATIONS:
        spec = train_spec(cfg, "tubes", name)
        assert spec["method_settings"] == cfg["train"]["attention_gan"]
        assert method_class(name).ablation == ABLATIONS[name]


@torch.no_grad()
def test_without_context_the_images_do_not_depend_on_the_memory():
    slots = np.random.default_rng(1).normal(size=(SLOTS, SLOT_DIM))
    x = _inputs(2)
    for name, changes in (("attention_gan", True), ("attention_gan_no_context", False)):
        a = _build(name, slots=slots).sample(x)
        b = _build(name, slots=slots + np.eye(SLOTS, SLOT_DIM)).sample(x)  # other content
        assert _differ(a, b) is changes, name


@torch.no_grad()
def test_a_random_query_ignores_the_ct_image():
    x, other = _inputs(3), _inputs(4)
    other["eps"] = x["eps"]  # same noise, other CT images
    for name, changes in (("attention_gan", True), ("attention_gan_random_query", False)):
        method = _build(name)
        a, b = method.sample(x), method.sample(other)
        assert _differ(a, b) is changes, name
    # The random query is the noise itself: z ~ N(0, I).
    z, kl = _build("attention_gan_random_query")._query(x["query"], x["eps"], None)
    assert torch.equal(z, x["eps"]) and float(kl) == 0.0


@torch.no_grad()
def test_shuffled_slots_give_contexts_that_ignore_the_attention():
    method = _build("attention_gan_shuffled_slots")
    memory = method.nets["memory"]
    z = torch.randn((3, LATENT), generator=torch.Generator().manual_seed(5)) * 4
    weights = torch.softmax(memory.scores(z), dim=1)
    perm = torch.argsort(torch.rand((3, SLOTS), generator=torch.Generator().manual_seed(6)), 1)
    context, _ = method._context(z, perm, None)
    expected = torch.stack([weights[b] @ memory.slots[perm[b]] for b in range(3)])
    torch.testing.assert_close(context, expected)
    # Over random orders the context is the slots' mean whatever the query attends.
    g = torch.Generator().manual_seed(7)
    mean = torch.stack([method._context(z, None, g)[0] for _ in range(3000)]).mean(0)
    torch.testing.assert_close(mean, memory.slots.mean(0).expand(3, -1), atol=0.05, rtol=0)
    full = _build("attention_gan")
    assert not torch.allclose(full._context(z, None, None)[0], memory.slots.mean(0).expand(
        3, -1), atol=0.05)


@pytest.mark.parametrize(("name", "apg_in_loss"), [("attention_gan", True),
                                                   ("attention_gan_no_apg", False)])
def test_no_apg_drops_only_the_attention_perceptual_loss(name, apg_in_loss):
    method = _build(name)
    for net in method.nets.values():
        net.train()
    g = torch.Generator().manual_seed(8)
    batch = {"real": torch.rand((4, 1, SIZE, SIZE), generator=g) * 2 - 1,
             "query": _inputs(9, 4)["query"]}
    ctx = StepContext(rng=g, augment=lambda x, rng: x, step=0)
    method.loss("discriminator", batch, ctx)
    loss, values = method.loss("generator", batch, ctx)
    kl_term = method.settings.encoder_kl_weight * values["query_kl"]
    apg = method.settings.lambda_apg * values["g_apg"] if apg_in_loss else 0.0
    assert float(values["g_apg"]) > 0  # still measured and logged
    assert float(loss.detach()) == pytest.approx(float(values["g_gan"] + apg + kl_term),
                                                 rel=1e-5)


def test_attention_usage_of_uniform_attention_and_prior_queries():
    """W_a = 0 makes attention uniform (top weight 1/S); the random-query ablation's queries
    are N(0, I), whose norm has the chi distribution's mean."""
    from scipy import stats

    from models.evaluate.attention_usage import usage_of

    method = _build("attention_gan_random_query")
    with torch.no_grad():
        method.nets["memory"].W_a.zero_()
    g = torch.Generator().manual_seed(10)
    inputs = {"query": torch.zeros((4000, 1, SIZE, SIZE)),
              "eps": torch.randn((4000, LATENT), generator=g)}
    usage = usage_of(method, inputs)
    assert usage["mean_top_weight"] == pytest.approx(1 / SLOTS, rel=1e-6)
    assert usage["slots"] == SLOTS and usage["n_images"] == 4000
    assert usage["query_norm_mean"] == pytest.approx(stats.chi(LATENT).mean(), rel=0.02)
    # A memory whose one slot dominates every score: every image's first choice is that slot.
    with torch.no_grad():
        method.nets["memory"].slots.zero_()
        method.nets["memory"].slots[2] = 1.0
        method.nets["memory"].W_a.fill_(50.0)
    positive = {"query": inputs["query"][:200], "eps": inputs["eps"][:200].abs()}
    usage = usage_of(method, positive)
    assert usage["slots_first_choice"] == 1 and usage["mean_top_weight"] > 0.99


def test_pairwise_l1_of_two_images_is_their_mean_difference():
    from models.evaluate.table1 import pairwise_l1

    rng = np.random.default_rng(11)
    a, b = rng.uniform(-1, 1, (2, 8, 8))
    assert pairwise_l1(np.stack([a, b]), 50, 0) == pytest.approx(np.abs(a - b).mean())
    assert pairwise_l1(np.repeat(a[None], 5, 0), 50, 0) == 0.0
