"""File conventions shared by every stage: atomic writes and provenance attributes.

Every output is written under a temporary name in its own folder and renamed into place only
when complete (``os.replace`` is atomic on one file system), so an interrupted job never leaves
a file that looks complete. Existing files are not overwritten unless the caller asks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from sim.config import canonical_json, config_sha256

#: Packages whose versions go into ``package_versions``.
_PROVENANCE_PACKAGES = (
    "positron-nde", "numpy", "scipy", "h5py", "xraylib", "torch", "scikit-image", "snakemake",
)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (nothing is written).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def open_hdf5(path: str | Path, what: str):
    """Open an HDF5 file for reading; a missing or unreadable file gives one clear error.

    Parameters
    ----------
    path : path-like
    what : str
        What the file should be, for the message (``"phantom file"``).
    """
    import h5py  # the config-only code paths do not need it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None


def decoded_attrs(node) -> dict[str, Any]:
    """Attributes of an HDF5 file or group, byte strings decoded."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items()}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the outputs."""
    versions = {}
    for name in _PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance_attrs(section: Any, params: dict[str, Any], seed: int | None = None) -> dict:
    """Provenance attributes of DESIGN.md: ``config_sha256`` (of the resolved config section
    the stage used), ``created_utc``, ``package_versions`` (JSON), ``seed`` when random, and
    the stage's own parameters as JSON (``params``)."""
    attrs = {
        "config_sha256": config_sha256(section),
        "config": canonical_json(section),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_versions": json.dumps(package_versions(), sort_keys=True),
        "params": json.dumps(params, sort_keys=True),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    return attrs
