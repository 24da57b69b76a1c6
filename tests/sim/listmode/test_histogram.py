"""Coincidence histograms: counts accumulated chunk by chunk against a count made here with
Python's Counter, the round trip, and bad files refused naming the file, group and column."""

from __future__ import annotations

import json
from collections import Counter

import h5py
import numpy as np
import pytest

import sim.listmode.histogram as histogram
from sim.listmode.histogram import (
    FORMAT,
    PairCounts,
    is_histogram,
    read_histogram,
    write_histogram,
)
from sim.scanner.geometry import Scanner

SCANNER = Scanner()


def _attrs() -> dict:
    return {"engine": "statistical", "engine_version": "1", "primaries": 10,
            "activity_bq": 1.0, "duration_s": 1.0, "scanner": json.dumps(SCANNER.to_dict())}


def _events(n: int, rng: np.random.Generator, crystals: int = 40):
    """Coincidences among a few crystals (many repeats), either order, with kinds."""
    a = rng.integers(0, crystals, n)
    b = (a + rng.integers(1, crystals, n)) % crystals
    return a * 101, b * 101, rng.integers(0, 3, n)


def test_counts_per_pair_and_kind_match_a_direct_count(monkeypatch):
    monkeypatch.setattr(histogram, "BUFFER_PAIRS", 1000)  # several merges
    rng = np.random.default_rng(1)
    counts = PairCounts(SCANNER.n_crystals, by_kind=True)
    reference: Counter = Counter()
    for n in (700, 0, 2500, 1300):
        c1, c2, kind = _events(n, rng)
        counts.add(c1, c2, kind)
        reference.update(zip(np.minimum(c1, c2).tolist(), np.maximum(c1, c2).tolist(),
                             kind.tolist(), strict=True))
    columns = counts.columns()
    got: Counter = Counter()
    for i, name in enumerate(histogram.KINDS):
        for c1, c2, n in zip(columns["crystal1"], columns["crystal2"], columns[name],
                             strict=True):
            if n:
                got[(int(c1), int(c2), i)] = int(n)
    assert got == reference
    assert int(columns["count"].sum()) == 4500
    assert np.all(columns["crystal1"] < columns["crystal2"])


def test_round_trip_and_format_detection(tmp_path):
    rng = np.random.default_rng(2)
    prompts = PairCounts(SCANNER.n_crystals, by_kind=True)
    prompts.add(*_events(5000, rng))
    delayed = PairCounts(SCANNER.n_crystals)
    c1, c2, _ = _events(300, rng)
    delayed.add(c1, c2)
    path = write_histogram(tmp_path / "h.h5", prompts, delayed, _attrs())
    assert is_histogram(path)
    data = read_histogram(path)
    assert data.prompts == 5000 and int(data.delayed["count"].sum()) == 300
    for name, array in prompts.columns().items():
        np.testing.assert_array_equal(data.coincidences[name], array)
    assert set(data.delayed) == {"crystal1", "crystal2", "count"}
    with pytest.raises(FileExistsError):
        write_histogram(path, prompts, delayed, _attrs())


def _write_raw(path, coincidences: dict, delayed: dict | None = None, fmt=FORMAT):
    with h5py.File(path, "w") as f:
        for group, columns in (("coincidences", coincidences),
                               ("delayed", delayed or {"crystal1": [0], "crystal2": [1],
                                                       "count": [1]})):
            g = f.create_group(group)
            for name, values in columns.items():
                g.create_dataset(name, data=np.asarray(values))
        f.attrs.update(_attrs())
        if fmt is not None:
            f.attrs["format"] = fmt
    return path


@pytest.mark.parametrize("columns, expected", [
    ({"crystal1": [0, 5], "crystal2": [3, 99999999], "count": [1, 2]}, "crystal ids outside"),
    ({"crystal1": [3], "crystal2": [0], "count": [1]}, "crystal1 < crystal2"),
    ({"crystal1": [0, 0], "crystal2": [3, 3], "count": [1, 1]}, "each pair once"),
    ({"crystal1": [0], "crystal2": [3], "count": [0]}, "rows of zero"),
    ({"crystal1": [0], "crystal2": [3], "count": [-2]}, "column count"),
    ({"crystal1": [0], "crystal2": [3], "count": [np.nan]}, "column count"),
    ({"crystal1": [0], "crystal2": [3], "count": [1.5]}, "column count"),
    ({"crystal1": [0], "crystal2": [3]}, "missing column(s) count"),
    ({"crystal1": [0], "crystal2": [3], "count": [1], "energy": [511.0]}, "unknown column"),
    ({"crystal1": [0], "crystal2": [3], "count": [2], "trues": [1], "scattered": [0],
      "randoms": [0]}, "do not add up to count"),
    ({"crystal1": [0], "crystal2": [3], "count": [2], "trues": [2]}, "come together"),
    ({"crystal1": [0, 1], "crystal2": [3, 4], "count": [1]}, "rows"),
])
def test_bad_files_are_refused_naming_file_group_and_column(tmp_path, columns, expected):
    path = _write_raw(tmp_path / "bad.h5", columns)
    with pytest.raises(ValueError) as error:
        read_histogram(path)
    message = str(error.value)
    assert str(path) in message and "group coincidences" in message and expected in message


def test_a_list_mode_file_is_not_read_as_a_histogram(tmp_path):
    path = _write_raw(tmp_path / "lm.h5", {"crystal1": [0], "crystal2": [3], "count": [1]},
                      fmt=None)
    assert not is_histogram(path)
    with pytest.raises(ValueError, match="not a histogram file"):
        read_histogram(path)


def test_a_refused_write_leaves_no_file(tmp_path):
    prompts = PairCounts(SCANNER.n_crystals)
    prompts.add(np.array([0]), np.array([3]))
    attrs = _attrs()
    attrs["duration_s"] = float("nan")
    with pytest.raises(ValueError, match="duration_s"):
        write_histogram(tmp_path / "h.h5", prompts, PairCounts(SCANNER.n_crystals), attrs)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="kind"):
        PairCounts(SCANNER.n_crystals, by_kind=True).add(np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="kinds must be"):
        PairCounts(SCANNER.n_crystals, by_kind=True).add(np.array([0]), np.array([3]),
                                                         np.array([3]))
