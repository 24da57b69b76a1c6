"""Cost of the corrections per reconstruction, side by side in one run: the 2D mode on one
list-mode file of the default dataset with the corrections switched on one by one.

Configurations (each the ``reconstruct`` rule's call, ``recon.stage.reconstruct``, with the
dataset's cached 2D system matrix, at the rule's thread count):

1. ``direct`` SSRB model, no attenuation, no scatter (randoms from the delayed window);
2. ``direct`` model with the rebinned 3D attenuation factors;
3. ``oblique`` model with attenuation;
4. ``oblique`` model with attenuation and scatter (SSS + tail fit): the default;
5. the default with the kernel method (``kernel: mu``) at 3 x 46, the cold-spot setting
   (README, "Quantitative images").

Prints wall time, its ratio to configuration 1, and the defect measures of the file's phantom
(mean ratio of the cold defects to their background: 1 invisible, 0 fully recovered) so that
the cost is read next to what it buys.

Run: ``python benchmarks/bench_corrections.py [--phantom tube_0003 --acquisition reference
--threads 2]``; the results of the dataset must exist (``make run``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import load_config
from pipeline.specs import recon_spec
from recon.detectability import read_json
from recon.stage import build_system_matrix_file, reconstruct

CONFIGURATIONS = {
    "direct, no attenuation, no scatter": {"ssrb_model": "direct", "scatter": "none",
                                           "attenuation_correction": False},
    "direct + attenuation": {"ssrb_model": "direct", "scatter": "none"},
    "oblique + attenuation": {"ssrb_model": "oblique", "scatter": "none"},
    "oblique + attenuation + scatter (default)": {"ssrb_model": "oblique", "scatter": "sss"},
    "default + kernel method (mu), 3 x 46": {"kernel": "mu", "iterations": 3, "subsets": 46},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", default=[])
    parser.add_argument("--dataset", default="tubes")
    parser.add_argument("--phantom", default="tube_0003")
    parser.add_argument("--acquisition", default="reference")
    parser.add_argument("--threads", type=int, default=2, help="the reconstruct rule's threads")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(*args.configfile)
    results = Path("results") / args.dataset
    listmode = results / "listmode" / args.phantom / f"{args.acquisition}.h5"
    phantom = results / "phantoms" / f"{args.phantom}.h5"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f} before the run, torch {torch.__version__} "
          f"({args.threads} threads); {listmode}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        system = build_system_matrix_file(recon_spec(config, args.dataset), tmp / "system.h5")
        for name, overrides in CONFIGURATIONS.items():
            spec = recon_spec(config, args.dataset)
            spec["recon"].update(overrides)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                reconstruct(spec, listmode, phantom, tmp / "out.h5", system_h5=system,
                            overwrite=True)
                times.append(time.perf_counter() - start)
            best = min(times)
            base = base or best
            rows = read_json(tmp / "out_defects.json")["defects"]
            cold = [r["ratio"] for r in rows if r["type"] in ("inclusion", "bubble")
                    and r["status"] == "ok"]
            print(f"{name:>42}: {best:6.1f} s  ({best / base:4.1f}x)   cold defects at "
                  f"{np.mean(cold) if cold else float('nan'):.2f} of their background")


if __name__ == "__main__":
    main()
