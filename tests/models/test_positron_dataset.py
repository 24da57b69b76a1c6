"""positron.h5 from reconstruction and phantom files written in the test: images map back to
the activity of their source slice, pairs and metadata match the sources, splits never share
a phantom, and bad inputs are refused with nothing written."""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest

from models.data.positron_dataset import build_positron_dataset, to_activity
from tests.models.fixtures import RECON_GRID, make_results, write_recon_file

PHANTOMS = [f"tube_{i:04d}" for i in range(6)]


def spec(size_px=16, normalisation="image", seed=7, phantoms=PHANTOMS, orientation="transaxial"):
    return {"dataset": "t", "phantoms": list(phantoms), "acquisitions": ["short", "reference"],
            "positron_images": {"size_px": size_px, "orientation": orientation,
                                "low_count": "short", "reference": "reference",
                                "normalisation": normalisation, "min_activity_fraction": 0.6,
                                "split_fractions": [0.5, 0.25, 0.25], "seed": seed}}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    return root, make_results(root, PHANTOMS, np.random.default_rng(0))


def read(path):
    with h5py.File(path) as f:
        data = {k: f[k][...] for k in f}
        attrs = dict(f.attrs)
    for k, v in data.items():
        if v.dtype == object:
            data[k] = np.asarray([x.decode() for x in v])
    return data, attrs


@pytest.mark.parametrize("normalisation", ["image", "dataset"])
def test_images_round_trip_to_the_activity_of_their_slice(results, tmp_path, normalisation):
    root, images = results
    out = tmp_path / "positron.h5"
    build_positron_dataset(spec(normalisation=normalisation), root, out)
    data, attrs = read(out)
    assert data["images"].min() >= -1 and data["images"].max() <= 1
    activity = to_activity(data["images"], data["scale"])
    z = RECON_GRID.centres_mm(0)
    for i in range(len(activity)):
        source = images[data["phantom"][i], data["acquisition"][i]][data["slice_index"][i]]
        duration = 0.1 if data["acquisition"][i] == "short" else 10.0
        np.testing.assert_allclose(activity[i], source / duration, rtol=1e-5, atol=1e-6)
        assert data["position_mm"][i] == pytest.approx(z[data["slice_index"][i]])
        assert data["counts"][i] == 100.0 * data["slice_index"][i]
    # min_activity_fraction 0.6 drops the two planes half in the end caps: 9 per volume.
    assert len(activity) == 6 * 2 * 9
    if normalisation == "dataset":
        assert np.unique(data["scale"]).size == 1
    assert "a = (x + 1) / 2 * scale" in attrs["normalisation"]


def test_truth_images_are_the_phantom_slices_on_the_image_grid(results, tmp_path):
    root, _ = results
    out = tmp_path / "positron.h5"
    build_positron_dataset(spec(), root, out)
    data, _ = read(out)
    assert data["truth"].shape == data["images"].shape
    # The fixture's activity is one disk in phantom slices 1..10; every kept plane lies
    # wholly inside them, so its truth is the disk itself: 1 inside, -1 outside.
    y, x = np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")
    disk = np.where(x**2 + y**2 <= 36, 1.0, -1.0)
    for image in data["truth"]:
        np.testing.assert_allclose(image, disk, atol=1e-6)
    np.testing.assert_allclose(to_activity(data["truth"], data["truth_scale"]).max(axis=(1, 2)),
                               data["truth_scale"], rtol=1e-6)
    # The fixture's defect has no shape record: its visibility is missing, not invented.
    assert np.isnan(data["defect_cnr"]).all() and np.isnan(data["defect_crc"]).all()


def test_pairs_metadata_and_defect_masks(results, tmp_path):
    root, _ = results
    out = tmp_path / "positron.h5"
    summary = build_positron_dataset(spec(size_px=32), root, out)
    data, _ = read(out)
    assert data["images"].shape[1:] == (32, 32) and summary["pairs"] == 6 * 9
    low, ref = data["pairs"].T
    assert (data["acquisition"][low] == "short").all()
    assert (data["acquisition"][ref] == "reference").all()
    assert (data["phantom"][low] == data["phantom"][ref]).all()
    assert (data["slice_index"][low] == data["slice_index"][ref]).all()
    # The hole (phantom slices z = -3 and -1 mm, each 2 mm thick) touches the recon planes
    # z = -4, -2 and 0 (each [z - 1, z + 1] mm).
    has_hole = data["defect_types"] == "hole"
    assert set(data["position_mm"][has_hole].tolist()) == {-4.0, -2.0, 0.0}
    assert (data["defect_count"][has_hole] == 1).all() and (data["defect_count"][~has_hole] == 0
                                                            ).all()
    assert (data["masks"][has_hole].reshape(has_hole.sum(), -1).max(axis=1) == 1).all()
    assert not data["masks"][~has_hole].any()
    # Pixels (y 3-4, x 8-9) of 16 -> rows 6-9, columns 16-19 of 32.
    mask = data["masks"][np.flatnonzero(has_hole)[0]]
    np.testing.assert_array_equal(np.argwhere(mask).min(axis=0), [6, 16])
    np.testing.assert_array_equal(np.argwhere(mask).max(axis=0), [9, 19])
    assert out.with_suffix(".png").stat().st_size > 1000


def test_splits_are_by_phantom_and_seeded(results, tmp_path):
    root, _ = results
    seen = []
    for seed in (7, 7, 8):
        out = tmp_path / f"p{len(seen)}.h5"
        build_positron_dataset(spec(seed=seed), root, out)
        data, _ = read(out)
        split_of = {}
        for phantom, split in zip(data["phantom"], data["split"], strict=True):
            assert split_of.setdefault(phantom, split) == split  # one split per phantom
        assert sorted(split_of.values()).count("train") == 3  # 0.5 of 6 phantoms
        assert set(split_of.values()) == {"train", "val", "test"}
        seen.append(split_of)
    assert seen[0] == seen[1]
    assert seen[0] != seen[2]


def test_axial_slices(results, tmp_path):
    root, images = results
    out = tmp_path / "axial.h5"
    build_positron_dataset(spec(orientation="axial", size_px=16), root, out)
    data, _ = read(out)
    # Columns x = const through the disk (radius 6 px of 2 mm): activity against the
    # columns' own image (z, y), resized from 11 x 16 to 16 x 16.
    assert set(data["slice_index"]) <= set(range(16)) and np.isnan(data["counts"]).all()
    assert data["images"].shape[1:] == (16, 16)
    # The hole spans phantom columns x = 1 and 3 mm (2 mm wide each): recon columns 8 and 9.
    has_hole = data["defect_types"] == "hole"
    assert set(data["slice_index"][has_hole].tolist()) == {8, 9}
    # On the (z, y) image of 11 planes x 16 rows: planes z = -4, -2, 0 (indices 3 to 5 of
    # 11) and y rows 3-4 of 16, stretched to 16 x 16 (planes x 16/11, y unchanged).
    mask = data["masks"][np.flatnonzero(has_hole)[0]]
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max()) == (int(3 * 16 / 11), int(np.ceil(6 * 16 / 11)) - 1)
    assert (cols.min(), cols.max()) == (3, 4)


def test_bad_inputs_are_refused_and_nothing_is_written(results, tmp_path):
    root, _ = results
    bad = tmp_path / "bad"
    make_results(bad, PHANTOMS[:2], np.random.default_rng(1))
    out = tmp_path / "positron.h5"
    # A reconstruction of another shape than its pair.
    wrong = bad / "recon" / PHANTOMS[1] / "reference.h5"
    wrong.unlink()
    write_recon_file(wrong, np.ones((11, 8, 8)), 10.0,
                     RECON_GRID.__class__((11, 8, 8), (2.0, 4.0, 4.0), (-10.0, -14.0, -14.0)))
    with pytest.raises(ValueError, match=r"tube_0001/reference.h5: image has shape \(11, 8, 8\)"):
        build_positron_dataset(spec(phantoms=PHANTOMS[:2]), bad, out)
    # A missing reconstruction, named before any work.
    wrong.unlink()
    with pytest.raises(FileNotFoundError, match="tube_0001/reference.h5 does not exist"):
        build_positron_dataset(spec(phantoms=PHANTOMS[:2]), bad, out)
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert not list(tmp_path.glob(".*tmp"))
    # An existing output is not overwritten unless asked.
    out.write_text("user data")
    with pytest.raises(FileExistsError):
        build_positron_dataset(spec(), root, out)
    assert out.read_text() == "user data"
    other = copy.deepcopy(spec())
    other["acquisitions"] = []
    with pytest.raises(ValueError, match="none of its acquisitions"):
        build_positron_dataset(other, root, tmp_path / "x.h5")


@pytest.mark.parametrize("normalisation", ["image", "dataset"])
def test_streamed_batches_give_the_one_batch_result(results, tmp_path, monkeypatch,
                                                    normalisation):
    """Rows are gathered and normalised BATCH_ROWS at a time: with batches of 5 the file is
    the one of a single batch (the whole set at once, checked above against the sources)."""
    import models.data.positron_dataset as module

    root, _ = results
    build_positron_dataset(spec(normalisation=normalisation), root, tmp_path / "one.h5")
    monkeypatch.setattr(module, "BATCH_ROWS", 5)
    build_positron_dataset(spec(normalisation=normalisation), root, tmp_path / "many.h5")
    one, _ = read(tmp_path / "one.h5")
    many, _ = read(tmp_path / "many.h5")
    assert len(one["images"]) > 5 * 10
    for key in one:
        np.testing.assert_array_equal(one[key], many[key], err_msg=key)
    assert not any(p.name.endswith(".scratch") for p in tmp_path.iterdir())


_PEAK_MEMORY_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {repo!r})
from models.data.positron_dataset import build_positron_dataset
from tests.models.fixtures import make_results
from tests.models.test_positron_dataset import spec
root = Path(sys.argv[1])
names = [f"tube_{{i:04d}}" for i in range(int(sys.argv[2]))]
make_results(root, names, np.random.default_rng(0), slices=40)
build_positron_dataset(spec(size_px=128, phantoms=names), root, root / "positron.h5")
print(next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:")))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_phantoms(tmp_path):
    """The gathering job at 4 and 24 phantoms (128 px): the 20 more phantoms add about 220 MB
    of images (two float32 images and a mask per slice, counted from the file), which an
    in-memory gather holds several times over (846 MB more measured before streaming); the
    streamed one stays within a quarter of it."""
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    peaks = {}
    for n in (4, 24):
        (tmp_path / str(n)).mkdir()
        run = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_SCRIPT.format(repo=repo),
                              str(tmp_path / str(n)), str(n)], capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[n] = int(run.stdout.split()[-1]) / 1024  # MB
        with h5py.File(tmp_path / str(n) / "positron.h5") as f:
            images = len(f["images"])
    growth_mb = 20 * images / 24 * 128 * 128 * 9 / 1e6  # what the 20 more phantoms add
    assert growth_mb > 20
    assert peaks[24] - peaks[4] < 0.25 * growth_mb, (peaks, growth_mb)


def _record(root, phantoms, grid=None) -> None:
    """Give the fixture's phantom and reconstruction files the provenance attributes the
    pipeline's writers record (phantom name, dataset, config, grid, acquisition, scanner)."""
    import json

    for name in phantoms:
        with h5py.File(root / "phantoms" / f"{name}.h5", "a") as f:
            f.attrs.update(phantom_name=name, dataset="t", config_sha256=f"sha-{name}")
            recorded_grid = {"shape": list(f["material"].shape),
                             "voxel_size_mm": f.attrs["voxel_size_mm"].tolist(),
                             "origin_mm": f.attrs["origin_mm"].tolist()}
        for acq in ("short", "reference"):
            with h5py.File(root / "recon" / name / f"{acq}.h5", "a") as f:
                f.attrs.update(phantom_name=name, dataset="t", acquisition=acq,
                               phantom_config_sha256=f"sha-{name}",
                               phantom_grid=json.dumps(grid or recorded_grid),
                               scanner=json.dumps({"rings": 64, "crystal_depth_mm": 20.0}))


@pytest.mark.parametrize("key, value, expected", [
    ("phantom_name", "tube_0000", "records phantom 'tube_0000', but phantom file "
                                  "{phantom} records 'tube_0001'"),
    ("phantom_config_sha256", "sha-old", "records phantom config_sha256 'sha-old', but "
                                         "phantom file {phantom} records 'sha-tube_0001'"),
    ("phantom_grid", '{"shape": [12, 16, 16], "voxel_size_mm": [2.0, 2.0, 1.0]}',
     "records phantom grid voxel_size_mm [2.0, 2.0, 1.0], but phantom file {phantom} records "
     "[2.0, 2.0, 2.0]"),
    ("acquisition", "short", "records acquisition 'short', but its place in the results "
                            "(tube_0001/reference.h5) records 'reference'"),
    ("scanner", '{"rings": 32}', "records scanner geometry rings 32, but reconstruction "
                                 "{short} records 64"),
])
def test_a_reconstruction_of_another_phantom_or_acquisition_is_refused(tmp_path, key, value,
                                                                       expected):
    root = tmp_path / "results"
    make_results(root, PHANTOMS[:2], np.random.default_rng(2))
    _record(root, PHANTOMS[:2])
    out = tmp_path / "positron.h5"
    build_positron_dataset(spec(phantoms=PHANTOMS[:2]), root, out)  # all records agree
    out.unlink()
    out.with_suffix(".png").unlink()
    wrong = root / "recon" / PHANTOMS[1] / "reference.h5"
    with h5py.File(wrong, "a") as f:
        f.attrs[key] = value
    with pytest.raises(ValueError) as info:
        build_positron_dataset(spec(phantoms=PHANTOMS[:2]), root, out)
    assert str(info.value).startswith(f"reconstruction {wrong} ")
    assert expected.format(phantom=root / "phantoms" / f"{PHANTOMS[1]}.h5",
                           short=root / "recon" / PHANTOMS[1] / "short.h5") in str(info.value)
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_cli_names_both_files_of_a_wrong_pairing(tmp_path):
    import json
    import subprocess
    import sys

    root = tmp_path / "results"
    make_results(root, PHANTOMS[:2], np.random.default_rng(3))
    _record(root, PHANTOMS[:2])
    wrong = root / "recon" / PHANTOMS[0] / "short.h5"
    with h5py.File(wrong, "a") as f:
        f.attrs["phantom_name"] = PHANTOMS[1]
    out = tmp_path / "positron.h5"
    run = subprocess.run([sys.executable, "-m", "models", "positron-dataset", "--spec",
                          json.dumps(spec(phantoms=PHANTOMS[:2])), "--results", str(root),
                          "--out", str(out)], capture_output=True, text=True)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0].startswith(f"error: reconstruction {wrong} records phantom 'tube_0001', but "
                             f"phantom file {root / 'phantoms' / 'tube_0000.h5'} records "
                             "'tube_0000'; ")
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_phantom_splits_put_each_defect_type_in_every_split(tmp_path):
    """Twelve phantoms: three with a crack, three with a pit, six without defects; the
    split reads each phantom file's defect types and places both types (and 'none') in
    train, val and test."""
    import json

    from models.data.positron_dataset import phantom_splits
    from tests.models.fixtures import write_phantom_file

    kinds = ["crack"] * 3 + ["pit"] * 3 + [None] * 6
    files = {}
    for i, kind in enumerate(kinds):
        path = tmp_path / f"tube_{i:04d}.h5"
        write_phantom_file(path)
        with h5py.File(path, "a") as f:
            f.attrs["defects"] = json.dumps([{"label": 1, "type": kind}] if kind else [])
        files[path.stem] = {"phantom": path}
    for seed in range(10):
        split = phantom_splits(list(files), files, [0.5, 0.25, 0.25], seed)
        assert sorted(split.values()).count("train") == 6
        for kind in ("crack", "pit", None):
            holders = [name for name, k in zip(files, kinds, strict=True) if k == kind]
            assert {split[name] for name in holders} == {"train", "val", "test"}, (seed, kind)
