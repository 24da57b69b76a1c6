"""The validation's outputs: one table and figure per phantom, and the summary of all.

Per phantom (:func:`validate_phantom`): ``validation.csv`` (one row per check, the columns of
:data:`COLUMNS`), ``validation.md`` (the same table under a verdict line) and
``validation.png`` (the prompts' distributions per decay of both engines, and a profile
through the mean image of each). The summary (:func:`summarise`) gathers the per-phantom
tables into one CSV and one markdown page: a line per phantom with its passes, fails and
unmeasured checks, then every failed check, reported as measured.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_output
from pipeline.provenance import PHANTOM_FIELDS, check_same_origin
from recon.image_io import read_recon
from recon.truth import activity_concentration
from sim.phantoms.file import read_phantom
from validation.images import ImageMeasures, image_rows, measure, source_roi
from validation.listmode import EngineSample, distribution_rows, rate_rows, summarise

COLUMNS = ("phantom", "check", "reference", "candidate", "difference", "statistic",
           "criterion", "status")


def defects_path(recon_h5: str | Path) -> Path:
    """The ``_defects.json`` a reconstruction writes beside its image."""
    recon_h5 = Path(recon_h5)
    return recon_h5.with_name(f"{recon_h5.stem}_defects.json")


def _fmt(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def _cell(value) -> str:
    """A markdown table cell (a ``|`` inside would end it)."""
    return _fmt(value).replace("|", "\\|")


def _markdown(title: str, rows: list[dict], header: str) -> str:
    counts = _verdict(rows)
    lines = [f"# {title}", "", header, "",
             f"**{counts['pass']} pass, {counts['fail']} fail, {counts['other']} not decided** "
             "(too few events, or a defect not measured)", "",
             "| check | reference | candidate | difference | statistic | criterion | status |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(r[k]) for k in COLUMNS[1:]) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _verdict(rows: list[dict]) -> dict[str, int]:
    status = [r["status"] for r in rows]
    return {"pass": status.count("pass"), "fail": status.count("fail"),
            "other": sum(s not in ("pass", "fail") for s in status)}


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows({k: _fmt(r[k]) for k in COLUMNS} for r in rows)
    return buffer.getvalue()


def _plot(reference: EngineSample, candidate: EngineSample, profiles: dict[str, np.ndarray],
          x_mm: np.ndarray, y_mm: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = list(reference.edges)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, feature in zip(axes.flat, features, strict=False):
        for sample, style in ((reference, "-"), (candidate, "--")):
            h = sample.histograms[("prompts", feature)]
            ax.stairs(1e3 * h / sample.primaries, sample.edges[feature], linestyle=style,
                      label=f"{sample.engine} ({sample.files} x, {sample.primaries:,} decays)")
        ax.set(xlabel=feature.replace("_", " "), ylabel="prompts per 1000 decays per bin")
    ax = axes.flat[len(features)]
    for (engine, profile), style in zip(profiles.items(), ("-", "--"), strict=False):
        ax.plot(x_mm, profile, linestyle=style, label=engine)
    ax.set(xlabel=f"x (mm) through the source ROI's centre (y = {y_mm:.0f} mm)",
           ylabel="mean image over realisations")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def _images(recons: list[Path], phantom, roi: np.ndarray | None
            ) -> tuple[list[ImageMeasures], np.ndarray, np.ndarray]:
    """Measures of each reconstruction, the mean image's profile along x through the
    centre of the source ROI (of the grid without one), its x coordinates and its y (mm)."""
    measures, total = [], None
    for path in recons:
        measures.append(measure(path, defects_path(path), phantom, roi))
        image = read_recon(path)
        total = image.image.astype(np.float64) if total is None else total + image.image
    grid = image.grid
    # Through the source: the plane and row of the ROI's centre (the NEMA line source is
    # off the axis), else of the grid's.
    centre = (np.round(np.argwhere(roi).mean(axis=0)).astype(int)
              if roi is not None and roi.any() else np.array(grid.shape) // 2)
    return (measures, total[centre[0], centre[1]] / len(recons), grid.centres_mm(2),
            float(grid.centres_mm(1)[centre[1]]))


def validate_phantom(phantom_h5: str | Path, reference_listmode: list[str | Path],
                     candidate_listmode: list[str | Path], reference_recon: list[str | Path],
                     candidate_recon: list[str | Path], out_dir: str | Path,
                     overwrite: bool = False) -> list[dict]:
    """Compare a candidate engine with the reference on one phantom (module docstring) and
    write the table and figure into ``out_dir``; returns the rows.

    Refused before anything is written: files of another phantom, acquisition or scanner
    (:mod:`pipeline.provenance`), and reconstructions in another number than their
    list-mode files."""
    phantom_h5 = Path(phantom_h5)
    for name, listmode, recons in (("reference", reference_listmode, reference_recon),
                                   ("candidate", candidate_listmode, candidate_recon)):
        if len(listmode) != len(recons) or not listmode:
            raise ValueError(f"{name}: {len(listmode)} list-mode files and {len(recons)} "
                             "reconstructions; give one reconstruction per realisation")
    reference, candidate = summarise(reference_listmode), summarise(candidate_listmode)
    check_same_origin(reference.origin, candidate.origin,
                      advice="the validation compares two engines on one phantom and "
                             "acquisition")
    phantom = read_phantom(phantom_h5)
    check_same_origin(reference.origin, phantom.origin(phantom_h5), PHANTOM_FIELDS,
                      advice="give the phantom file the list-mode files were simulated from")
    grid = read_recon(reference_recon[0]).grid
    roi = source_roi(activity_concentration(phantom, grid))
    ref_images, ref_profile, x_mm, y_mm = _images([Path(p) for p in reference_recon],
                                                  phantom, roi)
    cand_images, cand_profile, _, _ = _images([Path(p) for p in candidate_recon], phantom, roi)
    fields = reference.origin.fields
    name = f"{fields.get('dataset') or '?'}/{fields.get('phantom') or phantom_h5.stem}"
    rows = [{"phantom": name, **r} for r in (rate_rows(reference, candidate)
                                             + distribution_rows(reference, candidate)
                                             + image_rows(ref_images, cand_images))]
    header = (f"Candidate engine `{candidate.engine}` against the reference "
              f"`{reference.engine}`: {reference.files} and {candidate.files} realisations, "
              f"{reference.primaries:,} and {candidate.primaries:,} decays in all; "
              f"{reference.events['prompts']:,} and {candidate.events['prompts']:,} prompts.")
    out_dir = Path(out_dir)
    for filename, text in (("validation.csv", _csv(rows)),
                           ("validation.md", _markdown(f"Engine validation: {name}", rows,
                                                       header))):
        with atomic_output(out_dir / filename, overwrite) as tmp:
            tmp.write_text(text)
    with atomic_output(out_dir / "validation.png", overwrite) as tmp:
        _plot(reference, candidate, {reference.engine: ref_profile,
                                     candidate.engine: cand_profile}, x_mm, y_mm, tmp)
    return rows


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a per-phantom ``validation.csv``."""
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(COLUMNS) - set(rows[0]):
        raise ValueError(f"{path}: not a validation table (columns {', '.join(COLUMNS)})")
    return rows


def summarise_tables(tables: list[str | Path], out_md: str | Path, out_csv: str | Path,
                     overwrite: bool = False) -> dict[str, int]:
    """One summary of the per-phantom tables (module docstring); returns the totals."""
    rows = [r for path in tables for r in read_rows(path)]
    phantoms = list(dict.fromkeys(r["phantom"] for r in rows))
    lines = ["# Statistical engine against the Monte Carlo", "",
             "| phantom | pass | fail | not decided |", "|---|---|---|---|"]
    for p in phantoms:
        v = _verdict([r for r in rows if r["phantom"] == p])
        lines.append(f"| {p} | {v['pass']} | {v['fail']} | {v['other']} |")
    total = _verdict(rows)
    lines += ["", f"**All: {total['pass']} pass, {total['fail']} fail, {total['other']} not "
              "decided.**", "", "## Failed checks (as measured)", ""]
    failed = [r for r in rows if r["status"] == "fail"]
    if failed:
        lines += ["| phantom | check | reference | candidate | difference | statistic | "
                  "criterion |", "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_cell(r[k]) for k in ("phantom", "check", "reference",
                                                   "candidate", "difference", "statistic",
                                                   "criterion")) + " |" for r in failed]
    else:
        lines.append("None.")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    for path, text in ((out_md, "\n".join(lines) + "\n"), (out_csv, buffer.getvalue())):
        with atomic_output(Path(path), overwrite) as tmp:
            tmp.write_text(text)
    return total
