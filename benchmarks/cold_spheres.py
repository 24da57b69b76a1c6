"""Cold-sphere recovery against counts: the measurement behind the README's "Quantitative
images" table and issue 14's first criterion, reproducible from a fresh clone.

A tube of the default dataset's family with only steel inclusions and air bubbles of 6 to 8
mm in the solution is built (``python -m sim phantom``) and simulated with the embedded engine
at ``--statistics`` times the ``reference`` acquisition (600 kBq; 10 s at 1). From that
list-mode file, and from a copy holding only its trues (kind 0), the ``reconstruct`` command
makes five images, each with ``--iterations`` x ``--subsets`` OSEM:

* 2D trues, attenuation only, ``max_ring_difference`` 16 (the default) and 2;
* 2D all prompts, every correction (randoms, scatter, attenuation);
* 3D list-mode trues, attenuation only; 3D all prompts, every correction (``--skip-3d``
  leaves both out: they take minutes each at 10x).

``--kernel`` runs all five with the kernel method (``recon.kernel: mu``, :mod:`recon.kernel`).

For every sphere it prints the centre (``core``: the mean of the voxels wholly inside, over the
local background; 0 a fully recovered cold sphere, 1 an invisible one), the whole-sphere ratio
and the NEMA ROI CNR (``recon/detectability.py``), then the criterion: every core below 0.3
from trues (2D and 3D), below 0.35 from all prompts, and the 2D cores with
``max_ring_difference`` 16 and 2 within twice their combined noise.

Run: ``python benchmarks/cold_spheres.py --statistics 1 --out-dir /tmp/cold`` (about 6
minutes on 2 cores) or ``--statistics 10`` (about 20). Uses the repository's config.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_config  # noqa: E402
from sim.listmode.file import read_listmode, write_listmode  # noqa: E402

REFERENCE_DURATION_S = 10.0
#: name -> (list-mode: "trues" or "prompts", recon overrides)
RECONSTRUCTIONS = {
    "2D trues, mrd 16": ("trues", {"randoms": "none", "scatter": "none",
                                   "max_ring_difference": 16}),
    "2D trues, mrd 2": ("trues", {"randoms": "none", "scatter": "none",
                                  "max_ring_difference": 2}),
    "2D prompts, all corrections": ("prompts", {}),
    "3D trues": ("trues", {"mode": "3d", "randoms": "none", "scatter": "none"}),
    "3D prompts, all corrections": ("prompts", {"mode": "3d"}),
}


def overlay(statistics: float, seed: int, iterations: int, subsets: int) -> dict:
    """A config overlay: one tube of the default family with 4 cold spheres of 6-8 mm."""
    tubes = copy.deepcopy(load_config()["datasets"]["tubes"])
    tubes.update(n_phantoms=1, seed=seed, acquisitions=["cold"])
    tubes["defects"] = {"count": [4, 4],
                        "types": {"crack": 0.0, "hole": 0.0, "pit": 0.0, "inclusion": 1.0,
                                  "bubble": 1.0},
                        "inclusion": {"diameter_mm": [6.0, 8.0], "material": "steel"},
                        "bubble": {"diameter_mm": [6.0, 8.0]}}
    return {"run_datasets": ["cold_spheres"],
            "acquisitions": {"cold": {"activity_bq": 600000.0,
                                      "duration_s": REFERENCE_DURATION_S * statistics}},
            "datasets": {"cold_spheres": tubes},
            # The config must say which images a set cuts; no set is cut here.
            "positron_images": {"reference": "cold"},
            "train": {"methods": [], "acquisition": None},
            "recon": {"iterations": iterations, "subsets": subsets}}


def run(argv: list[str], log: Path) -> float:
    """Run a stage command (the venv's python), its output appended to ``log``; seconds."""
    start = time.perf_counter()
    with open(log, "a") as fh:
        done = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=fh,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def trues_only(src: Path, dst: Path) -> int:
    """Copy of a list-mode file with its trues only and no delayed window; their number."""
    data = read_listmode(src)
    keep = data.coincidences["kind"] == 0
    trues = {k: v[keep] for k, v in data.coincidences.items()}
    delayed = {k: v[:0] for k, v in data.delayed.items()}
    write_listmode(dst, trues, delayed, data.attrs, overwrite=True)
    return int(keep.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statistics", type=float, default=1.0,
                        help="multiple of the reference acquisition's 10 s (default 1)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2026, help="phantom seed")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--subsets", type=int, default=23)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-3d", action="store_true", help="2D reconstructions only")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the phantom and list-mode files of an earlier run in "
                             "--out-dir (same --statistics and --seed)")
    parser.add_argument("--kernel", action="store_true",
                        help="every reconstruction with the kernel method (recon.kernel: mu)")
    args = parser.parse_args()
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "cold_spheres.log"
    config = out / "cold_spheres.yaml"
    config.write_text(yaml.safe_dump(overlay(args.statistics, args.seed, args.iterations,
                                             args.subsets), sort_keys=False))
    common = ["--configfile", str(REPO / "config" / "config.yaml"), "--configfile", str(config),
              "--dataset", "cold_spheres"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; {args.threads} threads; "
          f"statistics {args.statistics:g} x reference; OSEM {args.iterations} x {args.subsets}"
          f"{'; kernel method (mu)' if args.kernel else ''}")
    phantom, prompts, trues = out / "phantom.h5", out / "prompts.h5", out / "trues.h5"
    reuse = args.reuse and all(p.exists() for p in (phantom, prompts, trues))
    if reuse:
        duration_s = float(read_listmode(prompts).attrs["duration_s"])
        if abs(duration_s - REFERENCE_DURATION_S * args.statistics) > 1e-9:
            raise SystemExit(f"--reuse: {prompts} is a {duration_s:g} s acquisition, not "
                             f"--statistics {args.statistics:g}; drop --reuse or change "
                             "--out-dir")
        print(f"reusing {phantom}, {prompts} and {trues}")
    else:
        seconds = run(["-m", "sim", "phantom", *common, "--phantom", "tube_0000", "--out",
                       str(phantom), "--overwrite"], log)
        print(f"phantom {seconds:.0f} s")
        seconds = run(["-m", "sim", "simulate", *common, "--phantom", "tube_0000",
                       "--acquisition", "cold", "--phantom-file", str(phantom), "--out",
                       str(prompts), "--threads", str(args.threads), "--overwrite"], log)
        n_trues = trues_only(prompts, trues)
        print(f"simulation {seconds:.0f} s: {len(read_listmode(prompts))} prompts, "
              f"{n_trues} trues")
    results = {}
    for name, (data, recon) in RECONSTRUCTIONS.items():
        if args.skip_3d and recon.get("mode") == "3d":
            continue
        settings = out / f"recon_{len(results)}.yaml"
        settings.write_text(yaml.safe_dump({"recon": {**recon, **(
            {"kernel": "mu"} if args.kernel else {})}}))
        image = out / f"recon_{len(results)}.h5"
        seconds = run(["-m", "recon", "reconstruct", *common, "--configfile", str(settings),
                       "--listmode", str(trues if data == "trues" else prompts),
                       "--phantom-file", str(phantom), "--out", str(image), "--overwrite",
                       "--threads", str(args.threads)], log)
        rows = json.loads(image.with_name(image.stem + "_defects.json").read_text())
        rows = rows["defects"] if isinstance(rows, dict) else rows
        results[name] = rows
        print(f"\n{name} ({seconds:.0f} s)")
        for r in rows:
            print(f"  {r['type']:9s} {r.get('material') or '':6s} {r['size_mm']:4.1f} mm: "
                  f"core {_f(r['core_ratio'])}  ratio {_f(r['ratio'])}  CNR {_f(r['cnr'])} "
                  f"({r['status']})")
    verdict(results)
    figure(out / "cold_spheres.png", phantom, [out / f"recon_{i}.h5" for i in range(len(results))],
           list(results))
    print(f"\nfigure: {out / 'cold_spheres.png'}")


def figure(path: Path, phantom_h5: Path, images: list[Path], names: list[str]) -> None:
    """One row per sphere (the slice through its centre, 40 mm around it), one column per
    image: the phantom's activity, then each reconstruction, each on its own grey scale from 0
    to its 99th percentile."""
    import h5py
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.phantoms.file import read_phantom
    phantom = read_phantom(phantom_h5)
    centres = [d["shape"]["centre_mm"] for d in phantom.defects]
    volumes = [(phantom.activity, np.asarray(phantom.origin_mm), np.asarray(phantom.voxel_size_mm))]
    for path_h5 in images:
        with h5py.File(path_h5) as fh:
            volumes.append((fh["image"][:], np.asarray(fh.attrs["origin_mm"]),
                            np.asarray(fh.attrs["voxel_size_mm"])))
    titles = ["truth (activity)", *names]
    fig, axes = plt.subplots(len(centres), len(volumes), squeeze=False,
                             figsize=(2.2 * len(volumes), 2.3 * len(centres)))
    for row, (x, y, z) in enumerate(centres):
        for col, (volume, origin, voxel) in enumerate(volumes):
            # origin is the centre of voxel 0 (the phantom file's convention)
            k = int(np.clip(np.rint((z - origin[0]) / voxel[0]), 0, volume.shape[0] - 1))
            lower = origin - voxel / 2
            extent = [lower[2], lower[2] + voxel[2] * volume.shape[2],
                      lower[1] + voxel[1] * volume.shape[1], lower[1]]
            ax = axes[row, col]
            ax.imshow(volume[k], cmap="gray", vmin=0, extent=extent,
                      vmax=np.percentile(volume[volume > 0], 99))
            ax.set_xlim(x - 20, x + 20)
            ax.set_ylim(y + 20, y - 20)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{phantom.defects[row]['type']} "
                              f"{phantom.defects[row]['diameter_mm']:.1f} mm", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)


def verdict(results: dict[str, list[dict]]) -> None:
    """The criterion, line by line."""
    print("\ncriterion")
    for name, rows in results.items():
        limit = 0.35 if "prompts" in name else 0.3
        cores = _values(rows, "core_ratio")
        print(f"  {name}: cores {np.round(cores, 2).tolist()} (all < {limit}: "
              f"{'yes' if np.all(cores < limit) else 'no'})")
    if {"2D trues, mrd 16", "2D trues, mrd 2"} <= set(results):
        keys = ("2D trues, mrd 16", "2D trues, mrd 2")
        a, b = (_values(results[k], "core_ratio") for k in keys)
        # The noise of a defect's value: the spread of the means of ROIs of its shape around
        # it (NEMA's background variability), relative to the background.
        noise = [_values(results[k], "std_roi") / _values(results[k], "mean_background")
                 for k in keys]
        z = np.abs(a - b) / np.hypot(*noise)
        print(f"  mrd 16 against 2: |difference| / noise = {np.round(z, 1).tolist()} "
              f"(within noise: {'yes' if np.all(z < 2) else 'no'})")


if __name__ == "__main__":
    main()
