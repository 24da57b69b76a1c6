"""What each job asks a scheduler for (``mem_mb``, ``runtime``), scaled with the config.

Each model is the measured cost of the job, from the ``benchmark:`` files of runs on the
project machine (2 cores, no GPU, 30 Nov 2026: the default run, ``config/table1.yaml`` and
``config/parts.yaml``; ``benchmarks/measured/jobs_2026-11-30.tsv`` holds them, and
``benchmarks/propose_resources.py`` prints the per-rule proposals of any run), written as a
fixed part plus a part proportional to what drives the job, then given the margins of
``propose_resources.py``: memory x 1.5 rounded up to 500 MB, runtime x 3 rounded up to 5 min
(a cluster kills a job at its limit; the margin covers slower nodes and jobs sharing a node).
``tests/pipeline/test_job_resources.py`` checks every measured job against its request.

=================== ============================================ =========================
job                 memory driver                                runtime driver
=================== ============================================ =========================
phantom             phantom voxels (:mod:`pipeline.budget`), parts     phantom voxels
simulate (fast)     decays in flight: min(decays, workers x       decays
                    ``simulation.chunk_decays``)
positron_features   training images x (size_px / 64)^2           (fixed)
train, pretrain_vae batch x (size_px / 64)^2                    steps x batch x
                                                                 (size_px / 64)^2, per method
feature_network     (size_px / 64)^2                             epochs x training images x
                                                                 (size_px / 64)^2
downstream          (size_px / 64)^2                             epochs x training images x
                                                                 sets x seeds x (size_px/64)^2
=================== ============================================ =========================

The GATE engines cannot run here (no Geant4 data), so their simulate jobs keep fixed requests
(``GATE_SIMULATE``), to be set per site with ``set-resources`` in the profile. Rules whose
cost does not move with the config keep fixed values in their rule, from the same runs.

:func:`check_jobs` holds every job a config plans (:func:`planned_jobs`) to the ``limits``
section before any job starts: its expected peak memory against ``limits.memory_gb`` and its
expected wall time (no margin) against ``limits.job_runtime_h``, each refusal naming the key
that sizes the job, so ``train.steps: 1e12`` is refused by the dry run instead of asking a
scheduler for 53,000 years.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.budget import dataset_needs, histogram_bytes

#: Threads of a simulate job (its rule's ``threads``).
SIMULATE_THREADS = 2

#: Margins of benchmarks/propose_resources.py.
MEMORY_MARGIN, RUNTIME_MARGIN = 1.5, 3.0
#: Phantom job: seconds per phantom voxel (measured 22-40 us for tubes, 50-85 us for meshes:
#: ray tests) and the extra memory of a mesh part (trimesh, Embree, ray batches; measured
#: 720-770 MB for 0.2 M voxels against 420-500 MB for a tube of 0.5 M voxels).
PHANTOM_S_PER_VOXEL = 40e-6
PART_S_PER_VOXEL = 90e-6
PART_EXTRA_MB = 600.0
#: Embedded engine: fixed seconds, seconds per decay (measured 23-45 s for 6 M decays, 1-4.5 s
#: for 60 k), fixed MB and MB per decay in flight (730-890 MB with 2 x 200 k in flight).
SIMULATE_BASE_S, SIMULATE_S_PER_DECAY = 5.0, 8e-6
SIMULATE_BASE_MB, SIMULATE_MB_PER_DECAY = 130.0, 1.9e-3
#: GATE engines: not measurable here; one day and 8 GB, per site in the profile.
GATE_SIMULATE = (8000, 1440)
#: Statistical engine with its phantom's preparation file: fixed MB (the detector response,
#: the preparation, a time slice; measured 1.27 GB for a val_crack tube at `reference`),
#: MB per distinct crystal pair counted (keys and counts by kind, and their merge), fixed
#: seconds and seconds per decay (measured 8.5 s for 6 M decays on a busy machine).
STATISTICAL_BASE_MB, STATISTICAL_MB_PER_PAIR = 1300.0, 100e-6
STATISTICAL_BASE_S, STATISTICAL_S_PER_DECAY = 5.0, 1e-6
#: Prompts per decay at most (a source at the centre of the scanner in air: about 0.25).
PROMPTS_PER_DECAY_MAX = 0.3
#: positron_features: fixed MB and MB per training image of 64 x 64 px (measured 1976 MB for
#: 90 images, 2715 MB for 180: PCANet's filter responses of every image are held).
FEATURES_BASE_MB, FEATURES_MB_PER_IMAGE = 1250.0, 8.5
#: train: fixed seconds and seconds per step of a batch of 32 images of 64 x 64 px on one CPU
#: thread each, two trainings sharing the 2 cores, as in the default run (measured 30 Nov 2026,
#: two fresh-clone runs: attention GAN 260 s, DCGAN 254-261 s, WGAN-GP 331-337 s, VAE 64-66 s
#: for 600 steps); pretrain_vae is the CT VAE's steps (39-86 s for 500). The runtime margin
#: covers the slower steps of longer runs (Table 1's 2,000 steps: up to 0.68 s per step).
#: Memory: fixed MB and MB per unit of batch x (size_px / 64)^2 (measured 430-640 MB).
TRAIN_BASE_S = 30.0
TRAIN_S_PER_STEP = {"attention_gan": 0.44, "dcgan": 0.44, "wgan_gp": 0.56, "vae": 0.11,
                    "pretrain_vae": 0.18,
                    # issue 15's methods (300 steps in the default run, measured below)
                    "dcgan_conditional": 0.45, "attention_gan_conditional": 0.5,
                    "mask2image_patch": 0.32, "mask2image_global": 0.25, "pix2pix": 0.28,
                    # the attention GAN's ablations: its networks and steps (its rate)
                    **dict.fromkeys(("attention_gan_no_context", "attention_gan_random_query",
                                     "attention_gan_no_apg", "attention_gan_shuffled_slots"),
                                    0.44)}
TRAIN_BASE_MB, TRAIN_MB_PER_SCALE = 400.0, 250.0
#: feature_network: seconds per training image and epoch at 64 px (measured 9.5 s for 30 epochs
#: of the default run's at most 112 training images, 33.9 s for 224 in config/table1.yaml; the
#: larger rate), and its peak (456-485 MB).
FEATURE_NET_S_PER_IMAGE_EPOCH, FEATURE_NET_MB = 5.0e-3, 500.0
#: downstream: seconds per training image, epoch and detector (training set x seed) at 64 px
#: (measured 71 s for 30 epochs, 9 training sets, 2 seeds, at most 112 images), and its peak
#: (518 MB).
DOWNSTREAM_S_PER_IMAGE_EPOCH, DOWNSTREAM_MB = 1.2e-3, 600.0
#: The kernel method's extra memory per neighbour offset (0.48 GB over 405 offsets, measured on
#: the default 2 mm image grid) and its time factor (recon/kernel.py).
KERNEL_MB_PER_OFFSET, KERNEL_TIME_FACTOR = 1.2, 5.0
#: A list-mode file in a reconstruct job's memory, MB per decay of its acquisition: 89 bytes
#: per coincidence (every column of the contract) at up to 0.3 coincidences per decay (a
#: default tube gives 0.145, a source at the centre of the scanner in air about 0.25).
RECON_MB_PER_DECAY = 0.3 * 89 / 1e6
#: A coincidence histogram in a 2D reconstruct job's memory, per byte of its largest size
#: (the columns, the weights as float64 and the rebinning's index arrays).
HISTOGRAM_READ_FACTOR = 3.0


@dataclass(frozen=True)
class Request:
    """A job's request: memory, MB, and wall time, minutes; and what it is expected to use
    (``peak_mb``, ``seconds``, no margin; for a fixed request, the request itself)."""

    mem_mb: int
    runtime_min: int
    peak_mb: float | None = None
    seconds: float | None = None

    @property
    def expected_mb(self) -> float:
        """Expected peak memory, MB."""
        return float(self.mem_mb if self.peak_mb is None else self.peak_mb)

    @property
    def expected_s(self) -> float:
        """Expected wall time, s."""
        return float(60 * self.runtime_min if self.seconds is None else self.seconds)


def _request(peak_mb: float, seconds: float, min_mb: int = 500, min_runtime_min: int = 5
             ) -> Request:
    mem = max(min_mb, 500 * math.ceil(MEMORY_MARGIN * peak_mb / 500))
    runtime = max(min_runtime_min, 5 * math.ceil(RUNTIME_MARGIN * seconds / 60 / 5))
    return Request(int(mem), int(runtime), float(peak_mb), float(seconds))


def phantom(config: dict[str, Any], dataset: str) -> Request:
    """A phantom job of ``dataset``."""
    ds = config["datasets"][dataset]
    voxels = math.prod(int(n) for n in ds["grid"]["shape"])
    peak_mb = dataset_needs(ds, config["acquisitions"]).job_memory_bytes / 1e6
    per_voxel = PHANTOM_S_PER_VOXEL
    if ds["family"] == "part":
        peak_mb += PART_EXTRA_MB
        per_voxel = PART_S_PER_VOXEL
    return _request(peak_mb, 5.0 + per_voxel * voxels, min_mb=1000)


def reconstruct(config: dict[str, Any], acquisition: str | None = None) -> Request:
    """A reconstruct job (of ``acquisition``, else of no list-mode at all): 2D measured
    (0.4-1.1 GB, 6-88 s with the corrections on); 3D, not in the measured runs, keeps the
    requests issue 14's 3D runs needed. The kernel method (``recon.kernel: mu``) adds its
    weight images, measured per neighbour offset (a 2D job of the cold-sphere tube: 1.27 GB
    peak without, 1.75 GB with the default 405 offsets), and about 5 times the time (52 s
    against 12 s at 3 x 46 with the corrections on). The list-mode file is read whole:
    ``RECON_MB_PER_DECAY`` per decay of the acquisition is added; a coincidence histogram
    (the statistical engine's default output) read by the 2D mode adds at most
    ``HISTOGRAM_READ_FACTOR`` times its largest size, whatever the counts."""
    r = config["recon"]
    kernel = r.get("kernel", "none") != "none"
    listmode_mb = 0.0
    if acquisition is not None:
        preset = config["acquisitions"][acquisition]
        listmode_mb = RECON_MB_PER_DECAY * float(preset["activity_bq"]) * float(
            preset["duration_s"])
        bound = histogram_bytes(config)
        if bound is not None and r["mode"] == "2d":
            # A histogram's pairs, read whole with their weights: bounded whatever the counts.
            listmode_mb = min(listmode_mb, HISTOGRAM_READ_FACTOR * bound / 1e6)
    if r["mode"] == "3d":
        return _request(4000.0 + 2 * listmode_mb, 1200.0)  # events and their LOR ends
    if kernel:
        offsets = math.prod(2 * int(w) + 1 for w in r["kernel_window"])
        return _request(1100.0 + listmode_mb + KERNEL_MB_PER_OFFSET * offsets,
                        90.0 * KERNEL_TIME_FACTOR)
    return _request(1100.0 + listmode_mb, 90.0)


def simulate(config: dict[str, Any], acquisition: str, workers: int) -> Request:
    """A simulate job of ``acquisition`` run with ``workers`` processes."""
    preset = config["acquisitions"][acquisition]
    decays = float(preset["activity_bq"]) * float(preset["duration_s"])
    if config["engine"] == "statistical":
        scanner = config["scanner"]
        crystals = int(scanner["rings"]) * int(scanner["crystals_per_ring"])
        pairs = min(PROMPTS_PER_DECAY_MAX * decays, crystals * (crystals - 1) / 2)
        return _request(STATISTICAL_BASE_MB + STATISTICAL_MB_PER_PAIR * pairs,
                        STATISTICAL_BASE_S + STATISTICAL_S_PER_DECAY * decays)
    if config["engine"] != "fast":
        return Request(*GATE_SIMULATE)
    in_flight = min(decays, max(1, workers) * float(config["simulation"]["chunk_decays"]))
    return _request(SIMULATE_BASE_MB + SIMULATE_MB_PER_DECAY * in_flight,
                    SIMULATE_BASE_S + SIMULATE_S_PER_DECAY * decays)


def training_images_bound(config: dict[str, Any], dataset: str) -> int:
    """An upper bound on the training images of ``dataset``'s positron set (every slice of
    every training phantom, of one acquisition when ``train.acquisition`` is set)."""
    ds = config["datasets"][dataset]
    images = config["positron_images"]
    nz, _, nx = (int(n) for n in ds["grid"]["shape"])
    slices = nz if images["orientation"] == "transaxial" else nx
    phantoms = max(1, math.ceil(images["split_fractions"][0] / sum(images["split_fractions"])
                                * int(ds["n_phantoms"])))
    acquisitions = 1 if config["train"]["acquisition"] else 2
    return phantoms * slices * acquisitions


def positron_features(config: dict[str, Any], dataset: str) -> Request:
    """The positron_features job of ``dataset``."""
    scale = (config["positron_images"]["size_px"] / 64) ** 2
    peak_mb = FEATURES_BASE_MB + FEATURES_MB_PER_IMAGE * scale * training_images_bound(
        config, dataset)
    return _request(peak_mb, 60.0)


def _scale(batch_size: int, size_px: int) -> float:
    return batch_size / 32 * (size_px / 64) ** 2


def _training(steps: int, batch_size: int, size_px: int, per_step_s: float) -> Request:
    scale = _scale(batch_size, size_px)
    return _request(TRAIN_BASE_MB + TRAIN_MB_PER_SCALE * scale,
                    TRAIN_BASE_S + steps * per_step_s * scale)


def train_seconds(config: dict[str, Any], method: str) -> float:
    """Expected wall time of a train job of ``method``, s (no margin): what orders the
    trainings, longest first."""
    t = config["train"]
    per_step = TRAIN_S_PER_STEP.get(method, max(TRAIN_S_PER_STEP.values()))
    return TRAIN_BASE_S + t["steps"] * per_step * _scale(
        t["batch_size"], config["positron_images"]["size_px"])


def train(config: dict[str, Any], method: str) -> Request:
    """A train job of ``method`` (a registered name; an unknown one gets the slowest)."""
    t = config["train"]
    per_step = TRAIN_S_PER_STEP.get(method, max(TRAIN_S_PER_STEP.values()))
    return _training(t["steps"], t["batch_size"], config["positron_images"]["size_px"],
                     per_step)


def pretrain_vae(config: dict[str, Any]) -> Request:
    """The pretrain_vae job (the CT VAE, on ``ct_images.size_px`` images)."""
    p = config["pretrain_vae"]
    return _training(p["steps"], p["batch_size"], config["ct_images"]["size_px"],
                     TRAIN_S_PER_STEP["pretrain_vae"])


def feature_network(config: dict[str, Any], dataset: str) -> Request:
    """The feature_network job of ``dataset`` (``evaluate.feature_network.epochs``)."""
    scale = (config["positron_images"]["size_px"] / 64) ** 2
    epochs = int(config["evaluate"]["feature_network"]["epochs"])
    return _request(FEATURE_NET_MB * scale, 30.0 + FEATURE_NET_S_PER_IMAGE_EPOCH * scale
                    * epochs * training_images_bound(config, dataset), min_mb=1000)


def downstream(config: dict[str, Any], dataset: str, methods: int) -> Request:
    """The downstream job of ``dataset`` with ``methods`` labelled methods (a detector per
    training set, real and real + / only each method, and per seed)."""
    d = config["downstream"]
    scale = (config["positron_images"]["size_px"] / 64) ** 2
    detectors = (1 + 2 * methods) * len(d["seeds"])
    return _request(DOWNSTREAM_MB * scale, 30.0 + DOWNSTREAM_S_PER_IMAGE_EPOCH * scale
                    * int(d["epochs"]) * detectors * training_images_bound(config, dataset),
                    min_mb=1500, min_runtime_min=10)


def scarcity(config: dict[str, Any], dataset: str) -> Request:
    """The scarcity-curve job of ``dataset``: two arms, and two per labelled generator, per
    subset (``scarcity.draws`` per size, and the whole split once) and per seed, each
    detector trained as many steps as the downstream test's real set (so sized like it)."""
    from pipeline.specs import scarcity_methods  # specs imports this module's callers

    d, c = config["downstream"], config["scarcity"]
    scale = (config["positron_images"]["size_px"] / 64) ** 2
    arms = 2 + 2 * len(scarcity_methods(config))
    detectors = arms * (len(c["sizes"]) * int(c["draws"]) + 1) * len(d["seeds"])
    return _request(DOWNSTREAM_MB * scale, 30.0 + DOWNSTREAM_S_PER_IMAGE_EPOCH * scale
                    * int(d["epochs"]) * detectors * training_images_bound(config, dataset),
                    min_mb=1500, min_runtime_min=10)


def scarcity_subset(config: dict[str, Any], dataset: str) -> Request:
    """The job copying ``dataset``'s image set with a subset of its training phantoms: the
    images, masks and truth of every split read at once (3 arrays of float32 or less)."""
    scale = (config["positron_images"]["size_px"] / 64) ** 2
    images = 3 * training_images_bound(config, dataset)  # every split, bounded
    return _request(300.0 + 3 * 4 * 64 * 64 * scale * images / 1e6, 60.0)


@dataclass(frozen=True)
class PlannedJob:
    """A job a config plans, what sizes it and what it asks."""

    name: str
    memory_key: str
    runtime_key: str
    request: Request


def planned_jobs(config: dict[str, Any]) -> list[PlannedJob]:
    """Every kind of job the default target of ``config`` runs, with the config keys that
    size its memory and its wall time (one job per kind and dataset, acquisition or method:
    the others of a kind ask the same)."""
    from pipeline.config import selected_datasets  # both import this module
    from pipeline.specs import downstream_methods

    jobs = []
    methods = list(config["train"]["methods"])
    n_labelled = len(downstream_methods(config))
    for name in selected_datasets(config):
        ds = config["datasets"][name]
        base = f"datasets.{name}"
        jobs.append(PlannedJob(f"phantom of {name}", f"{base}.grid.shape",
                               f"{base}.grid.shape", phantom(config, name)))
        for acq in ds["acquisitions"]:
            jobs.append(PlannedJob(
                f"simulate {name}/{acq}", "simulation.chunk_decays",
                f"acquisitions.{acq}", simulate(config, acq, SIMULATE_THREADS)))
        if methods:
            jobs.append(PlannedJob(f"positron_features of {name}",
                                   f"{base}.n_phantoms", "positron_features",
                                   positron_features(config, name)))
            jobs.append(PlannedJob(f"feature_network of {name}", "positron_images.size_px",
                                   "evaluate.feature_network.epochs",
                                   feature_network(config, name)))
            if n_labelled:
                jobs.append(PlannedJob(f"downstream of {name}", "positron_images.size_px",
                                       "downstream.epochs",
                                       downstream(config, name, n_labelled)))
        for acq in ds["acquisitions"]:
            # Memory: the list-mode file read whole, or the kernel's weight images.
            request = reconstruct(config, acq)
            key = (f"acquisitions.{acq}" if request.expected_mb > 2 * reconstruct(config)
                   .expected_mb else "recon.kernel_window")
            jobs.append(PlannedJob(f"reconstruct {name}/{acq}", key, "recon.iterations",
                                   request))
    for method in methods:
        jobs.append(PlannedJob(f"train {method}", "train.batch_size", "train.steps",
                               train(config, method)))
    if methods:
        jobs.append(PlannedJob("pretrain_vae", "pretrain_vae.batch_size", "pretrain_vae.steps",
                               pretrain_vae(config)))
    return jobs


def check_jobs(config: dict[str, Any], memory_bytes: float) -> list[tuple[str, str]]:
    """Problems (key, message) of the planned jobs against ``memory_bytes`` (one job's
    memory) and ``limits.job_runtime_h``."""
    hours = float(config["limits"]["job_runtime_h"])
    problems = []
    for job in planned_jobs(config):
        r = job.request
        if r.expected_mb * 1e6 > memory_bytes:
            problems.append((job.memory_key,
                             f"the {job.name} job needs about {r.expected_mb / 1e3:.3g} GB of "
                             f"memory, more than the {memory_bytes / 1e9:.3g} GB one job may use "
                             "(limits.memory_gb)"))
        if r.expected_s > hours * 3600:
            problems.append((job.runtime_key,
                             f"the {job.name} job is expected to take about "
                             f"{_duration(r.expected_s)}, longer than limits.job_runtime_h "
                             f"({hours:g} h)"))
    return problems


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 48:
        return f"{hours:.3g} h"
    if hours < 24 * 365 * 2:
        return f"{hours / 24:.3g} days"
    return f"{hours / 24 / 365:,.0f} years"
