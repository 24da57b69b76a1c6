"""Torch device selection shared by the reconstruction and training stages."""

from __future__ import annotations

import argparse
import sys

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


def device_cli(prog: str, description: str, argv: list[str] | None = None) -> int:
    """Command line with the ``device`` command, shared by ``python -m recon`` and ``-m models``
    until each grows commands of its own. Returns the exit code (2 on a user error)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("device", help="resolve the device switch")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    args = parser.parse_args(argv)
    try:
        print(describe_device(resolve_device(args.device)))
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
