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


def _replace(path, group: str, column: str, data) -> None:
    """Store ``data`` as ``group/column`` of a list-mode file, in whatever type it has."""
    with h5py.File(path, "a") as f:
        del f[group][column]
        f[group].create_dataset(column, data=data)


def _stored(n: int, column: str, kind: str):
    """A crafted column of ``n`` rows that cannot become the contract's type unchanged,
    and the words the refusal must hold."""
    width = COLUMNS[column][1]
    base = np.arange(n * max(width, 1), dtype=np.float64).reshape((n, width) if width else n)
    if kind == "fraction":
        base[2] = 12.5
        return base, "is stored as float64 with 1 non-integer value(s) (first 12.5 at index 2)"
    integer = np.dtype(COLUMNS[column][0]).kind in "iu"
    if kind in ("nan", "inf"):
        row = 1 if kind == "nan" else 3
        base[row] = np.nan if kind == "nan" else np.inf
        at = f"(first at index {(row, 0) if width else row})"
        if integer:
            return base, f"is stored as float64 with 1 NaN or infinite value(s) {at}"
        if column == "annihilation_mm":  # truth: NaN means unknown, infinity is refused
            return base, "has 3 infinite value(s)"
        return base, f"has {max(width, 1)} NaN or infinite value(s) {at}"
    if kind == "overflow":
        wide = base.astype(np.int64)
        wide[4] = 2**40  # a valid int64, not an int32 (nor a uint8 flag)
        return wide, f"has 1 value(s) outside the range of {np.dtype(COLUMNS[column][0])}"
    if kind == "unsigned":
        flags = base.astype(np.int16)
        flags[0] = -1
        return flags, "has 1 value(s) outside the range of uint8 [0, 255] (first -1 at index 0"
    if kind == "string":
        return np.array([b"12"] * n), "is stored as |S2 (strings)"
    if kind == "width":
        return np.zeros((n, 2), np.float32), f"column {column} has shape ({n}, 2), expected (n, 3)"
    if kind == "2d":
        return np.zeros((n, 1), np.int32), f"column {column} has shape ({n}, 1), expected (n,)"
    if kind == "complex":
        return base + 1j, "is stored as complex128 (complex numbers)"
    raise AssertionError(kind)


@pytest.mark.parametrize("column, kind", [
    ("crystal1", "fraction"), ("crystal2", "nan"), ("event1", "inf"),
    ("crystal1", "overflow"), ("kind", "overflow"), ("compton_phantom2", "unsigned"),
    ("crystal2", "string"), ("time1_ns", "string"), ("pos1_mm", "width"),
    ("crystal1", "2d"), ("energy1_kev", "complex"), ("time2_ns", "inf"),
    ("pos2_mm", "nan"), ("annihilation_mm", "inf"),
])
def test_columns_that_cannot_become_the_contracts_type_are_refused(tmp_path, column, kind):
    n = 6
    rng = np.random.default_rng(4)
    path = write_listmode(tmp_path / "y.h5", _columns(n, rng), _columns(n, rng), _attrs())
    data, what = _stored(n, column, kind)
    _replace(path, "delayed", column, data)
    with pytest.raises(ValueError) as info:
        read_listmode(path)
    message = str(info.value)
    assert message.startswith(f"{path} group delayed: "), message
    assert f"column {column}" in message and what in message, message
    # The writer every engine and import-root use refuses the same column: no file.
    columns = _columns(n, rng)
    with pytest.raises(ValueError, match=re.escape(what)):
        write_listmode(tmp_path / "x.h5", {**columns, column: data}, columns, _attrs())
    assert not (tmp_path / "x.h5").exists()


def test_whole_floats_and_narrower_integers_are_read_as_the_contracts_types(tmp_path):
    rng = np.random.default_rng(5)
    prompts = _columns(8, rng)
    path = write_listmode(tmp_path / "z.h5", prompts, prompts, _attrs())
    ids = np.array([12.0, 0.0, 3.0, 1000.0, 7.0, 5.0, 9.0, 11.0])  # whole numbers in float64
    _replace(path, "coincidences", "crystal1", ids)
    _replace(path, "coincidences", "kind", np.array([0, 1, 2, 0, 1, 2, 0, 1], np.int64))
    _replace(path, "coincidences", "time1_ns", prompts["time1_ns"].astype(np.float32))
    data = read_listmode(path).coincidences
    assert data["crystal1"].dtype == np.int32 and data["crystal1"].tolist() == [
        12, 0, 3, 1000, 7, 5, 9, 11]
    assert data["kind"].dtype == np.uint8 and data["kind"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert data["time1_ns"].dtype == np.float64
    np.testing.assert_array_equal(data["time1_ns"], prompts["time1_ns"].astype(np.float32))


def test_cli_reading_a_bad_listmode_file_gives_one_error_line_and_no_output(tmp_path,
                                                                              capsys):
    from sim.__main__ import main

    rng = np.random.default_rng(6)
    prompts = _columns(5, rng)
    path = write_listmode(tmp_path / "lm.h5", prompts, prompts, _attrs())
    ids = prompts["crystal2"].astype(np.float64)
    ids[3] += 0.25
    _replace(path, "coincidences", "crystal2", ids)
    out = tmp_path / "lm.petsird"
    assert main(["export-petsird", "--listmode", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path} group coincidences: column "
                                               "crystal2 is stored as float64 with 1 non-integer")
    assert not out.exists()
