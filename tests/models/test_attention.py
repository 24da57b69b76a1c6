"""Attention memory (eq. 6) against a softmax of z^T W_a y_s computed here in numpy."""

from __future__ import annotations

import numpy as np
import torch

from models.nets.attention import AttentionMemory


def _memory(s=5, d=3, q=4, seed=0) -> tuple[AttentionMemory, np.ndarray]:
    rng = np.random.default_rng(seed)
    slots = rng.normal(size=(s, d)) * 3.0
    memory = AttentionMemory(s, d, q)
    memory.set_slots(torch.from_numpy(slots), torch.Generator().manual_seed(seed))
    return memory, slots


def test_weights_are_the_softmax_of_the_general_score():
    memory, _ = _memory()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    context, weights = memory(z)
    w_a = memory.W_a.detach().numpy().astype(np.float64)
    y = memory.slots.numpy().astype(np.float64)
    zz = z.numpy().astype(np.float64)
    scores = np.array([[zz[b] @ w_a @ y[s] for s in range(len(y))] for b in range(len(zz))])
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    a = weights.detach().numpy()
    assert np.all(a >= 0)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a, expected, atol=1e-6)
    np.testing.assert_allclose(context.detach().numpy(), expected @ y, atol=1e-5)


def test_slots_keep_their_geometry_at_unit_rms():
    memory, slots = _memory()
    stored = memory.slots.numpy()
    assert abs(np.sqrt((stored**2).mean()) - 1) < 1e-6
    np.testing.assert_allclose(stored * np.sqrt((slots**2).mean()), slots, rtol=1e-5)


def test_a_dominant_slot_is_the_context():
    memory, _ = _memory(s=4, d=3, q=3)
    y = memory.slots
    target = 2
    z = torch.tensor([[1.0, 0.5, -0.25]])
    with torch.no_grad():  # W_a = alpha z y_t^T: score of slot t is alpha |z|^2 |y_t|^2
        memory.W_a.copy_(200.0 * z.T @ y[target : target + 1])
    context, weights = memory(z)
    assert weights[0, target] > 1 - 1e-6
    torch.testing.assert_close(context[0], y[target], atol=1e-5, rtol=0)
    # W_a is learned: the loss reaches it.
    context.sum().backward()
    assert memory.W_a.grad is not None
