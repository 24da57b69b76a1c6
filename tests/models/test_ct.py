"""CT sources: DeepLesion 16-bit PNGs with known HU, the DICOM file pydicom ships, NIfTI
orientation with an asymmetric feature, the synthetic generator's tissue HU against textbook
values, and the ct.h5 builder."""

from __future__ import annotations

import json
import shutil

import h5py
import nibabel as nib
import numpy as np
import pydicom.data
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from models.data.ct_dataset import build_ct_dataset, to_hu
from models.data.ct_readers import read_deeplesion, read_dicom, read_nifti
from models.data.synthetic_ct import LABELS, synthetic_slices


def write_png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def test_deeplesion_reader_recovers_hu(tmp_path):
    root = tmp_path / "Images_png"
    hu = np.array([[-1000, -100, 0, 40], [60, 300, 1200, 3071]], dtype=np.int32)
    for s, series in enumerate(("000001_01_01", "000002_03_02")):
        for k in range(3):
            write_png16(root / series / f"{k:03d}.png", hu + 32768 + s + k)
    (tmp_path / "DL_info.csv").write_text(
        "File_name,Key_slice_index,Spacing_mm_px_,Bounding_boxes\n"
        "000001_01_01_001.png,1,\"0.78, 0.78, 5\",\"1.5, 0.5, 3.0, 1.0\"\n"
        "000002_03_02_002.png,2,\"0.65, 0.65, 1\",\"0, 0, 1, 1\"\n")
    slices = read_deeplesion(tmp_path)
    assert len(slices) == 6 and slices.series[0] == "000001_01_01"
    np.testing.assert_array_equal(slices.hu[0], hu)
    np.testing.assert_array_equal(slices.hu[5], hu + 1 + 2)
    assert slices.pixel_mm[0] == 0.78 and slices.pixel_mm[5] == 0.65
    assert slices.lesion_boxes[1] == [[1.5, 0.5, 3.0, 1.0]] and slices.lesion_boxes[0] == []
    assert slices.lesion_boxes[5] == [[0.0, 0.0, 1.0, 1.0]]
    assert len(read_deeplesion(tmp_path, limit=4)) == 4
    # Through the builder: the 2 x 4 slices are padded to 4 x 4 (one row above) and doubled.
    out = tmp_path / "ct.h5"
    cfg = {"source": "deeplesion", "path": str(tmp_path), "size_px": 8,
           "window_hu": [-1000.0, 1000.0], "n_images": None, "field_of_view_mm": 400.0,
           "split_fractions": [1, 0, 1], "seed": 0}
    build_ct_dataset({"ct_images": cfg}, out)
    with h5py.File(out) as f:
        assert json.loads(f["lesion_boxes"][1]) == [[3.0, 3.0, 6.0, 4.0]]
        assert f["pixel_mm"][0] == pytest.approx(0.78 * 4 / 8)
        split = [s.decode() for s in f["split"][...]]
    assert split[:3] == [split[0]] * 3 and split[3:] == [split[3]] * 3  # by series
    assert split[0] != split[3]


def test_deeplesion_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="DeepLesion folder .*nowhere does not exist"):
        read_deeplesion(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.* is empty"):
        read_deeplesion(tmp_path / "empty")
    eight = tmp_path / "eight" / "000001_01_01" / "000.png"
    eight.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(eight)
    with pytest.raises(ValueError, match=r"000.png: L PNG, but DeepLesion slices are 16-bit"):
        read_deeplesion(tmp_path / "eight")


def test_dicom_reader_reads_pydicom_ct_small(tmp_path):
    """CT_small.dcm: stored values 128..2191 with RescaleIntercept -1024 (slope 1)."""
    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), folder / "a.dcm")
    slices = read_dicom(folder)
    assert len(slices) == 1 and slices.hu[0].shape == (128, 128)
    assert slices.hu[0].min() == -896 and slices.hu[0].max() == 1167
    assert slices.pixel_mm[0] == pytest.approx(0.661468)
    (folder / "broken.dcm").write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(ValueError, match=r"broken.dcm: not a readable DICOM file"):
        read_dicom(folder)


def test_nifti_orientation(tmp_path):
    """A bright blob at the patient's right (+x in RAS) and front (+y): in display
    orientation it is in the top rows and the left columns, whether the file is stored RAS
    or flipped (LPS-like) with the matching affine."""
    data = np.zeros((20, 30, 4), np.float32)  # (x, y, z), RAS
    data[15, 25, :] = 1000.0  # x index 15 of 20 -> right; y index 25 of 30 -> front
    ras = nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(ras, tmp_path / "ras.nii.gz")
    flipped_affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    flipped_affine[:2, 3] = [19.0, 29.0]  # voxel 0 at the same world corner as RAS voxel 19
    nib.save(nib.Nifti1Image(data[::-1, ::-1].copy(), flipped_affine), tmp_path / "lps.nii")
    a = read_nifti(tmp_path / "ras.nii.gz")
    b = read_nifti(tmp_path / "lps.nii")
    assert len(a) == 4 and a.hu[0].shape == (30, 20)
    row, col = np.unravel_index(np.argmax(a.hu[0]), a.hu[0].shape)
    assert (row, col) == (30 - 1 - 25, 20 - 1 - 15)  # front = top, patient right = left
    for sa, sb in zip(a.hu, b.hu, strict=True):
        np.testing.assert_array_equal(sa, sb)
    (tmp_path / "bad.nii").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.nii: not a readable NIfTI file"):
        read_nifti(tmp_path / "bad.nii")


def test_synthetic_ct_hu_and_seed():
    """Tissue means inside each class (eroded by one pixel against partial volume) against
    textbook HU: air -1000, lung -900..-800, fat about -100, soft tissue 20..60, bone > 300."""
    hus, labels = synthetic_slices(12, 128, 400.0, seed=3)
    means = {name: [] for name in LABELS}
    for hu, label in zip(hus, labels, strict=True):
        for name, value in LABELS.items():
            core = binary_erosion(label == value, iterations=1)
            if core.sum() > 20:
                means[name].append(float(hu[core].mean()))
    assert -1010 < np.mean(means["air"]) < -990
    assert -900 < np.mean(means["lung"]) < -800
    assert -120 < np.mean(means["fat"]) < -80
    assert 20 <= np.mean(means["soft"]) <= 60
    assert np.mean(means["bone"]) > 300
    again, _ = synthetic_slices(3, 128, 400.0, seed=3)
    other, _ = synthetic_slices(3, 128, 400.0, seed=4)
    for a, b, c in zip(hus[:3], again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_ct_dataset_synthetic_and_dicom(tmp_path):
    cfg = {"source": "synthetic", "path": None, "size_px": 32, "window_hu": [-1000.0, 1000.0],
           "n_images": 10, "field_of_view_mm": 400.0, "split_fractions": [0.8, 0.1, 0.1],
           "seed": 5}
    out = tmp_path / "ct.h5"
    summary = build_ct_dataset({"ct_images": cfg}, out)
    with h5py.File(out) as f:
        assert f.attrs["synthetic"] and "SYNTHETIC" in f.attrs["note"]
        images = f["images"][...]
        assert images.shape == (10, 32, 32) and f["images"].chunks == (1, 32, 32)
        assert -1 <= images.min() and images.max() <= 1
    assert summary["splits"] == {"train": 8, "val": 1, "test": 1}
    assert out.with_suffix(".png").is_file()
    # DICOM through the window: the body of CT_small inside [-1000, 1000] maps back to HU.
    folder = tmp_path / "dicom"
    folder.mkdir()
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), folder / "a.dcm")
    dicom = dict(cfg, source="dicom", path=str(folder), size_px=128)
    build_ct_dataset({"ct_images": dicom}, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5") as f:
        back = to_hu(f["images"][0], (-1000.0, 1000.0))
        assert not f.attrs["synthetic"]
    hu = read_dicom(folder).hu[0]
    inside = (hu > -1000) & (hu < 1000)
    np.testing.assert_allclose(back[inside], hu[inside], atol=1e-3)
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        build_ct_dataset({"ct_images": dict(cfg, source="dicom", path=str(tmp_path / "missing"))},
                         tmp_path / "e.h5")
    assert not (tmp_path / "e.h5").exists()


def test_cli_reports_a_bad_source_on_one_line(tmp_path, capsys):
    from models.__main__ import main as models_main

    spec = {"ct_images": {"source": "dicom", "path": str(tmp_path / "absent"), "size_px": 16,
                          "window_hu": [-1000.0, 1000.0], "n_images": None,
                          "field_of_view_mm": 400.0, "split_fractions": [0.8, 0.1, 0.1],
                          "seed": 0}}
    code = models_main(["ct-dataset", "--spec", json.dumps(spec), "--out",
                        str(tmp_path / "ct.h5")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: DICOM folder {tmp_path / 'absent'} does not exist"]
    assert not (tmp_path / "ct.h5").exists()


def test_dicom_series_mixing_sizes_or_modalities_is_refused(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    source = pydicom.data.get_testdata_file("CT_small.dcm")
    shutil.copy(source, folder / "a.dcm")
    # Another slice of the same series, cropped to 64 x 64.
    ds = pydicom.dcmread(source)
    ds.PixelData = ds.pixel_array[:64, :64].copy().tobytes()
    ds.Rows, ds.Columns = 64, 64
    ds.InstanceNumber = 2
    ds.save_as(folder / "b.dcm")
    with pytest.raises(ValueError, match=r"b.dcm: Rows x Columns 64 x 64 differ from 128 x 128 "
                                         r"of a.dcm in the same series"):
        read_dicom(folder)
    ds = pydicom.dcmread(source)
    ds.Modality = "MR"
    ds.save_as(folder / "b.dcm")
    with pytest.raises(ValueError, match=r"b.dcm: Modality is 'MR', not CT"):
        read_dicom(folder)
    ds = pydicom.dcmread(source)
    ds.PixelSpacing = [0.0, 0.0]
    ds.save_as(folder / "b.dcm")
    with pytest.raises(ValueError, match=r"b.dcm: PixelSpacing \(mm\) must be above 0"):
        read_dicom(folder)


@pytest.mark.parametrize("affine, what", [
    (np.zeros((4, 4)), "affine is singular"),
    (np.diag([1.0, np.nan, 1.0, 1.0]), "affine has 1 NaN or infinite value"),
    (np.diag([1.0, 0.0, 2.0, 1.0]), "affine is singular"),
])
def test_nifti_with_a_bad_affine_is_refused(tmp_path, affine, what):
    # What a broken writer leaves: the sform holds the bad affine and nibabel reads it as is.
    header = nib.Nifti1Header()
    header.set_sform(affine, code=1)
    path = tmp_path / "bad_affine.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), None, header), path)
    with pytest.raises(ValueError, match=f"bad_affine.nii: {what}"):
        read_nifti(path)
