"""Defect recovery against noise along the OSEM iterations: the curve the default iterations,
subsets and post-filter are chosen from.

For each phantom of a dataset, its list-mode file is rebinned and reconstructed exactly as the
``reconstruct`` rule does (``recon.stage.reconstruct_rebinned``, the configured SSRB model and
corrections), and after every iteration, with each post-filter, the script records per defect
the contrast recovery coefficient against the truth and the contrast-to-noise ratio
(:mod:`recon.detectability`), and the noise of the image: the coefficient of variation of the
voxels of the solution's bulk (NEMA NU 2's background variability, per voxel). Cold defects
(inclusions, bubbles) and hot ones (cracks, holes, pits: solution in the wall) are averaged
separately.

Writes ``recovery_curve.csv`` (one row per phantom, defect, iteration, post-filter) and
``recovery_curve.png`` (mean CRC of cold and hot defects against noise, one curve per
post-filter, iterations marked) into ``--out-dir``.

Run: ``python benchmarks/recovery_curve.py --dataset tubes --acquisition reference
[--iterations 12 --subsets 4 --postfilter 0 3 5 --threads 2]``; the results of the dataset
must exist (``make run``).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.config import load_config
from pipeline.specs import phantom_names, recon_spec  # noqa: E402
from recon.detectability import measure_defects  # noqa: E402
from recon.recon2d import sinogram_stack  # noqa: E402
from recon.stage import (  # noqa: E402
    _read_mu,
    geometry_of,
    image_grid_of,
    max_ring_difference,
    postfilter,
    reconstruct_rebinned,
)
from recon.system_matrix import build_system_matrix  # noqa: E402
from recon.truth import activity_concentration  # noqa: E402
from sim.listmode.file import read_listmode  # noqa: E402

COLD = ("inclusion", "bubble")


def bulk_cv(image: np.ndarray, truth: np.ndarray) -> float:
    """Standard deviation over mean of the voxels at the solution's full activity."""
    bulk = truth >= 0.99 * truth.max()
    values = image[bulk]
    return float(values.std() / values.mean())


def curve_rows(spec, phantom_h5: Path, listmode_h5: Path, filters_mm: list[float]):
    """Rows of one phantom: every defect after every iteration with every post-filter."""
    geometry, grid = geometry_of(spec), image_grid_of(spec)
    phantom, mu_grid = _read_mu(phantom_h5, spec, grid)
    data = read_listmode(listmode_h5)
    counts = sinogram_stack(data.coincidences["crystal1"], data.coincidences["crystal2"],
                            geometry, grid, max_ring_difference(spec))
    truth = activity_concentration(phantom, grid)
    rows = []

    def record(iteration: int, image: np.ndarray) -> None:
        for fwhm in filters_mm:
            filtered = postfilter(image.astype(np.float32), grid, fwhm)
            noise = bulk_cv(filtered, truth)
            for r in measure_defects(filtered, grid, phantom):
                rows.append({"phantom": phantom_h5.stem, "iteration": iteration + 1,
                             "postfilter_fwhm_mm": fwhm, "noise_cv": noise, "label": r["label"],
                             "type": r["type"], "size_mm": r["size_mm"], "crc": r["crc"],
                             "ratio": r["ratio"], "cnr": r["cnr"], "status": r["status"]})

    system = build_system_matrix(geometry, grid)
    start = time.perf_counter()
    reconstruct_rebinned(spec, data, counts, geometry, grid, system,
                         phantom if spec["recon"]["attenuation_correction"] else None, mu_grid,
                         "cpu", record)
    return rows, time.perf_counter() - start


def plot(rows: list[dict], path: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    filters = sorted({r["postfilter_fwhm_mm"] for r in rows})
    for ax, (name, kinds) in zip(axes, (("cold defects", COLD), ("hot defects", None)),
                                 strict=True):
        for fwhm in filters:
            its = sorted({r["iteration"] for r in rows})
            x, y = [], []
            for it in its:
                sel = [r for r in rows if r["iteration"] == it and r["postfilter_fwhm_mm"] == fwhm
                       and r["status"] == "ok"
                       and ((r["type"] in COLD) if kinds else (r["type"] not in COLD))]
                if sel:
                    x.append(np.mean([r["noise_cv"] for r in sel]))
                    y.append(np.mean([r["crc"] for r in sel]))
            if x:
                ax.plot(x, y, "o-", label=f"post-filter {fwhm:g} mm", ms=3)
                for it, xi, yi in zip(its, x, y, strict=False):
                    if it in (1, 3, 6, 10) or it == its[-1]:
                        ax.annotate(str(it), (xi, yi), fontsize=7, xytext=(2, 2),
                                    textcoords="offset points")
        ax.set_title(name)
        ax.set_xlabel("noise: CV of the solution's voxels")
        ax.set_ylabel("mean contrast recovery (CRC)")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", default=[])
    parser.add_argument("--dataset", default="tubes")
    parser.add_argument("--acquisition", default="reference")
    parser.add_argument("--phantoms", nargs="*", help="default: every phantom of the dataset")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--subsets", type=int, help="default: the config's recon.subsets")
    parser.add_argument("--postfilter", type=float, nargs="+", default=[0.0, 3.0, 5.0],
                        help="post-filter FWHMs to compare, mm")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the rule's)")
    parser.add_argument("--out-dir", default="benchmarks/out/recovery_curve")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(*args.configfile)
    spec = recon_spec(config, args.dataset)
    spec["recon"]["iterations"] = args.iterations
    if args.subsets:
        spec["recon"]["subsets"] = args.subsets
    results = Path("results") / args.dataset
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__} ({args.threads} threads)")
    rows = []
    for name in args.phantoms or phantom_names(config, args.dataset):
        these, seconds = curve_rows(spec, results / "phantoms" / f"{name}.h5",
                                    results / "listmode" / name / f"{args.acquisition}.h5",
                                    args.postfilter)
        rows += these
        print(f"{name}: {args.iterations} iterations x {spec['recon']['subsets']} subsets in "
              f"{seconds:.1f} s ({spec['recon']['ssrb_model']} SSRB model)")
    with open(out / "recovery_curve.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for fwhm in args.postfilter:
        for it in sorted({r["iteration"] for r in rows}):
            sel = [r for r in rows if r["iteration"] == it and r["postfilter_fwhm_mm"] == fwhm
                   and r["status"] == "ok"]
            cold = [r["crc"] for r in sel if r["type"] in COLD]
            hot = [r["crc"] for r in sel if r["type"] not in COLD]
            print(f"post-filter {fwhm:g} mm, iteration {it:2d}: noise CV "
                  f"{np.mean([r['noise_cv'] for r in sel]):.3f}, cold CRC "
                  f"{np.mean(cold) if cold else float('nan'):.3f} ({len(cold)}), hot CRC "
                  f"{np.mean(hot) if hot else float('nan'):.3f} ({len(hot)}), mean CNR "
                  f"{np.nanmean([r['cnr'] for r in sel]):.2f}")
    plot(rows, out / "recovery_curve.png",
         f"{args.dataset} {args.acquisition}, {spec['recon']['subsets']} subsets, "
         f"{spec['recon']['ssrb_model']} SSRB model")
    print(f"wrote {out / 'recovery_curve.csv'} and {out / 'recovery_curve.png'}")


if __name__ == "__main__":
    main()
