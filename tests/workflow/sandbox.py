"""A copy of the workflow in a temporary folder, to run documented commands as written
without touching the repository's `results/`."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: What a command run from the repository root can reach.
WORKFLOW_ITEMS = ("Snakefile", "workflow", "config", "profiles", "pipeline", "sim", "recon",
                  "models", "examples")


def copy_workflow(dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """Copy the workflow (and ``extra`` items of the repository root) into ``dest``;
    file times are kept, so Make sees the same dependencies as in the repository."""
    for item in (*WORKFLOW_ITEMS, *extra):
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / item)
    return dest
