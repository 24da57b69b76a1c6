"""The detectability study's smallest detected size: against a CNR law written here (CNR
growing as size squared times the square root of the counts, the Rose model of a disk in
Poisson noise), where the true smallest size at a threshold is known in closed form; the
bootstrap over phantoms covers it; the edge cases (never reached, always reached) are
stated, not guessed; the settings refuse bad values naming the key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon.detectability_study import (
    StudySettings,
    figure,
    markdown,
    smallest_detected,
    summarise,
)


def test_smallest_detected_inverts_the_power_law_within_the_measured_sizes():
    size = np.linspace(2.0, 10.0, 9)
    cnr = 0.2 * size**1.5  # exact: the fit gives it back
    got = smallest_detected(size, cnr, (0.1, 3.0, 5.0, 20.0))
    np.testing.assert_allclose(got[:3], [2.0, 15.0 ** (2 / 3), 25.0 ** (2 / 3)], rtol=1e-6)
    assert math.isinf(got[3])  # 20 is beyond the largest defect's CNR (6.3)
    assert np.all(np.isinf(smallest_detected(np.zeros(0), np.zeros(0), (3.0,))))
    # CNR falling with size: no estimate rather than a number.
    assert np.all(np.isnan(smallest_detected(size, 10.0 / size, (3.0,))))
    # A nearly flat fit (b of about 1e-3) would put the threshold at 10^1000 mm: beyond every
    # size, not an overflow (a bootstrap resample of a real study gave one).
    flat = 0.1 * size**1e-3
    assert np.all(np.isinf(smallest_detected(size, flat, (3.0, 5.0))))


def _rose_rows(rng: np.random.Generator, k: float, decays: float, n_phantoms: int,
               per_phantom: int, noise: float) -> list[dict]:
    """Defects of sizes uniform in [1, 10] mm with CNR = k size^2 sqrt(decays) plus a
    phantom-level and a defect-level Gaussian error."""
    rows = []
    for p in range(n_phantoms):
        shift = rng.normal(0.0, noise)
        for d in range(per_phantom):
            size = rng.uniform(1.0, 10.0)
            cnr = k * size**2 * math.sqrt(decays) * (1.0 + shift) + rng.normal(0.0, noise)
            rows.append({"dataset": "d", "phantom": f"p{p}", "level": 0, "fraction": 1.0,
                         "decays": int(decays), "prompts": int(decays / 10), "label": d + 1,
                         "type": "bubble", "size_mm": size, "crc": 0.5, "cnr": cnr,
                         "status": "ok"})
    return rows


def test_the_rose_law_gives_back_its_smallest_size_and_the_interval_covers_it():
    """k = 1e-4, 1e6 decays: CNR = 0.1 size^2, so CNR 3 at sqrt(30) = 5.48 mm and CNR 5 at
    sqrt(50) = 7.07 mm. 30 phantoms of 4 defects (a 10 % phantom-wide error and a defect's
    own): the estimates within 0.3 mm of the law, and over 40 independent studies the 95 %
    percentile intervals cover it in at least 80 % of them (measured: 87-90 % on 60; the
    percentile bootstrap over 30 clusters is a little narrow), all narrower than 1 mm."""
    truths = (math.sqrt(30.0), math.sqrt(50.0))
    covered = np.zeros(2)
    for seed in range(40):
        rows = _rose_rows(np.random.default_rng(seed), 1e-4, 1e6, 30, 4, noise=0.1)
        summary = summarise(rows, StudySettings((1.0,), (3.0, 5.0), 200, seed))
        assert [r["threshold"] for r in summary] == [3.0, 5.0]
        for i, (r, truth) in enumerate(zip(summary, truths, strict=True)):
            assert r["reached"] and abs(r["smallest_mm"] - truth) < 0.3, (seed, r, truth)
            assert r["high_mm"] - r["low_mm"] < 1.0
            assert r["defects"] == 120 and r["phantoms"] == 30
            covered[i] += r["low_mm"] <= truth <= r["high_mm"]
    assert np.all(covered / 40 >= 0.8), covered


def test_a_threshold_no_defect_reaches_is_reported_as_beyond_every_size():
    rng = np.random.default_rng(5)
    rows = _rose_rows(rng, 1e-6, 1e6, 10, 3, noise=0.01)  # CNR <= 0.1
    summary = summarise(rows, StudySettings((1.0,), (5.0,), 200, 1))
    (row,) = summary
    assert not row["reached"] and math.isnan(row["smallest_mm"])
    assert row["status"] == "beyond every size measured"
    assert math.isinf(row["low_mm"]) and math.isinf(row["high_mm"])
    assert "> all" in markdown(summary, StudySettings((1.0,), (5.0,), 200, 1))


def test_unmeasured_defects_are_left_out_not_counted_as_zero():
    rng = np.random.default_rng(6)
    rows = _rose_rows(rng, 1e-4, 1e6, 10, 3, noise=0.05)
    rows[0]["cnr"] = float("nan")
    (row,) = summarise(rows, StudySettings((1.0,), (3.0,), 200, 1))
    assert row["defects"] == 29


@pytest.mark.parametrize("section, key", [
    ({"fractions": [0.5, 1.5], "cnr_thresholds": [3.0], "bootstrap": 100, "seed": 1},
     "detectability_study.fractions"),
    ({"fractions": [0.5, float("nan")], "cnr_thresholds": [3.0], "bootstrap": 100, "seed": 1},
     "detectability_study.fractions"),
    ({"fractions": [0.5, 1.0], "cnr_thresholds": [-1.0], "bootstrap": 100, "seed": 1},
     "detectability_study.cnr_thresholds"),
])
def test_bad_settings_are_refused_naming_the_key(section, key):
    with pytest.raises(ValueError, match=key):
        StudySettings.from_config(section)


def test_the_figure_and_table_show_every_type_and_threshold(tmp_path):
    """Two types, two levels: a PNG is written (also with nothing measured) and the table
    has one row per type, level and threshold."""
    rng = np.random.default_rng(8)
    rows = []
    for level, decays in enumerate((1e5, 1e6)):
        for kind in ("pit", "bubble"):
            part = _rose_rows(rng, 1e-4, decays, 8, 3, noise=0.1)
            rows += [{**r, "type": kind, "level": level} for r in part]
    settings = StudySettings((0.1, 1.0), (3.0, 5.0), 100, 1)
    summary = summarise(rows, settings)
    assert len(summary) == 2 * 2 * 2
    table = markdown(summary, settings)
    assert table.count("| pit |") == 4 and table.count("| bubble |") == 4
    figure(tmp_path / "study.png", summary, rows)
    figure(tmp_path / "empty.png", [], [])
    for name in ("study.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
