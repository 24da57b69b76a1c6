"""Attention memory of positron features (sec. 3.3, eq. 6): Luong's "general" attention.

The query is the CT latent ``z`` (B, q); the memory holds S slots ``y_s`` (S, d), feature
vectors of positron images (PCANet + PCA, :mod:`models.data.positron_features`). Eq. 6:

    score(z, y_s) = z^T W_a y_s,      a(s) = softmax_s score(z, y_s),      c = sum_s a(s) y_s

with ``W_a`` (q, d) learned. Fusion: the generator's input is the concatenation ``[z ; c]``
(length q + d), so the generator sees both the medical prior and the positron features it
attended to.

Scale: the slots are stored in PCA units; the memory divides them by one number, their root
mean square, so ``c`` has unit size like ``z`` and the initial scores are of order one
(``W_a ~ N(0, 1 / (q d))``); the geometry of the slots is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionMemory(nn.Module):
    """Slots (buffer, S x d) and ``W_a`` (parameter, q x d).

    Parameters
    ----------
    n_slots, slot_dim, query_dim : int
        S, d and q.
    """

    def __init__(self, n_slots: int, slot_dim: int, query_dim: int) -> None:
        super().__init__()
        self.register_buffer("slots", torch.zeros(n_slots, slot_dim))
        self.W_a = nn.Parameter(torch.zeros(query_dim, slot_dim))

    @torch.no_grad()
    def set_slots(self, slots: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Store the slots (scaled to unit RMS) and draw ``W_a ~ N(0, 1/(q d))``."""
        slots = torch.as_tensor(slots, dtype=self.slots.dtype)
        if slots.shape != self.slots.shape:
            raise ValueError(f"memory slots have shape {tuple(slots.shape)}, expected "
                             f"{tuple(self.slots.shape)}")
        rms = slots.square().mean().sqrt()
        self.slots.copy_(slots / torch.where(rms > 0, rms, torch.ones_like(rms)))
        q, d = self.W_a.shape
        self.W_a.copy_(torch.randn((q, d), generator=generator) / (q * d) ** 0.5)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """``z^T W_a y_s`` for every query and slot, (B, S)."""
        return (z @ self.W_a) @ self.slots.T

    def forward(self, z: torch.Tensor, permutation: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``c`` (B, d) and attention weights ``a`` (B, S) of eq. 6.

        ``permutation`` (B, S) long, for the shuffled-slots ablation: image ``b``'s weights
        are computed on the slots as stored but applied to the slots reordered by
        ``permutation[b]``, so what it receives no longer depends on what it attended."""
        weights = torch.softmax(self.scores(z), dim=1)
        if permutation is None:
            return weights @ self.slots, weights
        return torch.einsum("bs,bsd->bd", weights, self.slots[permutation]), weights
