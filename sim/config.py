"""Pipeline configuration: load, fill defaults, validate, and cut per-job sections.

``config/schema.yaml`` is the single source of keys, descriptions and defaults. Validation has
two layers, both run when the Snakefile loads (and by every CLI that reads a config file):

1. JSON schema (types, ranges, enums, unknown keys), with defaults filled in;
2. consistency between keys (a wall thicker than the radius, a tube that does not fit its
   voxel grid or the scanner bore, an acquisition name that is not defined, ...).

Any problem raises :class:`ConfigError` with one message that names the key path.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from sim.budget import check_limits
from sim.scanner import Scanner

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"

#: Phantom names are ``{family}_{index:04d}``.
PHANTOM_NAME = re.compile(r"^(?P<family>[a-z]+)_(?P<index>\d{4,})$")


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what is wrong."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """The JSON schema as a dict."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _ordered_range(validator, enabled, instance, schema) -> Iterator[jsonschema.ValidationError]:
    if enabled and isinstance(instance, list) and len(instance) == 2:
        lo, hi = instance
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            yield jsonschema.ValidationError(f"range [{lo}, {hi}] has min > max")


def _properties_with_defaults(validate_properties):
    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if key not in instance and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return properties


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {
        "properties": _properties_with_defaults(
            jsonschema.Draft202012Validator.VALIDATORS["properties"]
        ),
        "orderedRange": _ordered_range,
    },
)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


_JSON_TYPES = {"object": "a mapping", "array": "a list", "integer": "an integer",
               "number": "a number", "string": "a string", "boolean": "true or false"}


def _explain(error: jsonschema.ValidationError) -> str:
    key = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        dotted = [k for k in extra if "." in str(k)]
        if dotted:
            hint += "; nested keys cannot be set with --config, use an overlay with --configfile"
        return f"config key {key}: unknown key(s) {', '.join(map(repr, extra))}{hint}"
    if error.validator == "type":
        wanted = error.validator_value
        wanted_text = " or ".join(_JSON_TYPES.get(w, w) for w in (
            wanted if isinstance(wanted, list) else [wanted]))
        got = error.instance
        if isinstance(got, str):
            return (
                f"config key {key}: expected {wanted_text}, got the string {got!r}; "
                "values given with --config arrive as strings when nested: put nested settings "
                "in a YAML overlay passed with --configfile"
            )
        return f"config key {key}: expected {wanted_text}, got {got!r}"
    if error.validator == "enum":
        return (
            f"config key {key}: {error.instance!r} is not one of "
            f"{', '.join(map(str, error.validator_value))}"
        )
    return f"config key {key}: {error.message}"


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key {key}: {message}")


def _check_dataset(name: str, ds: dict, config: dict, scanner: Scanner) -> None:
    base = f"datasets.{name}"
    for acq in ds["acquisitions"]:
        _check(
            acq in config["acquisitions"],
            f"{base}.acquisitions",
            f"unknown acquisition {acq!r}; defined presets: {', '.join(config['acquisitions'])}",
        )
    nz, ny, nx = ds["grid"]["shape"]
    dz, dy, dx = ds["grid"]["voxel_size_mm"]
    half_xy_mm = min(ny * dy, nx * dx) / 2.0
    length_z_mm = nz * dz
    bore_mm = scanner.inner_radius_mm
    family = ds["family"]
    if family == "tube":
        tube = ds["tube"]
        t = f"{base}.tube"
        r_min, r_max = tube["outer_radius_mm"]
        w_min, w_max = tube["wall_thickness_mm"]
        e_max = tube["eccentricity_mm"][1] if tube["anisotropic_probability"] > 0 else 0.0
        _check(w_max < r_min, f"{t}.wall_thickness_mm",
               f"wall up to {w_max} mm is not thinner than the smallest outer radius {r_min} mm")
        _check(e_max < w_min, f"{t}.eccentricity_mm",
               f"bore offset up to {e_max} mm would cut through the thinnest wall ({w_min} mm)")
        _check(2 * tube["end_cap_mm"] < tube["length_mm"][0], f"{t}.end_cap_mm",
               f"two end caps of {tube['end_cap_mm']} mm leave no bore in a tube of "
               f"{tube['length_mm'][0]} mm")
        _check(r_max <= half_xy_mm, f"{t}.outer_radius_mm",
               f"outer radius up to {r_max} mm does not fit the grid ({half_xy_mm} mm half-width)")
        _check(tube["length_mm"][1] <= length_z_mm, f"{t}.length_mm",
               f"tube length up to {tube['length_mm'][1]} mm does not fit the grid "
               f"({length_z_mm} mm along z)")
        _check(r_max < bore_mm, f"{t}.outer_radius_mm",
               f"outer radius up to {r_max} mm does not fit the scanner bore ({bore_mm:.1f} mm)")
        defects = ds["defects"]
        d = f"{base}.defects"
        if defects["count"][1] > 0:
            _check(sum(defects["types"].values()) > 0, f"{d}.types",
                   "all defect weights are 0 but defects.count allows defects")
        bore_min_mm = r_min - w_max - e_max
        inner_length_min_mm = tube["length_mm"][0] - 2 * tube["end_cap_mm"]
        for kind in ("inclusion", "bubble"):
            dmax = defects[kind]["diameter_mm"][1]
            _check(dmax < bore_min_mm, f"{d}.{kind}.diameter_mm",
                   f"diameter up to {dmax} mm does not fit the narrowest bore radius "
                   f"({bore_min_mm} mm)")
            _check(dmax < inner_length_min_mm, f"{d}.{kind}.diameter_mm",
                   f"diameter up to {dmax} mm does not fit the bore length "
                   f"({inner_length_min_mm} mm)")
        for kind, key in (("crack", "length_mm"), ("hole", "diameter_mm"), ("pit", "diameter_mm")):
            size = defects[kind][key][1]
            _check(size < inner_length_min_mm, f"{d}.{kind}.{key}",
                   f"{size} mm does not fit the bore length ({inner_length_min_mm} mm)")
        _check(defects["pit"]["diameter_mm"][1] < 2 * bore_min_mm, f"{d}.pit.diameter_mm",
               "pit larger than the bore")
    elif family in ("point", "line"):
        src = ds[family]
        x, y, z = src["position_mm"]
        radius = src["diameter_mm"] / 2.0
        half_len = src.get("length_mm", src["diameter_mm"]) / 2.0
        _check(max(abs(x), abs(y)) + radius <= half_xy_mm and abs(z) + half_len <= length_z_mm / 2,
               f"{base}.{family}.position_mm", "source does not fit inside the voxel grid")
        _check((x * x + y * y) ** 0.5 + radius < bore_mm, f"{base}.{family}.position_mm",
               f"source lies outside the scanner bore ({bore_mm:.1f} mm)")
    elif family == "part":
        _check_part(base, ds, np.array([nx * dx, ny * dy, nz * dz]) / 2.0, bore_mm)
    elif family == "nema":
        nema = ds["nema"]
        radius = nema["diameter_mm"] / 2.0
        _check(radius <= half_xy_mm, f"{base}.nema.diameter_mm",
               f"cylinder radius {radius} mm does not fit the grid ({half_xy_mm} mm half-width)")
        _check(nema["length_mm"] <= length_z_mm, f"{base}.nema.length_mm",
               f"cylinder length does not fit the grid ({length_z_mm} mm)")
        _check(radius < bore_mm, f"{base}.nema.diameter_mm",
               f"cylinder does not fit the scanner bore ({bore_mm:.1f} mm)")
        _check(nema["line_offset_mm"] + nema["line_diameter_mm"] / 2 < radius,
               f"{base}.nema.line_offset_mm", "line source lies outside the cylinder")


def _check_part(base: str, ds: dict, half_extent_xyz_mm: np.ndarray, bore_mm: float) -> None:
    """A ``part`` dataset: its volumes, their mesh files (read and checked) and the fit."""
    # Imported here: trimesh is needed by this family only.
    from sim.parts.files import PartError
    from sim.parts.layout import PartSettings, check_fit, load_part

    _check(ds.get("part") is not None, f"{base}.part",
           "family 'part' needs a part section (volumes and fill; see config/parts.yaml)")
    try:
        settings = PartSettings.from_config(ds["part"])
    except ValueError as exc:
        raise ConfigError(f"config key {base}.part.{exc}") from None
    for v in settings.volumes:
        _check(v.name not in settings.fill or v.material != "air", f"{base}.part.fill",
               f"volume {v.name!r} is of air; a cavity holding the solution needs its carrier "
               "(e.g. water) as material")
    weights, count = ds["defects"]["types"], ds["defects"]["count"]
    wall_defects = count[1] > 0 and any(weights[k] > 0 for k in ("crack", "hole", "pit"))
    _check(not wall_defects or any(v.name not in settings.fill and v.material != "air"
                                   for v in settings.volumes), f"{base}.defects.types",
           "cracks, holes and pits go into the part's walls, but no volume is a solid one "
           "(neither filled nor air); set their weights to 0")
    lo, hi = settings.rotation_z_deg
    try:
        check_fit(load_part(settings, lo), half_extent_xyz_mm, bore_mm, turns_about_z=hi > lo)
    except PartError as exc:
        raise ConfigError(f"config key {base}.part.volumes: {exc}") from None


def _power_of_two(value: int) -> bool:
    return value >= 16 and value & (value - 1) == 0


def _check_generative(config: dict) -> None:
    """Settings of the generative stage that the schema alone cannot check."""
    train = config["train"]
    if not train["methods"]:
        return
    images, ct = config["positron_images"], config["ct_images"]
    for key, size in (("positron_images.size_px", images["size_px"]),
                      ("ct_images.size_px", ct["size_px"])):
        _check(_power_of_two(size), key,
               f"{size} px is not supported by the generative networks (train.methods is "
               f"{train['methods']}): they need a power of two of at least 16 "
               "(16, 32, 64, 128, 256, ...)")
    acquisition = train["acquisition"]
    _check(acquisition is None or acquisition in (images["low_count"], images["reference"]),
           "train.acquisition",
           f"{acquisition!r} is neither positron_images.low_count ({images['low_count']!r}) nor "
           f"positron_images.reference ({images['reference']!r}); null takes every image")
    gan = train["attention_gan"]
    _check(gan["real_domain"] != "ct" or ct["size_px"] == images["size_px"],
           "train.attention_gan.real_domain",
           f"'ct' shows CT images to the discriminator as real, but ct_images.size_px "
           f"({ct['size_px']}) differs from positron_images.size_px ({images['size_px']})")
    feats = config["positron_features"]
    k = feats["patch_px"]
    _check(k % 2 == 1 and k <= images["size_px"], "positron_features.patch_px",
           f"{k} must be odd and at most positron_images.size_px ({images['size_px']})")
    _check(max(feats["filters"]) <= k * k, "positron_features.filters",
           f"{feats['filters']}: a {k} x {k} patch has at most {k * k} principal directions")
    _check(feats["block_px"] <= images["size_px"], "positron_features.block_px",
           f"{feats['block_px']} px blocks do not fit {images['size_px']} px images")
    ms = config["evaluate"]["msssim"]
    coarsest = images["size_px"] // 2 ** (ms["scales"] - 1)
    _check(coarsest >= ms["window_px"], "evaluate.msssim.scales",
           f"{ms['scales']} scales with a {ms['window_px']} px window need images of at least "
           f"{ms['window_px'] * 2 ** (ms['scales'] - 1)} px; positron_images.size_px is "
           f"{images['size_px']}")


def _check_job_settings(config: dict) -> None:
    """Build the typed settings every simulate job builds from the config, so that what
    their constructors refuse is refused by the dry run, not in the job."""
    # Imported here: the engine modules are heavier than the validator needs otherwise.
    from sim.coincidences import SorterSettings
    from sim.digitizer import DigitizerSettings
    from sim.engine_fast import EngineSettings

    for section, build in (("scanner", SorterSettings.from_config),
                           ("scanner", DigitizerSettings.from_config),
                           ("simulation", EngineSettings.from_config)):
        try:
            build(config[section])
        except ValueError as exc:
            raise ConfigError(f"config key {section}: {exc}") from None


def _non_finite(node: Any, path: tuple = ()) -> Iterator[str]:
    """Key paths of NaN or infinite numbers anywhere in a config."""
    if isinstance(node, float) and not np.isfinite(node):
        yield _key_path(path)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _non_finite(value, (*path, i))


def validate_config(config: dict[str, Any], schema: dict | None = None) -> dict[str, Any]:
    """Validate a config and return a copy with every default filled in.

    Raises
    ------
    ConfigError
        On the first problem found, with the key path and what is wrong.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    resolved = copy.deepcopy(config)
    for key in _non_finite(resolved):
        raise ConfigError(f"config key {key}: NaN or infinity is not a valid value")
    validator = _Validator(load_schema() if schema is None else schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.path)))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(_explain(errors[0]) + more)

    try:
        scanner = Scanner.from_config(resolved["scanner"])
    except ValueError as exc:
        raise ConfigError(f"config key scanner: {exc}") from None
    _check_job_settings(resolved)
    for name in resolved["run_datasets"]:
        _check(name in resolved["datasets"], "run_datasets",
               f"unknown dataset {name!r}; defined: {', '.join(resolved['datasets'])}")
    for name in resolved["acquisitions"]:
        _check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) is not None,
               f"acquisitions.{name}",
               "acquisition names may hold letters, digits, '_' and '-' only (they become files)")
    recon = resolved["recon"]
    _check(not recon["tof"] or recon["mode"] == "3d", "recon.tof",
           "time of flight needs recon.mode: 3d (2D rebinning drops the TOF information)")
    _check(recon["scatter"] == "none" or recon["attenuation_correction"], "recon.scatter",
           "scatter estimation (sss) needs recon.attenuation_correction: true (the mu map); "
           "set recon.scatter: none to reconstruct without both")
    views = scanner.crystals_per_ring // 2
    _check(recon["mode"] == "3d" or recon["subsets"] <= views, "recon.subsets",
           f"{recon['subsets']} subsets of interleaved views, but the sinogram has {views} views")
    images = resolved["positron_images"]
    for key in ("low_count", "reference"):
        _check(images[key] in resolved["acquisitions"], f"positron_images.{key}",
               f"unknown acquisition {images[key]!r}; defined presets: "
               f"{', '.join(resolved['acquisitions'])}")
    for key in ("positron_images", "ct_images"):
        _check(resolved[key]["split_fractions"][0] > 0, f"{key}.split_fractions",
               "the train fraction must be positive")
    for name in selected_datasets(resolved):
        acquisitions = resolved["datasets"][name]["acquisitions"]
        _check(images["low_count"] in acquisitions or images["reference"] in acquisitions,
               f"datasets.{name}.acquisitions",
               f"holds neither positron_images.low_count ({images['low_count']!r}) nor "
               f"positron_images.reference ({images['reference']!r}): no images to cut")
    ct = resolved["ct_images"]
    _check(ct["source"] == "synthetic" or ct["path"], "ct_images.path",
           f"source {ct['source']!r} needs the path of the CT data")
    _check_generative(resolved)
    for name, ds in resolved["datasets"].items():
        _check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) is not None, f"datasets.{name}",
               "dataset names may hold letters, digits, '_' and '-' only (they become folders)")
        _check_dataset(name, ds, resolved, scanner)
    # Last: the estimates assume every other setting is sound.
    for key, message in check_limits(resolved):
        raise ConfigError(f"config key {key}: {message}")
    return resolved


def load_config(*paths: Path | str, overrides: dict | None = None) -> dict[str, Any]:
    """Load YAML files (later ones deep-merged over earlier), apply overrides, validate.

    With no path, the repository's ``config/config.yaml`` is used.
    """
    merged: dict[str, Any] = {}
    for path in paths or (DEFAULT_CONFIG_PATH,):
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh)
            if data is None:
                raise ConfigError(f"config file {path} is empty (Snakemake refuses empty config "
                                  "files; leave it out instead)")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        deep_merge(merged, data)
    deep_merge(merged, overrides or {})
    return validate_config(merged)


def deep_merge(base: dict, update: dict) -> dict:
    """Merge ``update`` into ``base`` recursively (like Snakemake's config merging)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


# ---------------------------------------------------------------------- per-job sections
def selected_datasets(config: dict) -> list[str]:
    """Datasets the default target builds (``run_datasets``, or all)."""
    return list(config["run_datasets"]) or list(config["datasets"])


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


def phantom_spec(config: dict, dataset: str, phantom: str) -> dict[str, Any]:
    """Everything a phantom job depends on: its dataset section (minus acquisitions), its
    index and name, and the scanner bore. Hashing this gives ``config_sha256``."""
    index = phantom_index(config, dataset, phantom)
    # Unset optional sections (`part: null` of the other families) stay out, so that adding
    # them to the schema left the existing phantoms' specs, hashes and files unchanged.
    section = {k: v for k, v in config["datasets"][dataset].items()
               if k != "acquisitions" and v is not None}
    return {
        "dataset": dataset,
        "phantom": phantom,
        "index": index,
        **copy.deepcopy(section),
        "scanner_inner_radius_mm": Scanner.from_config(config["scanner"]).inner_radius_mm,
    }


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


#: A training run of a method with its own seed: ``{method}__seed{seed}``.
RUN_NAME = re.compile(r"^(?P<method>[a-z_]+?)(__seed(?P<seed>\d+))?$")


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
            "method_settings": copy.deepcopy(train[method]),
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
    """Everything the domain feature network depends on: its section of ``evaluate``."""
    _known_dataset(config, dataset)
    return {"dataset": dataset,
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


def _known_dataset(config: dict, dataset: str) -> None:
    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; defined: {', '.join(config['datasets'])}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, the form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_sha256(section: Any) -> str:
    """SHA-256 of the canonical JSON of a resolved config section."""
    return hashlib.sha256(canonical_json(section).encode()).hexdigest()
