"""Two engines' list-mode files of one phantom compared: rates per decay and distributions.

Each engine is given several realisations (independent seeds) of the same phantom and
acquisition; counts and histograms are summed over them, so the rates are per decay of all
realisations together. Compared, with the candidate engine against the reference:

* **rates** of prompts, trues, scattered, randoms and delayed coincidences per decay: the
  relative difference and the Poisson z-score; a rate passes within ``RATE_TOLERANCE``
  (relative) or ``RATE_SIGMAS`` standard deviations, whichever is larger;
* **scatter fraction** ``S / (T + S)`` (NEMA NU 2's, on the truth ``kind`` column): passes
  within ``FRACTION_TOLERANCE`` (an absolute difference, 1 percentage point);
* **distributions** of the prompts, trues and scattered coincidences: the LOR's distance from
  the axis (radial), its transaxial angle (angular), the ring sum (axial: the rebinned
  plane), the ring difference, and the energies of both photons. Two histograms with
  different totals are compared by the two-sample chi-square of Press et al. (Numerical
  Recipes, 3rd ed., section 14.3.2):
  ``chi2 = sum_i (sqrt(B/A) a_i - sqrt(A/B) b_i)^2 / (a_i + b_i)`` over bins not empty in
  both, with (bins - 1) degrees of freedom. It compares shapes only (the rates are compared
  above). A distribution passes at ``p > P_MIN``; with fewer than ``MIN_EVENTS`` events in
  either engine its status says so, as too few events cannot show a difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.stats

from pipeline.provenance import Origin, check_same_origin
from sim.listmode.crosscheck import ENERGY_EDGES_KEV, RADIAL_EDGES_MM, lor_radius_mm
from sim.listmode.file import ListMode, read_listmode

RATE_TOLERANCE = 0.02
RATE_SIGMAS = 3.0
FRACTION_TOLERANCE = 0.01
P_MIN = 0.01
MIN_EVENTS = 1_000_000

KINDS = {"prompts": None, "trues": 0, "scattered": 1}
RATES = ("prompts", "trues", "scattered", "randoms", "delayed")


def _edges(scanner) -> dict[str, np.ndarray]:
    """Bin edges of every feature; integer features get one bin per value."""
    return {"radial_mm": RADIAL_EDGES_MM,
            "angle_deg": np.linspace(0.0, 180.0, scanner.crystals_per_ring // 2 + 1),
            "ring_sum": np.arange(2 * scanner.rings) - 0.5,
            "ring_difference": np.arange(scanner.rings + 1) - 0.5,
            "energy_kev": ENERGY_EDGES_KEV}


def features(data: ListMode, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    """Per-coincidence features of the prompts ``rows``: radial distance of the LOR from the
    axis (mm, from the crystal centres), its transaxial angle (degrees in [0, 180)), ring sum
    and ring difference, shape (n,) each; and both photons' energies (keV, shape (2 n,))."""
    c = {k: data.coincidences[k][rows]
         for k in ("crystal1", "crystal2", "energy1_kev", "energy2_kev")}
    scanner = data.scanner
    p1 = scanner.crystal_centres_mm(c["crystal1"])
    p2 = scanner.crystal_centres_mm(c["crystal2"])
    d = p2 - p1
    angle = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 180.0
    r1, _ = scanner.ring_and_index(c["crystal1"])
    r2, _ = scanner.ring_and_index(c["crystal2"])
    r1, r2 = r1.astype(np.int64), r2.astype(np.int64)
    radial = lor_radius_mm(ListMode(c, data.delayed, data.attrs, scanner))
    return {"radial_mm": radial, "angle_deg": angle, "ring_sum": r1 + r2,
            "ring_difference": np.abs(r1 - r2),
            "energy_kev": np.concatenate([c["energy1_kev"], c["energy2_kev"]])}


@dataclass
class EngineSample:
    """Counts and histograms of one engine's realisations, summed.

    ``histograms[(kind, feature)]`` holds the counts per bin of :func:`_edges`; ``events``
    the coincidences of each kind."""

    engine: str
    files: int = 0
    primaries: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATES, 0))
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    histograms: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    origin: Origin | None = None


def summarise(paths: list[str | Path]) -> EngineSample:
    """Sum the counts and histograms of one engine's list-mode files (realisations of one
    phantom and acquisition; refused when they record different phantoms or engines)."""
    sample: EngineSample | None = None
    for path in paths:
        data = read_listmode(path)
        engine = str(data.attrs.get("engine", "?"))
        primaries = int(data.attrs["primaries"])
        if primaries <= 0:
            raise ValueError(f"{path}: attribute primaries is {primaries}; cannot compare "
                             "per decay")
        kind = data.coincidences.get("kind")
        if kind is None:
            raise ValueError(f"{path}: no kind column; the validation needs the truth of "
                             "each coincidence")
        if sample is None:
            sample = EngineSample(engine, edges=_edges(data.scanner),
                                  origin=data.origin(path))
        else:
            if engine != sample.engine:
                raise ValueError(f"{path}: engine {engine}, the other files {sample.engine}")
            check_same_origin(sample.origin, data.origin(path),
                              advice="the realisations of one engine are one phantom and "
                                     "acquisition")
        sample.files += 1
        sample.primaries += primaries
        kinds = np.bincount(kind, minlength=3)
        for name, value in (("prompts", len(data)), ("trues", kinds[0]),
                            ("scattered", kinds[1]), ("randoms", kinds[2]),
                            ("delayed", data.delayed["crystal1"].shape[0])):
            sample.counts[name] += int(value)
        for name, code in KINDS.items():
            rows = slice(None) if code is None else np.flatnonzero(kind == code)
            values = features(data, rows)
            sample.events[name] += values["radial_mm"].size
            for feature, edges in sample.edges.items():
                h = np.histogram(values[feature], edges)[0]
                key = (name, feature)
                sample.histograms[key] = sample.histograms.get(key, 0) + h
    if sample is None:
        raise ValueError("no list-mode files to summarise")
    return sample


def two_sample_chi2(a: np.ndarray, b: np.ndarray) -> tuple[float, int, float]:
    """Chi-square of two histograms of different totals having one shape (module
    docstring): (chi2, degrees of freedom, p-value). Bins empty in both are left out."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    used = (a + b) > 0
    a, b = a[used], b[used]
    total_a, total_b = a.sum(), b.sum()
    dof = int(used.sum()) - 1
    if total_a == 0 or total_b == 0 or dof < 1:
        return float("nan"), max(dof, 0), float("nan")
    chi2 = float(np.sum((np.sqrt(total_b / total_a) * a - np.sqrt(total_a / total_b) * b) ** 2
                        / (a + b)))
    return chi2, dof, float(scipy.stats.chi2.sf(chi2, dof))


def rate_rows(reference: EngineSample, candidate: EngineSample) -> list[dict]:
    """Rates per decay and the scatter fraction (module docstring), one row each."""
    rows = []
    for name in RATES:
        na, nb = reference.counts[name], candidate.counts[name]
        ra, rb = na / reference.primaries, nb / candidate.primaries
        sigma = np.sqrt(na / reference.primaries**2 + nb / candidate.primaries**2)
        rel = (rb - ra) / ra if ra else np.nan
        z = (rb - ra) / sigma if sigma else np.nan
        ok = bool(abs(rb - ra) <= max(RATE_TOLERANCE * ra, RATE_SIGMAS * sigma))
        rows.append({"check": f"{name} per decay", "reference": ra, "candidate": rb,
                     "difference": rel, "statistic": z, "criterion":
                     f"|relative| <= {RATE_TOLERANCE:g} or |z| <= {RATE_SIGMAS:g}",
                     "status": "pass" if ok else "fail"})
    fractions = []
    for sample in (reference, candidate):
        t, s = sample.counts["trues"], sample.counts["scattered"]
        fractions.append((s / (t + s) if t + s else np.nan, t + s))
    (fa, na), (fb, nb) = fractions
    se = np.sqrt(fa * (1 - fa) / na + fb * (1 - fb) / nb) if na and nb else np.nan
    ok = bool(abs(fb - fa) <= FRACTION_TOLERANCE)
    rows.append({"check": "scatter fraction S/(T+S)", "reference": fa, "candidate": fb,
                 "difference": fb - fa, "statistic": (fb - fa) / se if se else np.nan,
                 "criterion": f"|difference| <= {FRACTION_TOLERANCE:g}",
                 "status": "pass" if ok else "fail"})
    return rows


def distribution_rows(reference: EngineSample, candidate: EngineSample) -> list[dict]:
    """One row per kind and feature: the two-sample chi-square and its p-value."""
    rows = []
    for (kind, feature), a in reference.histograms.items():
        b = candidate.histograms[(kind, feature)]
        chi2, dof, p = two_sample_chi2(a, b)
        n = min(reference.events[kind], candidate.events[kind])
        if n < MIN_EVENTS:
            status = f"too few events ({n} < {MIN_EVENTS})"
        else:
            status = "pass" if p > P_MIN else "fail"
        rows.append({"check": f"{kind} {feature} distribution", "reference":
                     reference.events[kind], "candidate": candidate.events[kind],
                     "difference": chi2 / dof if dof else np.nan, "statistic": p,
                     "criterion": f"chi2 p > {P_MIN:g} (difference: chi2/dof, "
                                  f"statistic: p; {dof} dof)", "status": status})
    return rows
