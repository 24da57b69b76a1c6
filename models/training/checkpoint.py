"""Checkpoints of the generative stage: the only place that writes or reads them.

Two kinds, both ``torch.save`` dictionaries written atomically (temporary name, then
rename):

* ``checkpoint.pt`` (every ``checkpoint_every`` steps and at the end): everything a run
  needs to continue bit for bit: the networks, the optimiser and mixed-precision scaler
  states, the EMA copies, the loop's random generator and torch's global one, the step, the
  history so far and the ``compat`` fingerprint (settings and input files);
* ``final.pt``: what sampling needs: method, settings, architecture, one state per network
  (the EMA copy when EMA is on), provenance.

Both carry ``format`` and ``kind``; :func:`load_checkpoint` reads them with
``weights_only=True`` (no code from the file is run) and turns anything unreadable, foreign
or of another method into one ValueError naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pipeline.fileio import atomic_output
from pipeline.specs import canonical_json

FORMAT = "positron-nde/generative-model"
VERSION = 1
KINDS = ("checkpoint", "final")


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the format header, atomically (replaces an older file)."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "kind": kind, **payload}, tmp)
    return path


def load_checkpoint(path: str | Path, kind: str, method: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint of ``kind`` (and of ``method`` when given).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        It is not readable by torch, not one of ours, of another kind or method, or lacks a
        field; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ValueError(f"{path}: not a readable model checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a positron-nde model checkpoint (no {FORMAT!r} header)")
    if data.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint format version {data.get('version')}, this code "
                         f"reads version {VERSION}")
    if data.get("kind") != kind:
        raise ValueError(f"{path}: a {data.get('kind')!r} file where a {kind!r} file is expected")
    if method is not None and data.get("method") != method:
        raise ValueError(f"{path}: checkpoint of method {data.get('method')!r}, expected "
                         f"{method!r}")
    required = {"checkpoint": ("method", "settings", "arch", "step", "nets", "optimizers",
                               "rng", "history", "compat"),
                "final": ("method", "settings", "arch", "step", "nets")}[kind]
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return data


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def compat_key(method: str, settings: dict[str, Any], arch: dict[str, Any],
               inputs: dict[str, str]) -> str:
    """Fingerprint of what a checkpoint can be resumed with: method, settings (without the
    keys that may change on resume), architecture and input files' fingerprints."""
    return hashlib.sha256(canonical_json({"method": method, "settings": settings, "arch": arch,
                                          "inputs": inputs}).encode()).hexdigest()


def describe(settings: dict[str, Any]) -> str:
    """Settings as compact JSON, for messages."""
    return json.dumps(settings, sort_keys=True)
