"""Config validation: defaults, documentation of every key, and each bad-config case."""

from __future__ import annotations

import copy

import pytest
from snakemake.cli import parse_config

from pipeline.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    load_config,
    load_schema,
    validate_config,
)
from pipeline.specs import phantom_index, phantom_names


def _walk(schema: dict, path: str = ""):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}".lstrip("."), sub
        yield from _walk(sub, f"{path}.{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, f"{path}.<name>")


def test_every_key_has_description_and_default():
    keys = list(_walk(load_schema()))
    assert len(keys) > 60
    for key, sub in keys:
        assert sub.get("description"), f"{key} has no description"
        assert "default" in sub, f"{key} has no default"


def test_empty_config_takes_schema_defaults():
    cfg = validate_config({})
    assert cfg["engine"] == "fast" and cfg["device"] == "auto"
    assert cfg["scanner"]["crystals_per_ring"] == 184 and cfg["scanner"]["rings"] == 64
    assert cfg["scanner"]["energy_window_kev"] == [350.0, 650.0]
    assert cfg["acquisitions"]["paper"] == {"activity_bq": 600.0, "duration_s": 0.1,
                                            "half_life_s": 6586.2}
    assert cfg["datasets"]["tubes"]["defects"]["crack"]["width_mm"] == [0.2, 1.0]


def test_default_config_file_is_valid(default_config):
    assert phantom_names(default_config, "tubes") == [f"tube_{i:04d}" for i in range(4)]


def _bad(update: dict) -> dict:
    cfg = copy.deepcopy(load_config())
    for dotted, value in update.items():
        node = cfg
        *parents, leaf = dotted.split("/")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


@pytest.mark.parametrize("update, key, text", [
    ({"scanner/crystal_pitch_mm": -4.0}, "scanner.crystal_pitch_mm",
     "-4.0 is less than or equal to the minimum of 0"),
    ({"scanner/rings": 0}, "scanner.rings", "less than the minimum"),
    ({"scanner/crystals_per_ring": 185}, "scanner", "not a multiple of modules_per_ring"),
    ({"datasets/tubes/grid/shape": [56, 64, 64]}, "datasets.tubes.tube.outer_radius_mm",
     "does not fit the grid"),
    ({"datasets/tubes/tube/wall_thickness_mm": [40.0, 45.0]},
     "datasets.tubes.tube.wall_thickness_mm", "not thinner than the smallest outer radius"),
    ({"datasets/tubes/tube/eccentricity_mm": [0.5, 4.5]}, "datasets.tubes.tube.eccentricity_mm",
     "cut through the thinnest wall"),
    ({"datasets/tubes/tube/outer_radius_mm": [42.0, 38.0]}, "datasets.tubes.tube.outer_radius_mm",
     "min > max"),
    ({"datasets/tubes/defects/types": {"crack": 1.0, "scratch": 1.0}},
     "datasets.tubes.defects.types", "unknown key(s) 'scratch'"),
    ({"datasets/tubes/acquisitions": ["short", "slow"]}, "datasets.tubes.acquisitions",
     "unknown acquisition 'slow'"),
    ({"engine": "geant"}, "engine", "'geant' is not one of fast, opengate, gate9"),
    ({"acquisitions/fast": {"activity_bq": 1e5, "duration_s": 1.0}}, "acquisitions.fast",
     "may not share its name with an engine"),
    ({"run_datasets": ["nope"]}, "run_datasets", "unknown dataset 'nope'"),
    ({"datasets/tubes/defects/bubble/diameter_mm": [2.0, 80.0]},
     "datasets.tubes.defects.bubble.diameter_mm", "does not fit the narrowest bore"),
    # 170 mm square, corners 120.2 mm from the axis, bore 116.4 mm: the box meets crystals.
    ({"datasets/tubes/grid/voxel_size_mm": [2.0, 1.7708, 1.7708]}, "datasets.tubes.grid",
     "transaxial corners lie 120.2 mm from the axis, beyond the scanner bore"),
    ({"recon/tof": True}, "recon.tof", "needs recon.mode: 3d"),
    ({"recon/attenuation_correction": False}, "recon.scatter",
     "needs recon.attenuation_correction: true"),
    ({"recon/subsets": 93}, "recon.subsets", "the sinogram has 92 views"),
    ({"recon/attenuation_correction": False, "recon/scatter": "none", "recon/kernel": "mu"},
     "recon.kernel", "needs recon.attenuation_correction: true"),
    ({"recon/kernel": "mri"}, "recon.kernel", "'mri' is not one of none, mu"),
    ({"recon/kernel_window": [1, 2]}, "recon.kernel_window", "too short"),
    ({"recon/psf_fwhm_mm": float("nan")}, "recon.psf_fwhm_mm", "NaN"),
    ({"datasets/tubes/acquisitions": ["paper"]}, "datasets.tubes.acquisitions",
     "holds neither positron_images.low_count ('short') nor positron_images.reference"),
    ({"ct_images/source": "deeplesion"}, "ct_images.path", "needs the path of the CT data"),
    ({"positron_images/split_fractions": [0.0, 0.5, 0.5]}, "positron_images.split_fractions",
     "train fraction must be positive"),
    # Known from the config, refused by the dry run rather than in the job:
    ({"scanner/delayed_window_offset_ns": 5.0}, "scanner",
     "delayed_window_offset_ns (5.0 ns) must exceed the coincidence window (10.0 ns)"),
    ({"positron_images/low_count": "fsat"}, "positron_images.low_count",
     "unknown acquisition 'fsat'"),
    ({"positron_images/reference": "refrence"}, "positron_images.reference",
     "unknown acquisition 'refrence'"),
])
def test_bad_config_names_the_key(update, key, text):
    with pytest.raises(ConfigError) as info:
        validate_config(_bad(update))
    message = str(info.value)
    assert f"config key {key}:" in message
    assert text in message


def test_nested_value_given_on_the_command_line_arrives_as_string():
    # What Snakemake's own --config parser makes of `--config scanner="{rings: 32}"`.
    override = parse_config(["scanner={rings: 32}"])
    assert override == {"scanner": {"rings": "32"}}
    cfg = load_config(overrides=None)
    cfg["scanner"].update(override["scanner"])
    assert validate_config(cfg)["scanner"]["rings"] == 32  # the number it spells
    cfg["scanner"]["rings"] = "32 rings"
    with pytest.raises(ConfigError, match=r"config key scanner.rings: expected an integer, got "
                                          r"the string '32 rings'.*--configfile"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="config key datasets: expected a mapping, got the "
                                          "string 'tubes'"):
        validate_config({**load_config(), **parse_config(["datasets=tubes"])})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML at line 2, column 1"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(empty)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- engine: fast\n")
    with pytest.raises(ConfigError, match="listed.yaml: top level must be a mapping"):
        load_config(listed)


def test_overlay_merges(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("datasets:\n  tubes:\n    n_phantoms: 2\n  more:\n    n_phantoms: 1\n")
    cfg = load_config(load_schema.__globals__["DEFAULT_CONFIG_PATH"], overlay)
    assert cfg["datasets"]["tubes"]["n_phantoms"] == 2
    assert cfg["datasets"]["tubes"]["seed"] == 2026  # kept from the base file
    assert cfg["datasets"]["more"]["family"] == "tube"  # schema default


def test_phantom_index_errors(default_config):
    assert phantom_index(default_config, "tubes", "tube_0003") == 3
    with pytest.raises(ConfigError, match="'tube_0004' is not part of dataset 'tubes'"):
        phantom_index(default_config, "tubes", "tube_0004")
    with pytest.raises(ConfigError, match="unknown dataset 'x'"):
        phantom_index(default_config, "x", "tube_0000")


def test_phantom_index_accepts_exactly_the_dataset_names(default_config):
    """Against the slow reference: membership in the list of the dataset's names."""
    cfg = copy.deepcopy(default_config)
    cfg["datasets"]["tubes"]["n_phantoms"] = 12000
    names = phantom_names(cfg, "tubes")
    candidates = [*names[::997], names[-1], "tube_12000", "tube_00001", "tube_1", "tube_-001",
                  "point_0001", "tube_0001x", "Tube_0001", "tube_10000", "tube_011999", ""]
    for name in candidates:
        if name in names:
            assert phantom_index(cfg, "tubes", name) == names.index(name)
        else:
            with pytest.raises(ConfigError, match=f"{name!r} is not part of dataset 'tubes' "
                                                  r"\(expected tube_0000 ... tube_11999\)"):
                phantom_index(cfg, "tubes", name)


def test_the_stages_checks_run_and_their_absence_is_an_error(monkeypatch):
    """The core runs the checks a stage registered (sim's refuses a scanner whose modules do
    not tile the ring) and refuses to validate with none registered (an uninstalled tree)."""
    import pipeline.config as core

    assert "sim" in {e.name for e in core.metadata.entry_points(group=core.CHECKS_GROUP)}
    with pytest.raises(ConfigError, match="config key scanner"):
        validate_config({"scanner": {"crystals_per_ring": 185}})
    monkeypatch.setattr(core.metadata, "entry_points", lambda group: [])
    with pytest.raises(ConfigError, match="pip install -e"):
        validate_config({})


def test_paths_the_config_names_must_exist_before_any_job(tmp_path, monkeypatch):
    """The CT source and the Inception weights are looked for when the config is validated
    (the dry run), relative to the working directory, with what the reader needs there."""
    monkeypatch.chdir(tmp_path)
    cases = [({"ct_images": {"source": "deeplesion", "path": "DeepLesion"}},
              "config key ct_images.path: DeepLesion does not exist (source 'deeplesion' reads "
              f"a folder (Images_png/ and DL_info.csv) there; relative paths are read from "
              f"{tmp_path})"),
             ({"ct_images": {"source": "dicom", "path": "scan.nii.gz"}},
              "config key ct_images.path: scan.nii.gz is a file; source 'dicom' reads a folder "
              "of DICOM series"),
             ({"evaluate": {"inception_weights": "pt_inception.pth"}},
              "config key evaluate.inception_weights: pt_inception.pth is not a file")]
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    for overlay, message in cases:
        with pytest.raises(ConfigError) as info:
            load_config(DEFAULT_CONFIG_PATH, overrides=overlay)
        assert str(info.value).startswith(message), info.value
    # Where they are, they pass: a NIfTI file, a DICOM folder, the weights file.
    (tmp_path / "series").mkdir()
    (tmp_path / "pt_inception.pth").write_bytes(b"w")
    for overlay in ({"ct_images": {"source": "nifti", "path": "scan.nii.gz"}},
                    {"ct_images": {"source": "dicom", "path": "series"}},
                    {"evaluate": {"inception_weights": "pt_inception.pth"}}):
        load_config(DEFAULT_CONFIG_PATH, overrides=overlay)
