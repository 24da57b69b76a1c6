"""Exponential moving average of the sampling networks (StyleGAN, Karras et al.), with
torch's own ``AveragedModel``: ``w_ema <- decay * w_ema + (1 - decay) * w`` after every step,
buffers (batch-norm statistics) averaged too."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(nets: dict[str, nn.Module], decay: float) -> dict[str, AveragedModel]:
    """One averaged copy per network."""
    return {name: AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
            for name, net in nets.items()}


def update_ema(ema: dict[str, AveragedModel], nets: dict[str, nn.Module]) -> None:
    for name, averaged in ema.items():
        averaged.update_parameters(nets[name])
