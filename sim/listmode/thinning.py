"""Fewer counts from one acquisition: binomial thinning of a coincidence histogram or of a
list-mode file.

Keeping every coincidence of a Poisson process independently with probability ``f`` gives
a Poisson process with ``f`` times the mean (the thinning theorem), so a thinned file is an
exact low-count acquisition of the same phantom: what list-mode subsampling of a long scan
gives in practice (the standard way to make matched low-count data of real scans). Trues,
scattered, randoms and delayed coincidences all scale with the scan's duration, so the
thinned file stands for the same activity scanned for ``f`` of the duration (at the frame's
mean activity: with a decaying source a thinned 30-minute scan is not the first minute of
it); its attributes say so (``duration_s`` and ``primaries`` times ``f``,
``thinned_fraction``, the thinned file and the seed).

* list-mode: each event of both groups is kept with probability ``f`` (every column of the
  kept events unchanged, their order kept);
* coincidence histogram: each pair's count of each kind (trues, scattered, randoms, or the
  count when the file has no kinds; the delayed counts) is drawn ``Binomial(n, f)``, and
  pairs left with no count are dropped.

Files thinned from one acquisition at several fractions share counts (they are not
independent noise realisations); thinning the same file with other seeds does not give
independent ones either.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sim.listmode.file import read_listmode, write_listmode
from sim.listmode.histogram import (
    KINDS,
    PairCounts,
    is_histogram,
    read_histogram,
    write_histogram,
)


def check_fraction(fraction: float) -> float:
    """``fraction`` as a float in (0, 1]; refused naming what is wrong."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"fraction {fraction!r} is not a number") from None
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"fraction {fraction!r} must be a finite number in (0, 1]")
    return value


def thinned_attrs(attrs: dict, fraction: float, source: str | Path, seed: int) -> dict:
    """The attributes of a file thinned from one with ``attrs`` (module docstring)."""
    out = dict(attrs)
    out["duration_s"] = float(attrs["duration_s"]) * fraction
    out["primaries"] = int(round(int(attrs["primaries"]) * fraction))
    out["thinned_fraction"] = float(attrs.get("thinned_fraction", 1.0)) * fraction
    out["thinned_from"] = str(source)
    out["thinning_seed"] = int(seed)
    out.pop("counts", None)  # the engine's counts are the source's
    return out


def _thin_rows(counts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    return rng.binomial(counts.astype(np.int64), fraction).astype(np.int64)


def _thin_group(columns: dict[str, np.ndarray], n_crystals: int, fraction: float,
                rng: np.random.Generator, by_kind: bool) -> PairCounts:
    """A histogram group's counts thinned, as :class:`PairCounts` (kinds kept apart)."""
    counts = PairCounts(n_crystals, by_kind=by_kind)
    keys = (columns["crystal1"].astype(np.int64) * n_crystals
            + columns["crystal2"].astype(np.int64))
    kinds = KINDS if by_kind else ("count",)
    thinned = np.stack([_thin_rows(columns[k], fraction, rng) for k in kinds], axis=1)
    if not by_kind:
        thinned = np.concatenate([thinned, np.zeros((thinned.shape[0], 2), np.int64)], axis=1)
    keep = thinned.sum(axis=1) > 0
    counts.keys, counts.counts = keys[keep], thinned[keep]
    return counts


def thin_file(source: str | Path, out: str | Path, fraction: float, seed: int,
              overwrite: bool = False) -> dict[str, int]:
    """Thin the list-mode or histogram file ``source`` to ``fraction`` of its counts
    (random numbers from ``default_rng(seed)``) and write it atomically to ``out``.

    Returns the prompts and delayed coincidences kept.
    """
    fraction = check_fraction(fraction)
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.resolve() == source.resolve():
        raise ValueError(f"{out}: the thinned file cannot replace its source")
    rng = np.random.default_rng(seed)
    if is_histogram(source):
        data = read_histogram(source)
        by_kind = all(k in data.coincidences for k in KINDS)
        prompts = _thin_group(data.coincidences, data.scanner.n_crystals, fraction, rng,
                              by_kind)
        delayed = _thin_group(data.delayed, data.scanner.n_crystals, fraction, rng, False)
        attrs = thinned_attrs(data.attrs, fraction, source, seed)
        write_histogram(out, prompts, delayed, attrs, overwrite)
        return {"prompts": int(prompts.counts.sum()), "delayed": int(delayed.counts.sum())}
    data = read_listmode(source)
    kept = {}
    for group in ("coincidences", "delayed"):
        columns = getattr(data, group)
        n = len(next(iter(columns.values())))
        keep = rng.random(n) < fraction
        kept[group] = {k: v[keep] for k, v in columns.items()}
    attrs = thinned_attrs(data.attrs, fraction, source, seed)
    attrs.pop("format", None)
    write_listmode(out, kept["coincidences"], kept["delayed"], attrs, overwrite=overwrite)
    return {"prompts": int(kept["coincidences"]["crystal1"].size),
            "delayed": int(kept["delayed"]["crystal1"].size)}


def describe(counts: dict[str, int]) -> str:
    """One line for the command's log."""
    return json.dumps(counts, sort_keys=True)
