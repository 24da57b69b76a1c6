"""List-mode files: round trip of the DESIGN.md columns, and bad files give one clear error
naming the file and the field."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest

from sim.listmode.file import COLUMNS, ListModeWriter, read_listmode, write_listmode
from sim.scanner.geometry import Scanner


def _columns(n: int, rng) -> dict:
    out = {}
    for name, (dtype, width) in COLUMNS.items():
        shape = (n, width) if width else (n,)
        out[name] = (rng.integers(0, 1000, shape) if np.dtype(dtype).kind in "iu"
                     else rng.normal(size=shape)).astype(dtype)
    for name in ("energy1_kev", "energy2_kev"):
        out[name] = rng.uniform(350.0, 650.0, n).astype(np.float32)
    return out


def _attrs() -> dict:
    return {"engine": "fast", "engine_version": "1", "primaries": 10, "activity_bq": 1.0,
            "duration_s": 1.0, "scanner": json.dumps(Scanner().to_dict())}


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    prompts, delayed = _columns(50, rng), _columns(7, rng)
    path = write_listmode(tmp_path / "a.h5", prompts, delayed, _attrs())
    data = read_listmode(path)
    assert len(data) == 50 and data.scanner == Scanner()
    for name in COLUMNS:
        np.testing.assert_array_equal(data.coincidences[name], prompts[name])
        assert data.coincidences[name].dtype == COLUMNS[name][0]
        np.testing.assert_array_equal(data.delayed[name], delayed[name])
    with pytest.raises(FileExistsError):
        write_listmode(path, prompts, delayed, _attrs())
    empty = write_listmode(tmp_path / "empty.h5", _columns(0, rng), _columns(0, rng), _attrs())
    assert len(read_listmode(empty)) == 0


def test_bad_files_name_the_field(tmp_path):
    rng = np.random.default_rng(1)
    prompts = _columns(5, rng)
    with pytest.raises(ValueError, match="column pos1_mm has shape"):
        write_listmode(tmp_path / "x.h5", {**prompts, "pos1_mm": np.zeros(5)}, prompts,
                       _attrs())
    with pytest.raises(ValueError, match="missing attribute"):
        write_listmode(tmp_path / "x.h5", prompts, prompts, {"engine": "fast"})
    assert not (tmp_path / "x.h5").exists()
    path = write_listmode(tmp_path / "b.h5", prompts, prompts, _attrs())
    with h5py.File(path, "a") as f:
        f["coincidences/crystal2"][0] = Scanner().n_crystals + 3
    with pytest.raises(ValueError, match=r"b.h5 group coincidences: column crystal2 has crystal"):
        read_listmode(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_listmode(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5: not a readable HDF5 file"):
        read_listmode(tmp_path / "junk.h5")


def test_interrupted_or_incomplete_writes_leave_no_file(tmp_path):
    rng = np.random.default_rng(2)
    chunk = _columns(20, rng)
    with pytest.raises(RuntimeError, match="interrupted"):
        with ListModeWriter(tmp_path / "c.h5") as out:
            out.append(chunk, chunk)
            raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="missing attribute"):
        with ListModeWriter(tmp_path / "d.h5") as out:
            out.append(chunk, chunk)
    assert list(tmp_path.iterdir()) == []
    with ListModeWriter(tmp_path / "e.h5") as out:  # appended chunks concatenate
        out.append(chunk, chunk)
        out.append(_columns(5, rng), _columns(0, rng))
        out.attrs.update(_attrs())
    data = read_listmode(tmp_path / "e.h5")
    assert len(data) == 25 and data.delayed["crystal1"].size == 20
    np.testing.assert_array_equal(data.coincidences["pos1_mm"][:20], chunk["pos1_mm"])


@pytest.mark.parametrize("column, value, what", [
    ("time1_ns", np.nan, "column time1_ns has 1 NaN or infinite value(s) (first at index 2)"),
    ("time2_ns", np.inf, "column time2_ns has 1 NaN or infinite value(s)"),
    ("pos1_mm", np.nan, "column pos1_mm has 3 NaN or infinite value(s) (first at index (2, 0))"),
    ("energy2_kev", np.nan, "column energy2_kev has 1 NaN or infinite value(s)"),
    ("energy1_kev", -5.0, "column energy1_kev must be at least 0 keV, found -5 keV"),
])
def test_non_finite_or_impossible_columns_are_refused_by_writer_and_reader(tmp_path, column,
                                                                           value, what):
    rng = np.random.default_rng(2)
    prompts = _columns(5, rng)
    bad = {**prompts, column: prompts[column].copy()}
    bad[column][2] = value
    # The writer every engine and import-root use: nothing is created.
    with pytest.raises(ValueError, match=re.escape(f"x.h5 group coincidences: {what}")):
        write_listmode(tmp_path / "x.h5", bad, prompts, _attrs())
    assert not (tmp_path / "x.h5").exists()
    # A file made by another tool: the reader refuses it.
    path = write_listmode(tmp_path / "y.h5", prompts, prompts, _attrs())
    with h5py.File(path, "a") as f:
        f[f"delayed/{column}"][2] = value
    with pytest.raises(ValueError, match=re.escape(f"y.h5 group delayed: {what}")):
        read_listmode(path)


@pytest.mark.parametrize("key, value, what", [
    ("activity_bq", float("nan"), "attribute activity_bq has 1 NaN or infinite value(s)"),
    ("duration_s", -1.0, "attribute duration_s must be above 0 s, found -1 s"),
    ("duration_s", float("inf"), "attribute duration_s has 1 NaN or infinite value(s)"),
    ("primaries", -3, "attribute primaries must be at least 0, found -3"),
    ("activity_bq", "lots", "attribute activity_bq must be 1 numbers, got 'lots'"),
])
def test_impossible_acquisition_attributes_are_refused(tmp_path, key, value, what):
    prompts = _columns(3, np.random.default_rng(3))
    with pytest.raises(ValueError, match=re.escape(f"x.h5: {what}")):
        write_listmode(tmp_path / "x.h5", prompts, prompts, {**_attrs(), key: value})
    assert not (tmp_path / "x.h5").exists()
    path = write_listmode(tmp_path / "y.h5", prompts, prompts, _attrs())
    with h5py.File(path, "a") as f:
        f.attrs[key] = value
    with pytest.raises(ValueError, match=re.escape(f"y.h5: {what}")):
        read_listmode(path)
