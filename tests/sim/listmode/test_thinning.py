"""Binomial thinning of histograms and list-mode files: the thinned counts against the
binomial and Poisson laws written here (means and variances over many pairs, the
thinning theorem), list-mode thinning keeps whole events unchanged, the attributes state the
shorter scan, and bad fractions are refused by the command with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from sim.listmode.file import read_listmode, write_listmode
from sim.listmode.histogram import PairCounts, read_histogram, write_histogram
from sim.listmode.thinning import thin_file
from sim.scanner.geometry import Scanner

SCANNER = Scanner()


def _attrs(duration_s: float = 10.0, primaries: int = 1_000_000) -> dict:
    return {"engine": "statistical", "engine_version": "1", "primaries": primaries,
            "activity_bq": 6e5, "duration_s": duration_s,
            "scanner": json.dumps(SCANNER.to_dict())}


def _histogram(path, rng: np.random.Generator, n_pairs: int, mean_per_kind):
    """Pairs 0..n_pairs-1 (crystal k with crystal k + 5000), Poisson counts per kind."""
    prompts = PairCounts(SCANNER.n_crystals, by_kind=True)
    c1 = np.arange(n_pairs)
    counts = np.stack([rng.poisson(m, n_pairs) for m in mean_per_kind], axis=1)
    keep = counts.sum(axis=1) > 0
    prompts.keys = (c1 * SCANNER.n_crystals + c1 + 5000)[keep]
    prompts.counts = counts[keep]
    delayed = PairCounts(SCANNER.n_crystals)
    d = rng.poisson(2.0, n_pairs)
    delayed.keys = (c1 * SCANNER.n_crystals + c1 + 5000)[d > 0]
    delayed.counts = np.stack([d[d > 0], 0 * d[d > 0], 0 * d[d > 0]], axis=1)
    write_histogram(path, prompts, delayed, _attrs())
    return counts, d


def _per_pair(data_group, n_pairs: int, name: str) -> np.ndarray:
    out = np.zeros(n_pairs, np.int64)
    out[data_group["crystal1"]] = data_group[name]
    return out


def test_a_thinned_histogram_is_poisson_with_the_fraction_of_the_mean(tmp_path):
    """Poisson counts of mean (20, 8, 3) per pair and kind, 0.25 kept: each kind's thinned
    counts over 4000 pairs have mean and variance f x mean (Poisson, the thinning theorem;
    each within 4 standard errors), given the source, Binomial(n, f) (the thinned count
    never exceeds the source's, and its mean given n is n f); count = the kinds' sum."""
    rng = np.random.default_rng(1)
    n_pairs, f = 4000, 0.25
    means = (20.0, 8.0, 3.0)
    source, delayed = _histogram(tmp_path / "in.h5", rng, n_pairs, means)
    kept = thin_file(tmp_path / "in.h5", tmp_path / "out.h5", f, seed=7)
    data = read_histogram(tmp_path / "out.h5")
    for i, (name, mean) in enumerate(zip(("trues", "scattered", "randoms"), means,
                                         strict=True)):
        thinned = _per_pair(data.coincidences, n_pairs, name)
        assert np.all(thinned <= source[:, i])
        m, v = thinned.mean(), thinned.var(ddof=1)
        lam = f * mean
        assert abs(m - lam) < 4 * np.sqrt(lam / n_pairs), (name, m, lam)
        # Variance of the sample variance of Poisson(lam): lam/n + 2 lam^2/(n - 1).
        assert abs(v - lam) < 4 * np.sqrt(lam / n_pairs + 2 * lam**2 / (n_pairs - 1)), name
        # Given the source counts: the residual thinned - n f has variance n f (1 - f).
        z = (thinned - f * source[:, i]).sum() / np.sqrt((source[:, i] * f * (1 - f)).sum())
        assert abs(z) < 4, (name, z)
    count = _per_pair(data.coincidences, n_pairs, "count")
    assert kept["prompts"] == int(count.sum())
    assert np.array_equal(count, sum(_per_pair(data.coincidences, n_pairs, k)
                                     for k in ("trues", "scattered", "randoms")))
    assert np.all(data.coincidences["count"] > 0)  # emptied pairs are dropped
    thinned_delayed = _per_pair(data.delayed, n_pairs, "count")
    assert np.all(thinned_delayed <= delayed)
    assert abs(thinned_delayed.mean() - 0.5) < 4 * np.sqrt(0.5 / n_pairs)
    assert data.attrs["duration_s"] == pytest.approx(2.5)
    assert data.attrs["primaries"] == 250_000
    assert data.attrs["thinned_fraction"] == pytest.approx(0.25)
    assert data.attrs["thinned_from"].endswith("in.h5")


def test_thinning_twice_multiplies_the_fractions(tmp_path):
    rng = np.random.default_rng(2)
    _histogram(tmp_path / "in.h5", rng, 3000, (30.0, 1.0, 1.0))
    thin_file(tmp_path / "in.h5", tmp_path / "half.h5", 0.5, seed=1)
    thin_file(tmp_path / "half.h5", tmp_path / "tenth.h5", 0.2, seed=2)
    data = read_histogram(tmp_path / "tenth.h5")
    assert data.attrs["thinned_fraction"] == pytest.approx(0.1)
    assert data.attrs["duration_s"] == pytest.approx(1.0)
    lam = 3000 * 32.0 * 0.1
    assert abs(data.prompts - lam) < 4 * np.sqrt(lam)


def _listmode_columns(n: int, rng: np.random.Generator) -> dict:
    c1 = rng.integers(0, SCANNER.n_crystals // 2, n).astype(np.int32)
    return {"crystal1": c1, "crystal2": (c1 + 3000).astype(np.int32),
            "time1_ns": np.sort(rng.random(n)) * 1e9, "time2_ns": np.sort(rng.random(n)) * 1e9,
            "energy1_kev": rng.uniform(350, 650, n).astype(np.float32),
            "energy2_kev": rng.uniform(350, 650, n).astype(np.float32),
            "pos1_mm": rng.normal(size=(n, 3)).astype(np.float32),
            "pos2_mm": rng.normal(size=(n, 3)).astype(np.float32),
            "event1": np.arange(n, dtype=np.int64), "event2": np.arange(n, dtype=np.int64),
            "annihilation_mm": rng.normal(size=(n, 3)).astype(np.float32),
            **{f"{k}{i}": rng.integers(0, 3, n).astype(np.uint8)
               for k in ("compton_phantom", "rayleigh_phantom") for i in (1, 2)},
            "kind": rng.integers(0, 3, n).astype(np.uint8)}


def test_a_thinned_list_mode_file_keeps_whole_events_with_the_fraction(tmp_path):
    """20,000 prompts and 2,000 delayed, 30 % kept: the kept count within 4 binomial sigma,
    every kept event identical to its source row (found by its event id), the order kept;
    the kept share over time is flat (Kolmogorov-Smirnov on the kept events' times)."""
    rng = np.random.default_rng(3)
    prompts, delayed = _listmode_columns(20_000, rng), _listmode_columns(2_000, rng)
    write_listmode(tmp_path / "in.h5", prompts, delayed, _attrs())
    counts = thin_file(tmp_path / "in.h5", tmp_path / "out.h5", 0.3, seed=4)
    out = read_listmode(tmp_path / "out.h5")
    kept = out.coincidences
    assert abs(counts["prompts"] - 6000) < 4 * np.sqrt(20_000 * 0.3 * 0.7)
    assert abs(counts["delayed"] - 600) < 4 * np.sqrt(2_000 * 0.3 * 0.7)
    rows = kept["event1"]
    assert np.all(np.diff(rows) > 0)
    for name, column in prompts.items():
        np.testing.assert_array_equal(kept[name], column[rows], name)
    span = prompts["time1_ns"]
    p = scipy.stats.ks_2samp(kept["time1_ns"], span).pvalue
    assert p > 0.001
    assert out.attrs["duration_s"] == pytest.approx(3.0)


@pytest.mark.parametrize("fraction, message", [("0", "must be a finite number in (0, 1]"),
                                               ("1.5", "must be a finite number in (0, 1]"),
                                               ("nan", "must be a finite number in (0, 1]"),
                                               ("-0.1", "must be a finite number in (0, 1]")])
def test_the_command_refuses_a_bad_fraction_in_one_line(tmp_path, fraction, message):
    rng = np.random.default_rng(5)
    _histogram(tmp_path / "in.h5", rng, 100, (2.0, 1.0, 1.0))
    run = subprocess.run([sys.executable, "-m", "sim", "thin", "--in", str(tmp_path / "in.h5"),
                          "--fraction", fraction, "--seed", "1", "--out",
                          str(tmp_path / "out.h5")], capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert "--fraction" in err[0] and message in err[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "out.h5").exists()


def test_the_command_refuses_a_negative_seed_naming_it(tmp_path):
    rng = np.random.default_rng(5)
    _histogram(tmp_path / "in.h5", rng, 100, (2.0, 1.0, 1.0))
    run = subprocess.run([sys.executable, "-m", "sim", "thin", "--in", str(tmp_path / "in.h5"),
                          "--fraction", "0.5", "--seed", "-3", "--out",
                          str(tmp_path / "out.h5")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip() == (
        "error: --seed must be a non-negative integer, got -3")


def test_the_command_thins_and_refuses_to_overwrite_its_source(tmp_path):
    rng = np.random.default_rng(6)
    _histogram(tmp_path / "in.h5", rng, 500, (5.0, 1.0, 1.0))
    base = [sys.executable, "-m", "sim", "thin", "--in", str(tmp_path / "in.h5"),
            "--fraction", "0.5", "--seed", "1"]
    run = subprocess.run([*base, "--out", str(tmp_path / "out.h5")], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert read_histogram(tmp_path / "out.h5").attrs["thinned_fraction"] == 0.5
    run = subprocess.run([*base, "--out", str(tmp_path / "in.h5"), "--overwrite"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "cannot replace its source" in run.stderr
    assert read_histogram(tmp_path / "in.h5").attrs.get("thinned_fraction") is None
