"""Engine cross-check: the same phantom and acquisition simulated by two engines, compared.

For each engine, per decay simulated (``primaries``): prompts, trues, scattered, randoms
and delayed coincidences, the scatter and random fractions, the energy spectrum of the
detected photons and the radial profile of the lines of response (distance of the LOR from
the scanner axis in the transaxial plane, from the two crystal centres). Rates are compared
as a ratio and as a z-score with Poisson errors; spectra and profiles as a chi-square per
bin of the per-decay histograms. Written: ``crosscheck.csv`` (one row per metric),
``crosscheck.md`` (the same table) and ``crosscheck.png`` (spectra and profiles).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_output
from pipeline.provenance import Origin, check_same_origin
from sim.listmode.file import ListMode, read_listmode

ENERGY_EDGES_KEV = np.arange(300.0, 705.0, 5.0)
RADIAL_EDGES_MM = np.arange(0.0, 122.0, 2.0)


@dataclass
class EngineSummary:
    """What one engine produced, per decay where it is a rate."""

    engine: str
    primaries: int
    counts: dict[str, int]
    energy_hist: np.ndarray  # photons per bin of ENERGY_EDGES_KEV (both photons)
    radial_hist: np.ndarray  # prompts per bin of RADIAL_EDGES_MM
    origin: Origin | None = None  # what the file records of its phantom and acquisition


def lor_radius_mm(data: ListMode) -> np.ndarray:
    """Distance of each prompt's LOR from the axis in the transaxial plane, mm, shape (n,)."""
    c = data.coincidences
    p1 = data.scanner.crystal_centres_mm(c["crystal1"])[:, :2]
    p2 = data.scanner.crystal_centres_mm(c["crystal2"])[:, :2]
    d = p2 - p1
    cross = np.abs(p1[:, 0] * p2[:, 1] - p1[:, 1] * p2[:, 0])
    return cross / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)


def summarise(path: str | Path) -> EngineSummary:
    """Counts and histograms of one list-mode file."""
    data = read_listmode(path)
    primaries = int(data.attrs["primaries"])
    if primaries <= 0:
        raise ValueError(f"{path}: attribute primaries is {primaries}; cannot compare per decay")
    c = data.coincidences
    counts = {"prompts": len(data), "delayed": int(data.delayed["crystal1"].shape[0])}
    if "kind" in c:
        for name, code in (("trues", 0), ("scattered", 1), ("randoms", 2)):
            counts[name] = int(np.count_nonzero(c["kind"] == code))
    energies = np.concatenate([c["energy1_kev"], c["energy2_kev"]])
    return EngineSummary(
        engine=str(data.attrs["engine"]), primaries=primaries, counts=counts,
        energy_hist=np.histogram(energies, ENERGY_EDGES_KEV)[0],
        radial_hist=np.histogram(lor_radius_mm(data), RADIAL_EDGES_MM)[0],
        origin=data.origin(path))


def _rate_row(name: str, na: int, pa: int, nb: int, pb: int) -> dict:
    """Per-1000-decay rates of two engines, their ratio and the Poisson z-score."""
    ra, rb = 1000 * na / pa, 1000 * nb / pb
    sigma = 1000 * np.sqrt(na / pa**2 + nb / pb**2)
    return {"metric": f"{name} per 1000 decays", "a": ra, "b": rb,
            "ratio_b_over_a": rb / ra if ra else np.nan,
            "z": (rb - ra) / sigma if sigma else np.nan}


def _fraction_row(name: str, ka: int, na: int, kb: int, nb: int) -> dict:
    """A fraction of the prompts in both engines, with a binomial z-score."""
    fa, fb = (ka / na if na else np.nan), (kb / nb if nb else np.nan)
    var = (fa * (1 - fa) / na if na else np.nan) + (fb * (1 - fb) / nb if nb else np.nan)
    return {"metric": f"{name} fraction", "a": fa, "b": fb,
            "ratio_b_over_a": fb / fa if fa else np.nan,
            "z": (fb - fa) / np.sqrt(var) if var else np.nan}


def histogram_chi2_per_bin(ha: np.ndarray, pa: int, hb: np.ndarray, pb: int) -> float:
    """Chi-square per bin between two per-decay histograms with Poisson errors
    (bins empty in both are skipped); ~1 when both engines agree within statistics."""
    ra, rb = ha / pa, hb / pb
    var = ha / pa**2 + hb / pb**2
    used = var > 0
    return float(np.sum((ra[used] - rb[used]) ** 2 / var[used]) / max(used.sum(), 1))


def compare(a: EngineSummary, b: EngineSummary) -> list[dict]:
    """Rows of the comparison table (``a`` is the reference, usually the GATE engine)."""
    rows = [{"metric": "decays simulated", "a": a.primaries, "b": b.primaries,
             "ratio_b_over_a": b.primaries / a.primaries, "z": np.nan}]
    for name in ("prompts", "trues", "scattered", "randoms", "delayed"):
        if name in a.counts and name in b.counts:
            rows.append(_rate_row(name, a.counts[name], a.primaries, b.counts[name],
                                  b.primaries))
    for name, key in (("scatter", "scattered"), ("random", "randoms")):
        if key in a.counts and key in b.counts:
            rows.append(_fraction_row(name, a.counts[key], a.counts["prompts"],
                                      b.counts[key], b.counts["prompts"]))
    for name, ha, hb in (("energy spectrum", a.energy_hist, b.energy_hist),
                         ("LOR radial profile", a.radial_hist, b.radial_hist)):
        rows.append({"metric": f"{name} chi2 per bin", "a": np.nan, "b": np.nan,
                     "ratio_b_over_a": np.nan,
                     "z": histogram_chi2_per_bin(ha, a.primaries, hb, b.primaries)})
    return rows


def _markdown(rows: list[dict], a: EngineSummary, b: EngineSummary) -> str:
    def fmt(v: float) -> str:
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4g}"

    lines = [f"| metric | a: {a.engine} | b: {b.engine} | b / a | z (or chi2/bin) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {fmt(r['a'])} | {fmt(r['b'])} | "
              f"{fmt(r['ratio_b_over_a'])} | {fmt(r['z'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def _plot(a: EngineSummary, b: EngineSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for summary, style in ((a, "-"), (b, "--")):
        label = f"{summary.engine} ({summary.primaries:,} decays)"
        for ax, hist, edges in ((axes[0], summary.energy_hist, ENERGY_EDGES_KEV),
                                (axes[1], summary.radial_hist, RADIAL_EDGES_MM)):
            ax.stairs(1000 * hist / summary.primaries, edges, linestyle=style, label=label)
    axes[0].set(xlabel="energy (keV)", ylabel="photons per 1000 decays per bin",
                title="energy spectrum of coincident photons")
    axes[1].set(xlabel="LOR distance from the axis (mm)", ylabel="prompts per 1000 decays per bin",
                title="radial profile of the lines of response")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write_crosscheck(a_h5: str | Path, b_h5: str | Path, out_dir: str | Path,
                     overwrite: bool = False) -> list[dict]:
    """Compare two list-mode files of the same phantom and acquisition; write the table and
    the plots into ``out_dir``. Returns the table rows.

    Files that record another phantom (name, dataset, grid or config), acquisition or
    scanner geometry are refused before anything is written (:mod:`pipeline.provenance`;
    a field either file does not record is not compared)."""
    a, b = summarise(a_h5), summarise(b_h5)
    check_same_origin(a.origin, b.origin, advice="a cross-check compares two simulations of "
                      "one phantom and acquisition on one scanner")
    rows = compare(a, b)
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["metric", "a", "b", "ratio_b_over_a", "z"])
    writer.writeheader()
    writer.writerows(rows)
    outputs = {"crosscheck.csv": buffer.getvalue(), "crosscheck.md": _markdown(rows, a, b)}
    for name, text in outputs.items():
        with atomic_output(out_dir / name, overwrite) as tmp:
            tmp.write_text(text)
    with atomic_output(out_dir / "crosscheck.png", overwrite) as tmp:
        _plot(a, b, tmp)
    return rows
