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
import math
import re
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml

from pipeline.budget import check_limits
from pipeline.split_sizes import split_counts

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "config.yaml"

#: Entry-point group under which a stage registers a check of the validated config.
CHECKS_GROUP = "positron_nde.config_checks"
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


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``key`` with ``message`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"config key {key}: {message}")


_check = check


def stage_checks() -> list[Callable[[dict[str, Any]], None]]:
    """The stages' own checks (entry-point group ``positron_nde.config_checks``, by name)."""
    found = sorted(metadata.entry_points(group=CHECKS_GROUP), key=lambda e: e.name)
    if not found:  # a source tree that was never installed: say so, do not check less
        raise ConfigError(f"no stage registered its config checks (entry points "
                          f"{CHECKS_GROUP}); install the project first: pip install -e .")
    return [entry.load() for entry in found]


def _check_dataset_names(name: str, ds: dict, config: dict) -> None:
    base = f"datasets.{name}"
    for acq in ds["acquisitions"]:
        _check(
            acq in config["acquisitions"],
            f"{base}.acquisitions",
            f"unknown acquisition {acq!r}; defined presets: {', '.join(config['acquisitions'])}",
        )


def _power_of_two(value: int) -> bool:
    return value >= 16 and value & (value - 1) == 0


def _check_generative(config: dict) -> None:
    """Settings of the generative stage that the schema alone cannot check."""
    train = config["train"]
    chosen = config["downstream"]["methods"] or []
    missing = [m for m in chosen if m not in train["methods"]]
    _check(not missing, "downstream.methods",
           f"{missing} are not in train.methods ({train['methods']}): the detector can only "
           "use generated sets the DAG makes")
    _check(train["attention_gan_conditional"]["real_domain"] == "positron"
           or "attention_gan_conditional" not in train["methods"],
           "train.attention_gan_conditional.real_domain",
           "must be positron: CT images carry no defect class to condition on")
    _check_scarcity(config)
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
    evaluate, n_generated = config["evaluate"], config["generate"]["n_images"]
    size = evaluate["sample_size"]
    _check(size is None or size <= n_generated, "evaluate.sample_size",
           f"{size} images per Table 1 row, but each method generates generate.n_images = "
           f"{n_generated}; lower it, or null for the smallest set's size")
    rows = n_generated if size is None else size
    _check(evaluate["kid_subset_size"] <= rows, "evaluate.kid_subset_size",
           f"{evaluate['kid_subset_size']} exceeds the {rows} images of a Table 1 row "
           "(evaluate.sample_size or generate.n_images)")
    _check(evaluate["prdc_k"] < rows, "evaluate.prdc_k",
           f"{evaluate['prdc_k']} neighbours need more than that many images in a Table 1 row "
           f"({rows}: evaluate.sample_size or generate.n_images)")
    ms = config["evaluate"]["msssim"]
    coarsest = images["size_px"] // 2 ** (ms["scales"] - 1)
    _check(coarsest >= ms["window_px"], "evaluate.msssim.scales",
           f"{ms['scales']} scales with a {ms['window_px']} px window need images of at least "
           f"{ms['window_px'] * 2 ** (ms['scales'] - 1)} px; positron_images.size_px is "
           f"{images['size_px']}")


def _check_scarcity(config: dict) -> None:
    """The scarcity curve's subset sizes fit every selected dataset's training split."""
    chosen = config["scarcity"]["methods"] or []
    missing = [m for m in chosen if m not in config["train"]["methods"]]
    _check(not missing, "scarcity.methods",
           f"{missing} are not in train.methods ({config['train']['methods']}): the curve "
           "trains the DAG's generators on each subset")
    sizes = config["scarcity"]["sizes"]
    fractions = config["positron_images"]["split_fractions"]
    for dataset in selected_datasets(config):
        n = config["datasets"][dataset].get("n_phantoms")
        if n is None:
            continue
        n_train = split_counts(int(n), fractions)[0]
        _check(max(sizes) <= n_train, "scarcity.sizes",
               f"{max(sizes)} phantoms asked, but the training split of dataset {dataset!r} "
               f"holds {n_train} of its {n} (positron_images.split_fractions)")


def _check_paths(config: dict) -> None:
    """Files and folders the config names exist, as their readers need them (relative paths
    from the working directory, where Snakemake runs): the CT source, the Inception weights.
    A part's mesh files are read by the simulation stage's check."""
    ct = config["ct_images"]
    if ct["source"] != "synthetic":
        path = Path(ct["path"])
        kind = {"deeplesion": "a folder (Images_png/ and DL_info.csv)",
                "dicom": "a folder of DICOM series", "nifti": "a .nii/.nii.gz file or a folder"}
        _check(path.exists(), "ct_images.path",
               f"{path} does not exist (source {ct['source']!r} reads {kind[ct['source']]} "
               f"there; relative paths are read from {Path.cwd()})")
        _check(ct["source"] == "nifti" or path.is_dir(), "ct_images.path",
               f"{path} is a file; source {ct['source']!r} reads {kind[ct['source']]}")
    weights = config["evaluate"]["inception_weights"]
    if weights:
        _check(Path(weights).is_file(), "evaluate.inception_weights",
               f"{weights} is not a file (the Inception-v3 FID weights; null skips the "
               "standard FID)")


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


#: A number written as YAML 1.2 and JSON read it (``6e5``, ``1.0e15``, ``-2E-3``) but YAML 1.1,
#: which PyYAML and Snakemake follow, leaves a string (it needs a dot and a signed exponent).
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _read_numbers(config: dict[str, Any], validator) -> None:
    """Turn strings that spell a finite number into that number where the schema wants one
    (``activity_bq: 6e5`` in an overlay, ``--config steps=300``), in place; anything else
    is left for the schema's own error."""
    for _ in range(1000):  # each pass fixes every such value the validator reports
        fixed = 0
        for error in validator.iter_errors(config):
            wanted = error.validator_value if error.validator == "type" else None
            wanted = wanted if isinstance(wanted, list) else [wanted]
            text = error.instance
            if not (isinstance(text, str) and _NUMBER.fullmatch(text.strip())
                    and {"number", "integer"} & set(wanted)):
                continue
            value = float(text)
            if "number" not in wanted:
                if not value.is_integer():
                    continue
                value = int(value)
            if not math.isfinite(value):
                continue
            *parents, leaf = error.absolute_path
            node = config
            for key in parents:
                node = node[key]
            node[leaf] = value
            fixed += 1
        if not fixed:
            return


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
    _read_numbers(resolved, validator)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.path)))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(_explain(errors[0]) + more)

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
    _check(recon["kernel"] == "none" or recon["attenuation_correction"], "recon.kernel",
           "the kernel method (mu) is built from the mu map and needs "
           "recon.attenuation_correction: true; set recon.kernel: none for plain EM")
    views = resolved["scanner"]["crystals_per_ring"] // 2
    _check(recon["mode"] == "3d" or recon["subsets"] <= views, "recon.subsets",
           f"{recon['subsets']} subsets of interleaved views, but the sinogram has {views} views")
    # A preset named like an engine reads as one in paths and tables (fast_vs_x/fast.h5).
    engines = load_schema()["properties"]["engine"]["enum"]
    for name in resolved["acquisitions"]:
        _check(name not in engines, f"acquisitions.{name}",
               f"a preset may not share its name with an engine ({', '.join(engines)}); "
               "rename it")
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
        _check_dataset_names(name, ds, resolved)
    for stage_check in stage_checks():
        stage_check(resolved)
    _check_paths(resolved)
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
