"""How the attention GANs use their memory (the ``attention`` entry of ``metrics/{method}.json``
and a sentence of Table 1's caption, ``evaluate`` rule): for
``n`` sampling inputs drawn as generation draws them, the number of slots that are some
image's first choice, the mean top attention weight (1: every image attends one slot; 1/S:
uniform attention) and the mean norm of the queries ``z`` (about sqrt(q) for queries that
stay near the prior N(0, I)). A memory whose every image attends one slot, or whose queries
have drifted far from the prior, gives the generator no choice to make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.training.generate import restore_final
from models.training.loop import in_eval_mode


def usage_of(method, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The numbers of the module docstring for one method with an attention memory and its
    sampling inputs."""
    with torch.no_grad(), in_eval_mode(method):
        weights = method.attention(inputs).numpy()
        queries = method.queries(inputs).numpy()
    return {"n_images": int(len(weights)), "slots": int(weights.shape[1]),
            "slots_first_choice": int(len(np.unique(weights.argmax(1)))),
            "mean_top_weight": float(weights.max(1).mean()),
            "query_norm_mean": float(np.linalg.norm(queries, axis=1).mean()),
            "latent_dim": int(queries.shape[1])}


def attention_usage(models: dict[str, Path], n: int, seed: int, sources_for
                    ) -> dict[str, dict[str, Any]]:
    """Per method with an attention memory (those whose ``final.pt`` are in ``models``), the
    numbers of the module docstring over ``n`` seeded sampling inputs; methods without one
    are left out."""
    out = {}
    for name, path in models.items():
        method, _ = restore_final(path, name)
        if hasattr(method, "attention"):
            out[name] = usage_of(method, method.sampling_inputs(
                n, sources_for(type(method)), torch.Generator().manual_seed(seed)))
    return out


def usage_sentence(usage: dict[str, dict[str, Any]]) -> str:
    """The caption's sentence about the attention memory's use."""
    if not usage:
        return ""
    parts = [f"{name}: {u['slots_first_choice']} of {u['slots']} slots are some image's first "
             f"choice, mean top weight {u['mean_top_weight']:.2f}, mean query norm "
             f"{u['query_norm_mean']:.2f} (sqrt(q) = {np.sqrt(u['latent_dim']):.2f})"
             for name, u in usage.items()]
    return (f" Attention memory over {next(iter(usage.values()))['n_images']} sampling "
            "inputs: " + "; ".join(parts) + ".")
