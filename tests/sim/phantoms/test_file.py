"""The phantom stage end to end: file contract, GATE copies, provenance, safe writing."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pipeline.config import load_config, validate_config
from pipeline.fileio import atomic_output
from pipeline.specs import config_sha256, simulate_spec
from sim.__main__ import main
from sim.phantoms.file import read_phantom
from sim.phantoms.metaimage import read_mhd
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom

SMALL = {"grid": {"shape": [30, 96, 96], "voxel_size_mm": [2.0, 1.0, 1.0]},
         "partial_volume_subsamples": 4,
         "tube": {"length_mm": [50.0, 50.0]}, "defects": {"count": [2, 2]}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cfg = load_config()
    cfg["datasets"] = {"small": {**cfg["datasets"]["tubes"], **SMALL}}
    cfg = validate_config(cfg)
    spec = phantom_spec(cfg, "small", "tube_0001")
    out = tmp_path_factory.mktemp("ph") / "tube_0001.h5"
    build_phantom(spec, out)
    return spec, out


def test_file_contract(built):
    spec, out = built
    ph = read_phantom(out)
    assert ph.material.shape == ph.activity.shape == ph.labels.shape == (30, 96, 96)
    assert ph.material.dtype == np.uint8 and ph.labels.dtype == np.uint8
    assert ph.activity.dtype == np.float32 and ph.mu511_per_mm.dtype == np.float32
    assert ph.activity.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(ph.voxel_size_mm, [2.0, 1.0, 1.0])
    np.testing.assert_allclose(ph.origin_mm, [-29.0, -47.5, -47.5])
    names = {m["name"] for m in ph.materials.values()}
    assert {"air", "water", "aluminium"} <= names
    # The dominant-material image and the mu map agree where a voxel is pure.
    for mid, m in ph.materials.items():
        pure = (ph.material == mid) & np.isclose(ph.mu511_per_mm, m["mu511_per_mm"], rtol=1e-5)
        assert pure.sum() > 0
    assert [d["label"] for d in ph.defects] == [1, 2]
    assert set(np.unique(ph.labels)) == {0, 1, 2}
    # Provenance.
    assert ph.attrs["config_sha256"] == config_sha256(spec)
    assert json.loads(ph.attrs["package_versions"])["numpy"] == np.__version__
    assert ph.attrs["seed"] == spec["seed"] and ph.attrs["created_utc"].endswith("+00:00")
    assert json.loads(ph.attrs["params"])["partial_volume_subsamples"] == 4


def test_gate_copies(built):
    _, out = built
    ph = read_phantom(out)
    stem = out.with_suffix("")
    materials, spacing, origin = read_mhd(f"{stem}_materials.mhd")
    np.testing.assert_array_equal(materials, ph.material)
    np.testing.assert_array_equal(spacing, ph.voxel_size_mm)
    np.testing.assert_allclose(origin, ph.origin_mm)
    activity, _, _ = read_mhd(f"{stem}_activity.mhd")
    np.testing.assert_array_equal(activity, ph.activity)
    table = (stem.parent / f"{stem.name}_materials.txt").read_text().split("\n")
    assert int(table[0]) == len(ph.materials)
    assert "0 0 G4_AIR" in table and "2 2 Aluminium" in table
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_overwrite_without_asking(built, capsys):
    spec, out = built
    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        build_phantom(spec, out)
    assert out.read_bytes() == before
    assert main(["phantom", "--spec", json.dumps(spec), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.h5"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        with h5py.File(tmp, "w") as f:
            f["a"] = np.zeros(3)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_read_phantom_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_phantom(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5: not a readable HDF5 file"):
        read_phantom(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["material"] = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="partial.h5: missing dataset"):
        read_phantom(tmp_path / "partial.h5")


def test_cli_rejects_unknown_phantom(capsys):
    assert main(["phantom", "--dataset", "tubes", "--phantom", "tube_0099", "--out", "x.h5"]) == 2
    assert "'tube_0099' is not part of dataset 'tubes'" in capsys.readouterr().err


def _corrupt(src, dest, dataset=None, value=None, attr=None, attr_value=None):
    """A copy of the phantom file ``src`` with one dataset or attribute replaced."""
    import shutil

    shutil.copy(src, dest)
    with h5py.File(dest, "r+") as f:
        if dataset is not None:
            data = f[dataset][...]
            del f[dataset]
            f[dataset] = value(data)
        if attr is not None:
            f.attrs[attr] = attr_value
    return dest


def _with_nan(a):
    a = a.astype(np.float32)
    a.flat[a.size // 2] = np.nan
    return a


@pytest.mark.parametrize("dataset, value, attr, attr_value, field, what", [
    ("mu511", _with_nan, None, None, "dataset mu511", "NaN or infinite"),
    ("mu511", lambda a: a.astype(np.float32) * np.inf, None, None, "dataset mu511",
     "NaN or infinite"),
    ("mu511", lambda a: -a, None, None, "dataset mu511 (1/mm)", "must be at least 0"),
    ("mu511", lambda a: (a * 100).astype(np.uint8), None, None, "dataset mu511",
     "must hold floating-point values, got dtype uint8"),
    ("activity", _with_nan, None, None, "dataset activity", "NaN or infinite"),
    ("activity", lambda a: a * 0.0, None, None, "dataset activity", "zero everywhere"),
    (None, None, "voxel_size_mm", np.array([0.0, 1.0, 1.0]), "attribute voxel_size_mm",
     "must be above 0 mm, found 0 mm"),
    (None, None, "voxel_size_mm", np.array([-2.0, 1.0, 1.0]), "attribute voxel_size_mm",
     "must be above 0 mm"),
    (None, None, "voxel_size_mm", np.array([np.nan, 1.0, 1.0]), "attribute voxel_size_mm",
     "NaN or infinite"),
    (None, None, "voxel_size_mm", np.array([1.0, 1.0]), "attribute voxel_size_mm",
     "must be 3 numbers, got 2"),
    (None, None, "origin_mm", np.array([np.inf, 0.0, 0.0]), "attribute origin_mm",
     "NaN or infinite"),
    (None, None, "materials", "{not json", "attribute materials", "not valid JSON"),
    (None, None, "materials", '{"1": {"name": "air"}}', "dataset material",
     "missing from attribute materials"),
    (None, None, "defects", '[{"label": NaN}]', "attribute defects", "holds NaN"),
    (None, None, "defects", '{"a": 1}', "attribute defects", "JSON list of records"),
])
def test_bad_values_are_refused_naming_file_and_field(built, tmp_path, dataset, value, attr,
                                                      attr_value, field, what):
    bad = _corrupt(built[1], tmp_path / "bad.h5", dataset, value, attr, attr_value)
    with pytest.raises(ValueError) as info:
        read_phantom(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: ") and field in message and what in message, message


def test_a_bad_phantom_stops_simulate_with_one_line(built, tmp_path, capsys):
    """Through the simulate command: exit code 2, one `error:` line naming the file and the
    field, nothing written (a NaN mu map used to hang the transport)."""
    bad = _corrupt(built[1], tmp_path / "bad.h5", "mu511", _with_nan)
    out = tmp_path / "out.h5"
    cfg = load_config()
    cfg["datasets"] = {"small": {**cfg["datasets"]["tubes"], **SMALL}}
    # The spec of the phantom's own dataset (another one's is refused before the file is read).
    spec = simulate_spec(validate_config(cfg), "small", "tube_0001", "short")
    code = main(["simulate", "--spec", json.dumps(spec), "--phantom-file", str(bad),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "bad.h5" in err[-1] and "mu511" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
