"""Benchmark: the statistical engine against the embedded Monte Carlo, side by side.

Builds the default tube phantom (dataset ``tubes``, phantom ``tube_0000`` of
``config/config.yaml``), calibrates the detector response once (or reads ``--response``),
then simulates the same phantom at the same expected decays with both engines, through
the ``simulate`` stage's own entry point (:func:`sim.engines.stage.run_simulation`: the
file written as in the workflow, list-mode for the Monte Carlo, a coincidence histogram for
the statistical engine), at every level of ``--decays`` (600 kBq, the duration set by the
decays). The statistical engine runs three times per level: preparing the phantom itself
(a standalone job), reading the preparation made once beforehand (the workflow's
``statistical_prep`` rule; its time is printed once), and reading it with the trues
counted per line (``simulation.statistical.trues: lines``). It prints, per level, each
run's wall time, decays per second, prompts and file size, and the ratios of decays per
second.

The response calibration is made once per scanner and is not counted in the ratio; its
time is printed.

Run from the repository root (``--threads`` workers for both engines)::

    python benchmarks/bench_statistical.py [--decays 6e5 6e6 3e7] [--threads 2]
        [--response results/calibration/response.h5] [--photons-per-cell 400]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.specs import simulate_spec, statistical_prep_spec  # noqa: E402
from sim.engines.embedded.digitizer import DigitizerSettings  # noqa: E402
from sim.engines.stage import run_simulation  # noqa: E402
from sim.engines.statistical.engine import StatisticalSettings  # noqa: E402
from sim.engines.statistical.preparation import prepare, write_preparation  # noqa: E402
from sim.engines.statistical.response import calibrate  # noqa: E402
from sim.engines.statistical.response_file import write_response  # noqa: E402
from sim.phantoms.file import read_phantom  # noqa: E402
from sim.phantoms.spec import phantom_spec  # noqa: E402
from sim.phantoms.stage import build_phantom  # noqa: E402
from sim.scanner.geometry import Scanner  # noqa: E402

ACTIVITY_BQ = 6e5


def _load() -> float:
    """Mean number of runnable processes over the last minute (how busy the machine is)."""
    return os.getloadavg()[0]


def _simulate(spec: dict, phantom_h5: Path, out_h5: Path, threads: int,
              response_h5: Path, prep_h5: Path | None = None) -> tuple[dict, float, dict]:
    start = time.perf_counter()
    counts = run_simulation(spec, phantom_h5, out_h5, workers=threads, overwrite=True,
                            response_h5=response_h5 if spec["engine"] == "statistical" else None,
                            prep_h5=prep_h5)
    wall_s = time.perf_counter() - start
    with h5py.File(out_h5) as f:
        timings = json.loads(f.attrs.get("timings_s", "{}"))
    size_mb = out_h5.stat().st_size / 1e6
    out_h5.unlink()
    return counts, wall_s, {**timings, "file_mb": size_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decays", type=float, nargs="+", default=[6e5, 6e6, 3e7])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--response", type=Path, default=None,
                        help="detector response file (made here when not given)")
    parser.add_argument("--photons-per-cell", type=int, default=400,
                        help="calibration photons per cell when --response is not given")
    args = parser.parse_args()

    config = load_config()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"python {platform.python_version()}, numpy {np.__version__}; load average "
          f"{_load():.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phantom_h5 = tmp / "tube_0000.h5"
        build_phantom(phantom_spec(config, "tubes", "tube_0000"), phantom_h5)
        response_h5 = args.response
        if response_h5 is None:
            response_h5 = tmp / "response.h5"
            scanner_cfg = config["scanner"]
            start = time.perf_counter()
            response = calibrate(Scanner.from_config(scanner_cfg),
                                 DigitizerSettings.from_config(scanner_cfg),
                                 args.photons_per_cell, seed=511)
            write_response(response_h5, response, {"photons_per_cell": args.photons_per_cell})
            print(f"response calibration ({args.photons_per_cell} photons per cell, once per "
                  f"scanner, not in the ratios): {time.perf_counter() - start:.1f} s")
        base = simulate_spec(config, "tubes", "tube_0000", "reference")
        # The workflow's way: the phantom's preparation once, shared by its acquisitions.
        prep_spec = statistical_prep_spec(config, "tubes", "tube_0000")
        start = time.perf_counter()
        prep = prepare(read_phantom(phantom_h5), prep_spec,
                       StatisticalSettings.from_config(prep_spec["simulation"]).background_decays,
                       int(prep_spec["seed"]), workers=args.threads)
        prep_h5 = write_preparation(tmp / "prep.h5", prep, prep_spec, {})
        prep_s = time.perf_counter() - start
        print(f"phantom tubes/tube_0000, {ACTIVITY_BQ:.3g} Bq, {args.threads} worker(s) for "
              f"both engines; statistical preparation (once per phantom): {prep_s:.1f} s\n")
        print(f"{'decays':>10s} {'run':>12s} {'wall s':>8s} {'decays/s':>10s} "
              f"{'prompts':>9s} {'file MB':>8s}  fixed part")
        rows = []
        runs = (("fast", "fast", None, "thinning"),
                ("statistical", "statistical", None, "thinning"),
                ("stat+prep", "statistical", prep_h5, "thinning"),
                ("lines+prep", "statistical", prep_h5, "lines"))
        for decays in args.decays:
            walls = {}
            for label, engine, prep_file, trues in runs:
                spec = copy.deepcopy(base)
                spec["engine"] = engine
                spec["simulation"]["statistical"]["trues"] = trues
                spec["acquisition"].update(activity_bq=ACTIVITY_BQ,
                                           duration_s=decays / ACTIVITY_BQ)
                counts, wall_s, timings = _simulate(spec, phantom_h5, tmp / f"{label}.h5",
                                                    args.threads, response_h5, prep_file)
                walls[label] = wall_s
                fixed = (f"{timings['phantom']:.1f} s preparation"
                         if engine == "statistical" else "")
                print(f"{decays:>10.3g} {label:>12s} {wall_s:>8.1f} "
                      f"{counts['primaries'] / wall_s:>10.3g} {counts['prompts']:>9d} "
                      f"{timings['file_mb']:>8.1f}  {fixed}")
            rows.append((decays, walls["fast"] / walls["statistical"],
                         walls["fast"] / walls["stat+prep"],
                         walls["fast"] / walls["lines+prep"]))
        print(f"\nload average {_load():.2f} at the end")
        print("decays per second over the embedded Monte Carlo's (equal expected decays); "
              "statistical alone / with the shared preparation / lines with it:")
        for decays, ratio, shared, lines in rows:
            best = max(shared, lines)
            print(f"  {decays:>10.3g} decays: {ratio:6.2f}x / {shared:6.2f}x / {lines:6.2f}x "
                  f"({'meets' if best >= 100 else 'below'} the 100x target)")


if __name__ == "__main__":
    main()
