"""Per-job specs: the part of the validated config each job depends on (hashing a spec gives
the ``config_sha256`` of its outputs, and a change re-runs only the jobs whose spec changed),
and the names of the jobs (phantoms, training runs) the config asks for."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import zlib
from typing import Any

import numpy as np

from pipeline.config import PHANTOM_NAME, ConfigError
from pipeline.split_sizes import split_counts


def phantom_names(config: dict, dataset: str) -> list[str]:
    """Names of the phantoms of a dataset: ``{family}_{index:04d}``."""
    ds = config["datasets"][dataset]
    return [f"{ds['family']}_{i:04d}" for i in range(ds["n_phantoms"])]


def phantom_index(config: dict, dataset: str, phantom: str) -> int:
    """Index of a phantom in its dataset, with a clear error for a name that is not there."""
    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; defined: {', '.join(config['datasets'])}")
    # O(1), not a search of the name list: a 10,000-phantom DAG asks this 50,000 times.
    ds = config["datasets"][dataset]
    match = PHANTOM_NAME.match(phantom)
    if (match is None or match["family"] != ds["family"]
            or not 0 <= int(match["index"]) < ds["n_phantoms"]
            or phantom != f"{ds['family']}_{int(match['index']):04d}"):
        first, last = (f"{ds['family']}_{i:04d}" for i in (0, max(ds["n_phantoms"] - 1, 0)))
        raise ConfigError(f"phantom {phantom!r} is not part of dataset {dataset!r} "
                          f"(expected {first} ... {last})")
    return int(match["index"])


def simulation_seed(dataset_seed: int, phantom_index: int, acquisition: str) -> int:
    """Seed of one simulation job: independent streams per phantom and acquisition."""
    entropy = [int(dataset_seed), int(phantom_index), zlib.crc32(acquisition.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def simulate_spec(config: dict, dataset: str, phantom: str, acquisition: str) -> dict[str, Any]:
    """Everything a simulation job depends on: engine, scanner, the acquisition preset, the
    engine options and the job's seed. A change to any of them re-runs the job."""
    if acquisition not in config["datasets"][dataset]["acquisitions"]:
        raise ConfigError(f"config key datasets.{dataset}.acquisitions: {acquisition!r} is not "
                          f"one of {config['datasets'][dataset]['acquisitions']}")
    index = phantom_index(config, dataset, phantom)
    return {
        "engine": config["engine"],
        "dataset": dataset,
        "phantom": phantom,
        "acquisition": {"name": acquisition, **copy.deepcopy(config["acquisitions"][acquisition])},
        "scanner": copy.deepcopy(config["scanner"]),
        "simulation": copy.deepcopy(config["simulation"]),
        "seed": simulation_seed(config["datasets"][dataset]["seed"], index, acquisition),
    }


def engine_spec(config: dict, dataset: str, phantom: str, acquisition: str,
                engine: str) -> dict[str, Any]:
    """The simulate spec with another ``engine``, writing list-mode events whatever the
    statistical engine's ``output`` (the cross-check and the validation compare events)."""
    spec = simulate_spec(config, dataset, phantom, acquisition)
    spec["engine"] = engine
    spec["simulation"].setdefault("statistical", {})["output"] = "listmode"
    return spec


def realisation_spec(config: dict, dataset: str, phantom: str, acquisition: str,
                     engine: str, realisation: int) -> dict[str, Any]:
    """The simulate spec of one noise realisation of the engine validation (``validation``
    section): the phantom's own spec with ``engine`` and list-mode output
    (:func:`engine_spec`), and a seed of its own for every realisation (the same for both
    engines: their random streams differ anyway)."""
    spec = engine_spec(config, dataset, phantom, acquisition, engine)
    entropy = [int(spec["seed"]), 0x7EA1, int(realisation)]
    spec.update(realisation=int(realisation),
                seed=int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0]))
    return spec


def _section_datasets(config: dict, section: str) -> list[str]:
    """The datasets of an on-request section (``datasets`` and ``acquisition`` keys), each
    checked to exist and to list the section's acquisition."""
    part = config[section]
    for dataset in part["datasets"]:
        if dataset not in config["datasets"]:
            raise ConfigError(f"config key {section}.datasets: {dataset!r} is not a dataset "
                              f"of the config ({', '.join(config['datasets'])})")
        if part["acquisition"] not in config["datasets"][dataset]["acquisitions"]:
            raise ConfigError(f"config key {section}.acquisition: {part['acquisition']!r} is "
                              f"not an acquisition of dataset {dataset!r} "
                              f"({config['datasets'][dataset]['acquisitions']})")
    return list(part["datasets"])


def validation_targets(config: dict) -> list[tuple[str, str]]:
    """The (dataset, phantom) pairs the engine validation runs: the first phantom of each
    dataset of ``validation.datasets``, which must list ``validation.acquisition``."""
    return [(dataset, phantom_names(config, dataset)[0])
            for dataset in _section_datasets(config, "validation")]


def detectability_study_targets(config: dict) -> list[tuple[str, str]]:
    """The (dataset, phantom) pairs of the detectability study: every phantom of each
    dataset of ``detectability_study.datasets``, which must list its acquisition."""
    return [(dataset, phantom) for dataset in _section_datasets(config, "detectability_study")
            for phantom in phantom_names(config, dataset)]


#: Targets run on request whose config sections are checked when they are asked for
#: (target name -> check raising ConfigError naming the key).
TARGET_CHECKS = {
    "statistical_validation": validation_targets,
    "detectability_study": detectability_study_targets,
}


def check_requested_targets(config: dict, targets) -> None:
    """Check the sections of the on-request targets among ``targets`` (names given on a
    Snakemake command line): ConfigError naming the key before any job."""
    for name in targets:
        if name in TARGET_CHECKS:
            TARGET_CHECKS[name](config)


def thinning_seed(config: dict, dataset: str, phantom: str, level: int) -> int:
    """Seed of the thinning of one phantom's study acquisition to count level ``level``."""
    index = phantom_index(config, dataset, phantom)
    return simulation_seed(int(config["detectability_study"]["seed"]), index,
                           f"{dataset}/thin/{level}")


#: Seed of the detector response calibration (one per scanner; not a dataset's).
RESPONSE_SEED = 511


def statistical_prep_spec(config: dict, dataset: str, phantom: str) -> dict[str, Any]:
    """Everything the statistical engine's preparation of one phantom depends on (shared by
    its acquisitions, :mod:`sim.engines.statistical.preparation`): the phantom, the scanner,
    the simulation settings and a seed of the phantom's own (its background sample)."""
    index = phantom_index(config, dataset, phantom)
    return {
        "dataset": dataset,
        "phantom": phantom,
        "scanner": copy.deepcopy(config["scanner"]),
        "simulation": copy.deepcopy(config["simulation"]),
        "seed": simulation_seed(config["datasets"][dataset]["seed"], index, "statistical_prep"),
    }


def response_spec(config: dict) -> dict[str, Any]:
    """Everything the statistical engine's detector response depends on: the scanner (with
    its digitizer), the photons per cell, the transport's energy cut and the seed."""
    return {
        "scanner": copy.deepcopy(config["scanner"]),
        "photons_per_cell": int(config["simulation"]["statistical"]["photons_per_cell"]),
        "energy_cut_kev": float(config["simulation"]["energy_cut_kev"]),
        "seed": RESPONSE_SEED,
    }


def recon_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything a reconstruction of a dataset depends on: the ``recon`` section, the
    scanner, the dataset's voxel grid (the phantoms' frame) and the device switch."""
    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; defined: {', '.join(config['datasets'])}")
    return {
        "dataset": dataset,
        "recon": copy.deepcopy(config["recon"]),
        "scanner": copy.deepcopy(config["scanner"]),
        "grid": copy.deepcopy(config["datasets"][dataset]["grid"]),
        "device": config["device"],
    }


def positron_dataset_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the positron image set of a dataset depends on: the ``positron_images``
    section, the phantom names and the acquisitions it pairs (those the dataset has)."""
    phantom_index(config, dataset, phantom_names(config, dataset)[0])  # checks the name
    images = copy.deepcopy(config["positron_images"])
    have = config["datasets"][dataset]["acquisitions"]
    return {
        "dataset": dataset,
        "positron_images": images,
        "phantoms": phantom_names(config, dataset),
        "acquisitions": [a for a in (images["low_count"], images["reference"]) if a in have],
    }


def ct_dataset_spec(config: dict) -> dict[str, Any]:
    """Everything the CT image set depends on: the ``ct_images`` section."""
    return {"ct_images": copy.deepcopy(config["ct_images"])}


def _train_acquisition(config: dict) -> str | None:
    return config["train"]["acquisition"]


def pretrain_vae_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the CT VAE's pretraining depends on: the ``pretrain_vae`` section and the
    device switch."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "pretrain_vae": copy.deepcopy(config["pretrain_vae"]),
            "device": config["device"]}


def positron_features_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the feature memory depends on: the ``positron_features`` section and the
    acquisition whose training images it describes (``train.acquisition``)."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "positron_features": copy.deepcopy(config["positron_features"]),
            "acquisition": _train_acquisition(config)}


#: The method the ``enhance`` rule trains (not a row of Table 1).
ENHANCE_METHOD = "pix2pix"
#: Methods whose generated images carry labels for the downstream detector.
#: Methods whose settings are another method's section: the ablations of the attention GAN
#: train with ``train.attention_gan`` itself, so they differ from it in one mechanism only.
SETTINGS_SECTION = {f"attention_gan_{a}": "attention_gan"
                    for a in ("no_context", "random_query", "no_apg", "shuffled_slots")}

LABELLED_METHODS = ("dcgan_conditional", "attention_gan_conditional", "mask2image_patch",
                    "mask2image_global")


def enhance_enabled(config: dict, dataset: str | None = None) -> bool:
    """Whether the DAG trains pix2pix and writes the enhancement table (of ``dataset``, when
    given): ``enhance.enabled``, a generative stage at all (``train.methods`` not empty) and
    a dataset with both the low-count and the reference acquisition (pairs to learn from)."""
    if not (config["enhance"]["enabled"] and config["train"]["methods"]):
        return False
    if dataset is None:
        return True
    images = config["positron_images"]
    acquisitions = config["datasets"][dataset]["acquisitions"]
    return images["low_count"] in acquisitions and images["reference"] in acquisitions


def downstream_methods(config: dict) -> list[str]:
    """The labelled methods the downstream test trains detectors with."""
    chosen = config["downstream"]["methods"]
    if chosen is None:
        return [m for m in config["train"]["methods"] if m in LABELLED_METHODS]
    return list(chosen)


#: A training run of a method with its own seed: ``{method}__seed{seed}``.
RUN_NAME = re.compile(r"^(?P<method>[a-z][a-z0-9_]*?)(__seed(?P<seed>\d+))?$")


def method_runs(config: dict, method: str) -> list[str]:
    """The training runs of a method: ``method`` itself, or one ``{method}__seed{s}`` per
    seed of ``evaluate.seeds`` (each its own model folder and generated set)."""
    seeds = config["evaluate"]["seeds"]
    return [f"{method}__seed{s}" for s in seeds] if seeds else [method]


def split_run(run: str) -> tuple[str, int | None]:
    """(method, seed) of a run name; the seed is None for the plain method name."""
    match = RUN_NAME.match(run)
    if match is None:
        raise ConfigError(f"{run!r} is not a method or a method__seedN run name")
    seed = match["seed"]
    return match["method"], None if seed is None else int(seed)


def _known_run(config: dict, run: str) -> tuple[str, int | None]:
    method, seed = split_run(run)
    if method == ENHANCE_METHOD and seed is None and enhance_enabled(config):
        return method, seed
    if method not in config["train"]["methods"]:
        raise ConfigError(f"config key train.methods: {method!r} is not one of "
                          f"{config['train']['methods']}")
    if run not in method_runs(config, method):
        raise ConfigError(f"config key evaluate.seeds: run {run!r} is not one of "
                          f"{method_runs(config, method)}")
    return method, seed


def train_spec(config: dict, dataset: str, run: str) -> dict[str, Any]:
    """Everything training a method (a run of it, ``method__seedN``) depends on: the loop keys
    of the ``train`` section (``seed`` replaced by the run's), the method's own section, the
    acquisition and the device switch (not the other methods')."""
    _known_dataset(config, dataset)
    method, seed = _known_run(config, run)
    train = config["train"]
    loop = {k: copy.deepcopy(v) for k, v in train.items()
            if not isinstance(v, dict) and k not in ("methods", "acquisition", "threads")}
    if seed is not None:
        loop["seed"] = seed
    return {"dataset": dataset, "method": method, "run": run, "train": loop,
            "method_settings": copy.deepcopy(train[SETTINGS_SECTION.get(method, method)]),
            "acquisition": _train_acquisition(config), "device": config["device"]}


def generate_spec(config: dict, dataset: str, run: str) -> dict[str, Any]:
    """Everything a generated set depends on: the ``generate`` section, the acquisition
    whose scales it borrows and the device switch."""
    _known_dataset(config, dataset)
    method, _ = _known_run(config, run)
    return {"dataset": dataset, "method": method, "run": run,
            "generate": copy.deepcopy(config["generate"]),
            "acquisition": _train_acquisition(config), "device": config["device"]}


def feature_network_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the domain feature network depends on: its section of ``evaluate`` and the
    acquisition whose images it learns (those Table 1 compares)."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "acquisition": _train_acquisition(config),
            "evaluate": {"feature_network": copy.deepcopy(
                config["evaluate"]["feature_network"])}}


def evaluate_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything Table 1 depends on: the ``evaluate`` section, the methods and the
    acquisition of the real images."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "methods": list(config["train"]["methods"]),
            "runs": {m: method_runs(config, m) for m in config["train"]["methods"]},
            "evaluate": copy.deepcopy(config["evaluate"]),
            "acquisition": _train_acquisition(config)}


def enhance_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the enhancement table depends on: the ``enhance`` section, the device, and
    the downstream detector's settings and acquisition (it scores the enhanced images)."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "enhance": copy.deepcopy(config["enhance"]),
            "downstream": copy.deepcopy(config["downstream"]),
            "held_out_split": config["enhance"]["split"],
            "acquisition": _train_acquisition(config), "device": config["device"]}


def downstream_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the downstream test depends on: its section, the labelled methods, the
    acquisition of the real images, the held-out split and the device."""
    _known_dataset(config, dataset)
    return {"dataset": dataset, "downstream": copy.deepcopy(config["downstream"]),
            "methods": downstream_methods(config), "acquisition": _train_acquisition(config),
            "held_out_split": config["evaluate"]["held_out_split"],
            "bootstrap": int(config["evaluate"]["bootstrap"]), "device": config["device"]}


def scarcity_methods(config: dict) -> list[str]:
    """The labelled generators the data-scarcity curve trains on each subset."""
    chosen = config["scarcity"]["methods"]
    if chosen is None:
        return [m for m in config["train"]["methods"] if m in LABELLED_METHODS]
    return list(chosen)


def scarcity_spec(config: dict, dataset: str) -> dict[str, Any]:
    """Everything the data-scarcity curve depends on: the downstream test's detector
    settings, the ``scarcity`` section and its generators."""
    spec = downstream_spec(config, dataset)
    spec["methods"] = scarcity_methods(config)
    spec["scarcity"] = copy.deepcopy(config["scarcity"])
    return spec


def scarcity_subsets(config: dict, dataset: str) -> list[str]:
    """The subsets (``n{n}_d{draw}``) below ``dataset``'s whole training split."""
    whole = split_counts(int(config["datasets"][dataset]["n_phantoms"]),
                         config["positron_images"]["split_fractions"])[0]
    c = config["scarcity"]
    return [f"n{n}_d{d}" for n in c["sizes"] if n < whole for d in range(int(c["draws"]))]


def _known_dataset(config: dict, dataset: str) -> None:
    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; defined: {', '.join(config['datasets'])}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_sha256(section: Any) -> str:
    """SHA-256 of the canonical JSON of a resolved config section."""
    return hashlib.sha256(canonical_json(section).encode()).hexdigest()
