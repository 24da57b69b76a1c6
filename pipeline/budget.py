"""What a config needs in memory and disk, estimated before any job starts.

The coefficients are measured (``benchmarks/out/`` of a default run, 2 cores): the phantom
job peaks at about 0.93 kB of memory per voxel of the phantom grid for the default tube
(supersampling the surfaces; 460 MB for 56 x 96 x 96), the largest per-voxel cost of any
stage; a list-mode file takes about 8 bytes per simulated decay (48 MB for the 6 million
decays of a default tube's `reference` acquisition, 55 bytes per stored coincidence,
compressed); a phantom's files about 6 bytes per voxel (its GATE copies are raw). Estimates
are rounded up (1 kB per voxel, 10 bytes per decay) and meant to refuse the impossible, not
to plan a cluster allocation.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bytes of memory per phantom voxel in the phantom job, and its fixed part (interpreter).
PHANTOM_JOB_BYTES_PER_VOXEL = 1000
JOB_BASE_BYTES = 150e6
#: Bytes on disk per phantom voxel (HDF5 file and raw GATE copies) and per simulated decay.
PHANTOM_FILE_BYTES_PER_VOXEL = 6
LISTMODE_BYTES_PER_DECAY = 10
#: A coincidence histogram's bytes per crystal pair at most (two crystal ids, the count and
#: three truth counts, before compression): its size whatever the counts.
HISTOGRAM_BYTES_PER_PAIR = 24

GB = 1e9


@dataclass(frozen=True)
class DatasetNeeds:
    """Estimated needs of one dataset: peak memory of a job and disk of all its files."""

    job_memory_bytes: float
    disk_bytes: float


def histogram_bytes(config: dict[str, Any]) -> float | None:
    """Largest coincidence file of the config's engine when it writes histograms (the
    statistical engine's default, :mod:`sim.listmode.histogram`), else None (list-mode
    files grow with the decays)."""
    stat = config.get("simulation", {}).get("statistical", {})
    if config.get("engine") != "statistical" or stat.get("output", "histogram") != "histogram":
        return None
    scanner = config["scanner"]
    crystals = int(scanner["rings"]) * int(scanner["crystals_per_ring"])
    return HISTOGRAM_BYTES_PER_PAIR * crystals * (crystals - 1) / 2


def coincidence_file_bytes(decays: float, histogram_max_bytes: float | None) -> float:
    """Bytes of one acquisition's coincidence file: list-mode, or a bounded histogram."""
    listmode = LISTMODE_BYTES_PER_DECAY * decays
    return listmode if histogram_max_bytes is None else min(listmode, histogram_max_bytes)


def dataset_needs(dataset: dict[str, Any], acquisitions: dict[str, Any],
                  histogram_max_bytes: float | None = None) -> DatasetNeeds:
    """Needs of a dataset section (``datasets.{name}``) given the acquisition presets (and
    the histogram bound, :func:`histogram_bytes`, when the engine writes histograms)."""
    voxels = math.prod(int(n) for n in dataset["grid"]["shape"])
    files = sum(coincidence_file_bytes(float(acquisitions[a]["activity_bq"])
                                       * float(acquisitions[a]["duration_s"]),
                                       histogram_max_bytes)
                for a in dataset["acquisitions"] if a in acquisitions)
    per_phantom = PHANTOM_FILE_BYTES_PER_VOXEL * voxels + files
    return DatasetNeeds(JOB_BASE_BYTES + PHANTOM_JOB_BYTES_PER_VOXEL * voxels,
                        int(dataset["n_phantoms"]) * per_phantom)


def machine_memory_bytes() -> float:
    """Physical memory of this machine, bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def free_disk_bytes(where: str | Path = ".") -> float:
    """Free disk under ``where`` (its nearest existing folder), bytes."""
    path = Path(where).resolve()
    while not path.exists():
        path = path.parent
    return float(shutil.disk_usage(path).free)


def check_limits(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems (key, message) of the selected datasets against ``config["limits"]``."""
    limits = config["limits"]
    memory = (limits["memory_gb"] * GB if limits["memory_gb"] is not None
              else machine_memory_bytes())
    disk = limits["disk_gb"] * GB if limits["disk_gb"] is not None else free_disk_bytes()
    problems = []
    total_disk = 0.0
    names = config["run_datasets"] or list(config["datasets"])
    used = dict.fromkeys(a for name in names for a in config["datasets"][name]["acquisitions"])
    bound = histogram_bytes(config)
    for name in used:  # one acquisition's file alone: name the preset, not a dataset
        preset = config["acquisitions"][name]
        decays = float(preset["activity_bq"]) * float(preset["duration_s"])
        size = coincidence_file_bytes(decays, bound)
        kind = "list-mode" if size == LISTMODE_BYTES_PER_DECAY * decays else "histogram"
        if size > disk:
            problems.append((f"acquisitions.{name}",
                             f"{preset['activity_bq']:g} Bq for {preset['duration_s']:g} s is "
                             f"{decays:.3g} decays: one {kind} file of about "
                             f"{size / GB:.3g} GB, more than the "
                             f"{disk / GB:.3g} GB free (limits.disk_gb); lower activity_bq "
                             "or duration_s"))
    if problems:
        return problems
    for name in names:
        ds = config["datasets"][name]
        needs = dataset_needs(ds, config["acquisitions"], bound)
        shape = "x".join(str(n) for n in ds["grid"]["shape"])
        if needs.job_memory_bytes > memory:
            problems.append((f"datasets.{name}.grid.shape",
                             f"a phantom of {shape} voxels needs about "
                             f"{needs.job_memory_bytes / GB:.3g} GB of memory in its phantom job "
                             f"(1 kB per voxel), more than the {memory / GB:.3g} GB available "
                             "(limits.memory_gb)"))
        total_disk += needs.disk_bytes
        if needs.disk_bytes > disk:
            problems.append((f"datasets.{name}.n_phantoms",
                             f"{ds['n_phantoms']} phantoms of {shape} voxels with acquisitions "
                             f"{', '.join(ds['acquisitions'])} need about "
                             f"{needs.disk_bytes / GB:.3g} GB of disk, more than the "
                             f"{disk / GB:.3g} GB free (limits.disk_gb)"))
    if not problems and total_disk > disk:
        problems.append(("run_datasets", f"the selected datasets need about "
                                         f"{total_disk / GB:.3g} GB of disk together, more than "
                                         f"the {disk / GB:.3g} GB free (limits.disk_gb)"))
    if not problems:  # every other job's memory and wall time (pipeline/job_resources.py)
        from pipeline.job_resources import check_jobs  # it imports this module

        problems += check_jobs(config, memory)
    return problems
