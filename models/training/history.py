"""Training history: ``history.csv`` and its loss plot.

One row per ``log_every`` steps: ``step`` (steps done), the mean of every logged value over
those steps, ``lr_<optimiser>``, ``seconds`` (wall time spent in training steps so far, over
resumes; sample grids and checkpoints not counted) and ``images_per_s`` (real images drawn
per second of training-step time in that window).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.fileio import atomic_output  # noqa: E402

LEADING = ("step",)
TRAILING = ("seconds", "images_per_s")


def columns(rows: list[dict[str, float]]) -> list[str]:
    """Column order: step, the values in first-seen order, learning rates, timings."""
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    middle = [n for n in names if n not in LEADING + TRAILING and not n.startswith("lr_")]
    rates = [n for n in names if n.startswith("lr_")]
    return [*LEADING, *middle, *rates, *[t for t in TRAILING if t in names]]


def write_history(path: str | Path, rows: list[dict[str, float]]) -> Path:
    """Write the rows as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows) if rows else list(LEADING),
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(path, overwrite=True) as tmp:
        Path(tmp).write_text(buffer.getvalue())
    return Path(path)


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history CSV as floats."""
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def plot_history(path: str | Path, rows: list[dict[str, float]], title: str) -> Path:
    """PNG of every logged value against the step, one panel per value."""
    names = [c for c in columns(rows) if c not in LEADING + ("seconds",)
             and not c.startswith("lr_")]
    n = max(1, len(names))
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.6 * cols,
                             2.6 * ((n + cols - 1) // cols)), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.plot(steps, [r.get(name, float("nan")) for r in rows], lw=1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)
