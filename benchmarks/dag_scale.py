"""How the workflow scales with the number of phantoms: the time and peak memory Snakemake
takes to build (and dry-run) the DAG of a dataset of N tubes, and the disk the dataset needs.

For each N of ``--phantoms`` (default 1,000 and 10,000) an overlay selects one tube dataset
of N phantoms with both acquisitions (the default config's family and grid, training off so
that the DAG is the data part: phantom, simulate, reconstruct, gathering rules), and
``snakemake --dry-run --quiet rules`` is run on it in a fresh folder (nothing exists, so every
job is planned). Wall time and the peak resident memory of Snakemake (``getrusage`` of the
child) are printed with the number of jobs, then the disk estimate of ``pipeline/budget.py``
(per phantom and per dataset) beside the sizes measured in ``results/tubes`` when a default
run is there.

Run: ``python benchmarks/dag_scale.py [--phantoms 1000 10000]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.budget import dataset_needs  # noqa: E402
from pipeline.config import load_config  # noqa: E402


def overlay(n_phantoms: int) -> dict:
    """One tube dataset of ``n_phantoms``, no training; limits lifted (a cluster's disk)."""
    tubes = copy.deepcopy(load_config()["datasets"]["tubes"])
    tubes["n_phantoms"] = n_phantoms
    return {"run_datasets": ["scale"], "datasets": {"scale": tubes}, "train": {"methods": []},
            "limits": {"disk_gb": 1e6, "memory_gb": 1e4}}


def snakemake_run(n_phantoms: int, mode: str) -> tuple[float, float, int]:
    """Seconds, peak memory (MB) and job count of ``snakemake --dag`` (``mode`` "dag") or a
    dry run ("dry-run") of a dataset of ``n_phantoms``."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for item in ("Snakefile", "workflow", "config", "profiles", "pipeline", "sim", "recon",
                     "models"):
            src = REPO / item
            (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
        (work / "scale.yaml").write_text(yaml.safe_dump(overlay(n_phantoms)))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        flags = ["--dag"] if mode == "dag" else ["--dry-run", "--quiet", "rules"]
        run = subprocess.run([str(Path(sys.executable).parent / "snakemake"), *flags,
                              "--cores", "1", "--configfile", "scale.yaml"],
                             cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if run.returncode:
        raise SystemExit(run.stdout[-2000:] + run.stderr[-2000:])
    if mode == "dag":  # one dot node per job, the target `all` included
        jobs = len(re.findall(r"^\s*\d+\[label", run.stdout, re.M))
    else:
        total = re.search(r"^total\s+(\d+)$", run.stdout + run.stderr, re.M)
        jobs = int(total.group(1)) if total else -1
    # ru_maxrss of children is the largest child so far: valid when N grows run by run.
    return seconds, max(peak_kb, before) / 1024, jobs


def measured_disk(results: Path) -> dict[str, float] | None:
    """Bytes per phantom of a finished default run, by kind of file."""
    if not (results / "phantoms").is_dir():
        return None
    n = len(list((results / "phantoms").glob("*.h5")))
    sizes = {}
    for kind in ("phantoms", "listmode", "recon"):
        sizes[kind] = sum(p.stat().st_size for p in (results / kind).rglob("*") if p.is_file())
    return {k: v / n for k, v in sizes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--dry-run-max", type=int, default=1000,
                        help="also dry-run datasets up to this many phantoms (default 1000)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    for n in sorted(args.phantoms):
        for mode in ("dag", "dry-run") if n <= args.dry_run_max else ("dag",):
            seconds, peak_mb, jobs = snakemake_run(n, mode)
            what = "DAG built (--dag)" if mode == "dag" else "dry run"
            print(f"{n:>6} phantoms: {jobs} jobs, {what} in {seconds:.1f} s, Snakemake peak "
                  f"memory {peak_mb:.0f} MB", flush=True)
    config = load_config()
    tubes = config["datasets"]["tubes"]
    per_phantom = dataset_needs(tubes, config["acquisitions"]).disk_bytes / tubes["n_phantoms"]
    print(f"disk estimate (pipeline/budget.py): {per_phantom / 1e6:.0f} MB per default tube "
          f"(phantom files and both acquisitions' list-mode), "
          + ", ".join(f"{n * per_phantom / 1e9:.0f} GB for {n}" for n in sorted(args.phantoms)))
    measured = measured_disk(REPO / "results" / "tubes")
    if measured:
        print("measured in results/tubes, per phantom: " + ", ".join(
            f"{k} {v / 1e6:.1f} MB" for k, v in measured.items()))


if __name__ == "__main__":
    main()
