"""Benchmark: the embedded engine on the default tube phantom, side by side.

Builds the default tube phantom (dataset ``tubes``, phantom ``tube_0000`` of
``config/config.yaml``) in a temporary folder and simulates the same frame (``--decays``
decays at 600 kBq, the default acquisition activity) several ways in one run:

1. *engine, N workers*: what the ``simulate`` rule runs (``--threads`` worker processes);
2. *engine, 1 worker*: the same chunks in this process, to give the parallel speed-up (the
   output is bit-identical, which is checked);
3. *engine, every photon tracked*: ``skip_useless_photons: false``, to show what the
   low-energy photon cut saves (and that the coincidences agree statistically).

It prints decays simulated per second, the time split between source, phantom transport,
detector transport, digitizer and coincidence sorting (summed over workers), and the ratios.
With ``--presets`` it also simulates the ``paper``, ``short`` and ``reference`` acquisitions and
prints their coincidence counts (the numbers quoted in the README).

Run from the repository root::

    python benchmarks/bench_engine.py [--decays 1200000] [--threads 2] [--presets]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config
from pipeline.specs import simulation_seed
from sim.engines.embedded.coincidences import SorterSettings  # noqa: E402
from sim.engines.embedded.digitizer import DigitizerSettings  # noqa: E402
from sim.engines.embedded.engine import EngineSettings, FastEngine  # noqa: E402
from sim.phantoms.file import read_phantom  # noqa: E402
from sim.phantoms.spec import phantom_spec  # noqa: E402
from sim.phantoms.stage import build_phantom  # noqa: E402
from sim.scanner.geometry import Scanner  # noqa: E402


def _run(engine: FastEngine, activity_bq: float, duration_s: float, workers: int, seed: int):
    start = time.perf_counter()
    result = engine.run(activity_bq, duration_s, 6586.2, seed, workers=workers, progress=False)
    return result, time.perf_counter() - start


def _report(label: str, result, wall_s: float) -> float:
    rate = result.primaries / wall_s
    split = ", ".join(f"{k} {v:.2f}" for k, v in result.timings_s.items())
    print(f"{label:32s} {result.primaries:>9d} decays in {wall_s:6.2f} s = {rate:9.3g} /s"
          f"   [{split}] s")
    c = result.counts
    print(f"{'':32s} prompts {c['prompts']} (trues {c['trues']}, scattered {c['scattered']}, "
          f"randoms {c['randoms']}), delayed {c['delayed']}, singles {c['singles']}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decays", type=float, default=1.2e6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", action="store_true",
                        help="also simulate the paper, short and reference presets")
    args = parser.parse_args()

    config = load_config()
    spec = phantom_spec(config, "tubes", "tube_0000")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tube_0000.h5"
        build_phantom(spec, path)
        phantom = read_phantom(path)
    scanner_cfg = config["scanner"]
    settings = EngineSettings.from_config(config["simulation"])
    make = lambda s: FastEngine(phantom, Scanner.from_config(scanner_cfg),  # noqa: E731
                                DigitizerSettings.from_config(scanner_cfg),
                                SorterSettings.from_config(scanner_cfg), s)
    engine = make(settings)
    activity = 6e5
    duration = args.decays / activity
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"phantom tubes/tube_0000: materials {engine.tables.names}, "
          f"{len(phantom.defects)} defect(s); chunk {settings.chunk_decays} decays\n")

    parallel, t_par = _run(engine, activity, duration, args.threads, seed=1)
    rate_par = _report(f"engine, {args.threads} workers", parallel, t_par)
    serial, t_ser = _run(engine, activity, duration, 1, seed=1)
    rate_ser = _report("engine, 1 worker", serial, t_ser)
    identical = all(np.array_equal(parallel.prompts[k], serial.prompts[k],
                                   equal_nan=parallel.prompts[k].dtype.kind == "f")
                    for k in parallel.prompts)
    full, t_full = _run(make(replace(settings, skip_useless=False)), activity, duration,
                        args.threads, seed=1)
    rate_full = _report(f"every photon tracked, {args.threads} w.", full, t_full)

    print(f"\nparallel speed-up ({args.threads} workers / 1): {rate_par / rate_ser:.2f}x; "
          f"outputs identical: {identical}")
    print(f"low-energy photon cut speed-up: {rate_par / rate_full:.2f}x; prompts "
          f"{parallel.counts['prompts']} vs {full.counts['prompts']} "
          f"(difference {parallel.counts['prompts'] - full.counts['prompts']:+d}, "
          f"Poisson sigma {np.sqrt(parallel.counts['prompts'] + full.counts['prompts']):.0f})")
    print(f"decays per second on the default tube phantom: {rate_par:.3g} "
          f"({'meets' if rate_par >= 3e5 else 'BELOW'} the 3e5 target)")

    if args.presets:
        print("\npresets (phantom tubes/tube_0000, seeds as in the workflow):")
        for name, acq in config["acquisitions"].items():
            seed = simulation_seed(config["datasets"]["tubes"]["seed"], 0, name)
            result, wall = _run(engine, acq["activity_bq"], acq["duration_s"], args.threads,
                                seed)
            c = result.counts
            print(f"  {name:10s} {acq['activity_bq']:>9.3g} Bq x {acq['duration_s']:>5g} s: "
                  f"{c['primaries']:>8d} decays, {c['prompts']:>7d} prompts (trues {c['trues']},"
                  f" scattered {c['scattered']}, randoms {c['randoms']}), delayed "
                  f"{c['delayed']}; {wall:.1f} s")


if __name__ == "__main__":
    main()
