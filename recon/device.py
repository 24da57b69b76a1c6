"""Torch device selection shared by the reconstruction and training stages."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """Map the config's ``device`` switch to a torch device.

    ``auto`` is CUDA when a CUDA device is usable, else the CPU; ``cuda`` on a machine without
    one is an error (rather than a silent fall-back to a run that is 50x slower).
    """
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but torch sees no CUDA device "
            f"(torch {torch.__version__}); use device: auto or cpu"
        )
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    """One line about a device (name, threads), for logs."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"
    return f"cpu ({torch.get_num_threads()} torch threads)"
