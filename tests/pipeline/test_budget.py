"""Memory and disk estimates of a config, refused before any job starts when they cannot fit:
checked against sizes computed by hand in the test and against a real phantom job."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from pipeline.budget import GB, dataset_needs
from pipeline.config import ConfigError, deep_merge, load_config, validate_config


def test_needs_are_the_documented_per_voxel_and_per_decay_costs():
    ds = {"grid": {"shape": [10, 20, 30]}, "n_phantoms": 7, "acquisitions": ["a", "b"]}
    acquisitions = {"a": {"activity_bq": 1000.0, "duration_s": 2.0},
                    "b": {"activity_bq": 5.0, "duration_s": 4.0}}
    needs = dataset_needs(ds, acquisitions)
    voxels = 10 * 20 * 30
    assert needs.job_memory_bytes == pytest.approx(150e6 + 1000 * voxels)
    assert needs.disk_bytes == pytest.approx(7 * (6 * voxels + 10 * (2000 + 20)))


@pytest.mark.parametrize("overlay, key, text", [
    ({"datasets": {"tubes": {"grid": {"shape": [40000, 96, 96]}}}},
     "datasets.tubes.grid.shape",
     "a phantom of 40000x96x96 voxels needs about 369 GB of memory"),
    ({"datasets": {"tubes": {"n_phantoms": 10**9}}}, "datasets.tubes.n_phantoms",
     "1000000000 phantoms of 56x96x96 voxels with acquisitions short, reference need about"),
    ({"acquisitions": {"reference": {"duration_s": 1e9}}}, "acquisitions.reference",
     "600000 Bq for 1e+09 s is 6e+14 decays: one list-mode file of about 6e+06 GB, more than"),
    # A file fits, the dataset's files together do not.
    ({"acquisitions": {"reference": {"duration_s": 1e4}}, "limits": {"disk_gb": 100}},
     "datasets.tubes.n_phantoms", "need about 240 GB of disk"),
    # The reconstruction reads a list-mode file whole (0.3 x 89 bytes per decay).
    ({"acquisitions": {"reference": {"activity_bq": 1e9, "duration_s": 10.0}},
      "limits": {"disk_gb": 1e6, "memory_gb": 24}}, "acquisitions.reference",
     "the reconstruct tubes/reference job needs about 268 GB of memory"),
    ({"limits": {"memory_gb": 0.1}}, "datasets.tubes.grid.shape",
     "more than the 0.1 GB available (limits.memory_gb)"),
    ({"limits": {"disk_gb": 0.2}}, "datasets.tubes.n_phantoms",
     "more than the 0.2 GB free (limits.disk_gb)"),
    ({"limits": {"disk_gb": 0.01}}, "acquisitions.reference",
     "one list-mode file of about 0.06 GB, more than the 0.01 GB free (limits.disk_gb)"),
])
def test_what_cannot_fit_is_refused_with_the_numbers(overlay, key, text):
    cfg = deep_merge(load_config(), overlay)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert f"config key {key}: " in str(info.value) and text in str(info.value), info.value


#: A value that makes each kind of job the default run plans absurdly long, and the key the
#: refusal must name: every job's expected wall time is held to limits.job_runtime_h.
ABSURD_RUNTIMES = [
    ({"train": {"steps": 10**12}}, "train.steps", "the train attention_gan job"),
    ({"train": {"steps": 1.0e12}}, "train.steps", "years"),
    ({"pretrain_vae": {"steps": 10**11}}, "pretrain_vae.steps", "the pretrain_vae job"),
    ({"evaluate": {"feature_network": {"epochs": 10**9}}}, "evaluate.feature_network.epochs",
     "the feature_network of tubes job"),
    ({"downstream": {"epochs": 10**9}}, "downstream.epochs", "the downstream of tubes job"),
    ({"datasets": {"tubes": {"grid": {"shape": [40_000_000, 96, 96]}}},
      "limits": {"memory_gb": 1e9, "disk_gb": 1e9}}, "datasets.tubes.grid.shape",
     "the phantom of tubes job"),
    ({"acquisitions": {"reference": {"activity_bq": 1e9, "duration_s": 1e9}},
      "limits": {"disk_gb": 1e12}}, "acquisitions.reference",
     "the simulate tubes/reference job"),
    ({"limits": {"job_runtime_h": 0.01}}, "acquisitions.reference",
     "longer than limits.job_runtime_h (0.01 h)"),
]


@pytest.mark.parametrize("overlay, key, text", ABSURD_RUNTIMES,
                         ids=[case[1] for case in ABSURD_RUNTIMES])
def test_a_job_that_would_run_too_long_is_refused_naming_what_sizes_it(overlay, key, text):
    cfg = deep_merge(load_config(), overlay)
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert message.startswith(f"config key {key}: ") and text in message, message
    assert "limits.job_runtime_h" in message


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML, Snakemake) reads ``6e5`` as a string; the config reads it as the
    number it spells wherever the schema wants one, and still refuses what is not one."""
    overlay = tmp_path / "counts.yaml"
    overlay.write_text("acquisitions:\n  reference: {activity_bq: 6e5, duration_s: 1.5E+1}\n"
                       "train: {steps: 3e2}\n")
    from pipeline.config import DEFAULT_CONFIG_PATH

    cfg = load_config(DEFAULT_CONFIG_PATH, overlay)
    assert cfg["acquisitions"]["reference"] == {"activity_bq": 600000.0, "duration_s": 15.0,
                                                "half_life_s": 6586.2}
    assert cfg["train"]["steps"] == 300 and isinstance(cfg["train"]["steps"], int)
    for text, message in (("train: {steps: 3.5e0}\n", "config key train.steps: expected an "
                                                       "integer, got the string '3.5e0'"),
                          ("acquisitions: {reference: {activity_bq: 6e5x}}\n",
                           "acquisitions.reference.activity_bq: expected a number"),
                          ("acquisitions: {reference: {activity_bq: -6e5}}\n",
                           "-600000.0 is less than or equal to the minimum of 0")):
        overlay.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(DEFAULT_CONFIG_PATH, overlay)


def test_a_job_that_needs_more_memory_than_one_job_may_use_is_refused():
    # 2 GB: the phantom job fits (0.67 GB), the positron features of 4 tubes do not (2.2 GB).
    cfg = deep_merge(load_config(), {"limits": {"memory_gb": 2.0}})
    with pytest.raises(ConfigError, match=r"^config key datasets.tubes.n_phantoms: the "
                                          r"positron_features of tubes job needs about 2.2 GB"):
        validate_config(cfg)
    # No training planned: no features job, nothing refused.
    validate_config(deep_merge(cfg, {"train": {"methods": []}, "downstream": {"methods": []}}))


@pytest.mark.parametrize("overlay", [None, "table1.yaml", "parts.yaml", "qa.yaml",
                                     "cluster_test.yaml"])
def test_the_shipped_configs_fit_their_limits(overlay):
    from pipeline.config import REPO_ROOT
    from pipeline.job_resources import planned_jobs

    cfg = load_config(REPO_ROOT / "config/config.yaml",
                      *([REPO_ROOT / "config" / overlay] if overlay else []))
    jobs = planned_jobs(cfg)
    assert {j.name.split()[0] for j in jobs} >= {"phantom", "simulate", "reconstruct"}


def test_the_default_config_fits_and_the_memory_estimate_bounds_a_real_phantom_job(tmp_path):
    cfg = load_config()
    needs = dataset_needs(cfg["datasets"]["tubes"], cfg["acquisitions"])
    assert needs.disk_bytes < 1 * GB
    # The estimate is an upper bound of a real phantom job's peak memory, and not a loose one.
    out = tmp_path / "t.h5"
    # The peak of this process's own memory (VmHWM): ru_maxrss would also count the pytest
    # process it was forked from, which Linux carries across exec.
    code = ("import sys; from sim.__main__ import main; "
            "code = main(['phantom', '--dataset', 'tubes', '--phantom', 'tube_0001', '--out', "
            f"'{out}']); print(open('/proc/self/status').read()); sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    peak_kb = next(int(line.split()[1]) for line in run.stdout.splitlines()
                   if line.startswith("VmHWM:"))
    peak_bytes = peak_kb * 1024
    assert 0.5 * needs.job_memory_bytes < peak_bytes < needs.job_memory_bytes


def test_a_histogram_is_bounded_by_the_crystal_pairs_whatever_the_counts():
    """1e10 decays: a list-mode file of 100 GB read into 268 GB; the statistical engine's
    histogram holds at most every crystal pair (24 bytes each, computed here), so the same
    acquisition fits 10 GB of disk and 24 GB of memory with it, and not with list-mode."""
    overlay = {"engine": "statistical",
               "acquisitions": {"reference": {"activity_bq": 1e9, "duration_s": 10.0}},
               "datasets": {"tubes": {"n_phantoms": 2}},
               "limits": {"disk_gb": 10, "memory_gb": 24}}
    cfg = validate_config(deep_merge(load_config(), overlay))
    crystals = 64 * 184
    bound = 24 * crystals * (crystals - 1) / 2
    assert bound == pytest.approx(1.664e9, rel=1e-3)
    needs = dataset_needs(cfg["datasets"]["tubes"], cfg["acquisitions"], bound)
    # The short preset's 6e4 decays: its histogram is the list-mode size, smaller than the bound.
    assert needs.disk_bytes == pytest.approx(2 * (6 * 56 * 96 * 96 + 10 * 6e5 * 0.1 + bound),
                                             rel=1e-9)
    listmode = deep_merge(copy.deepcopy(overlay),
                          {"simulation": {"statistical": {"output": "listmode"}}})
    with pytest.raises(ConfigError, match="one list-mode file of about 100 GB"):
        validate_config(deep_merge(load_config(), listmode))
    tiny_disk = deep_merge(copy.deepcopy(overlay), {"limits": {"disk_gb": 1}})
    with pytest.raises(ConfigError, match="one histogram file of about 1.66 GB"):
        validate_config(deep_merge(load_config(), tiny_disk))
