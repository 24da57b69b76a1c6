"""The reconstruct stage end to end on small files written here: a point source in a real
phantom file reconstructs at its place in the HDF5 image and in the NIfTI copy (through the
affine), the cached system matrix is used and checked, and bad inputs give one clear error
before any output appears."""

from __future__ import annotations

import copy
import json
import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest

from pipeline.config import load_config, validate_config
from pipeline.specs import recon_spec
from recon.__main__ import main as recon_main
from recon.detectability import read_json as read_detectability
from recon.image_io import read_recon
from recon.stage import build_sensitivity_file, build_system_matrix_file, reconstruct
from sim.listmode.file import COLUMNS, write_listmode
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom
from sim.scanner.geometry import Scanner
from tests.recon.test_point_source import SOURCE_MM, point_source_events


def listmode_columns(events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All list-mode columns for events that only have crystals and times."""
    n = len(events["crystal1"])
    out = {}
    for name, (dtype, width) in COLUMNS.items():
        shape = (n, width) if width else (n,)
        out[name] = events[name].astype(dtype) if name in events else np.zeros(shape, dtype)
    out["energy1_kev"][:] = out["energy2_kev"][:] = 511.0
    return out


def write_events(path, events, scanner: Scanner | None = None):
    scanner = scanner or Scanner()
    attrs = {"engine": "test", "engine_version": "0", "primaries": len(events["crystal1"]),
             "activity_bq": 1.0, "duration_s": 1.0,
             "scanner": json.dumps(scanner.to_dict(), sort_keys=True)}
    empty = listmode_columns({"crystal1": np.zeros(0, np.int32),
                              "crystal2": np.zeros(0, np.int32)})
    return write_listmode(path, listmode_columns(events), empty, attrs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A point phantom (water-free air grid holding SOURCE_MM) and its spec."""
    folder = tmp_path_factory.mktemp("stage")
    cfg = copy.deepcopy(load_config())
    cfg["datasets"] = {"pt": {"family": "point", "n_phantoms": 1, "acquisitions": ["short"],
                              "grid": {"shape": [20, 64, 64], "voxel_size_mm": [2.0, 1.0, 1.0]},
                              "point": {"position_mm": SOURCE_MM.tolist(), "diameter_mm": 1.0}}}
    cfg["recon"].update(voxel_size_xy_mm=2.0, iterations=3, subsets=4)
    cfg = validate_config(cfg)
    phantom_h5 = folder / "point_0000.h5"
    build_phantom(phantom_spec(cfg, "pt", "point_0000"), phantom_h5)
    listmode_h5 = write_events(folder / "short.h5",
                               point_source_events(Scanner(), 30000, np.random.default_rng(3)))
    return cfg, folder, phantom_h5, listmode_h5


def peak_xyz(image, origin_zyx, voxel_zyx):
    idx = np.array(np.unravel_index(np.argmax(image), image.shape))
    return (np.asarray(origin_zyx) + idx * np.asarray(voxel_zyx))[::-1]


def test_2d_reconstruction_files(setup, tmp_path):
    cfg, _, phantom_h5, listmode_h5 = setup
    spec = recon_spec(cfg, "pt")
    system_h5 = build_system_matrix_file(spec, tmp_path / "system.h5")
    out = tmp_path / "recon" / "short.h5"
    summary = reconstruct(spec, listmode_h5, phantom_h5, out, system_h5=system_h5)
    rec = read_recon(out)
    assert rec.image.shape == rec.grid.shape and rec.image.dtype == np.float32
    assert rec.grid.voxel_size_mm == (2.0, 2.0, 2.0)
    np.testing.assert_allclose(peak_xyz(rec.image, rec.grid.origin_mm, rec.grid.voxel_size_mm),
                               SOURCE_MM, atol=2.0)
    assert len(rec.loglik) == 3 and rec.attrs["algorithm"] == "OSEM (2D SSRB)"
    assert rec.plane_counts.sum() == summary["coincidences_used"]
    assert rec.attrs["attenuation_corrected"] and "config_sha256" in rec.attrs
    assert summary["coincidences_used"] > 3000
    # NIfTI: the affine takes the brightest voxel to the source's scanner coordinates.
    nifti = nib.load(out.with_suffix(".nii.gz"))
    data = np.asarray(nifti.dataobj)
    assert data.shape == rec.image.shape[::-1]
    ijk = np.array(np.unravel_index(np.argmax(data), data.shape))
    np.testing.assert_allclose(nib.affines.apply_affine(nifti.affine, ijk), SOURCE_MM, atol=2.0)
    assert out.with_suffix(".png").stat().st_size > 1000
    # The same call again refuses to overwrite.
    with pytest.raises(FileExistsError, match="--overwrite"):
        reconstruct(spec, listmode_h5, phantom_h5, out, system_h5=system_h5)


def test_postfilter_keeps_counts_and_widens(setup, tmp_path):
    cfg, _, phantom_h5, listmode_h5 = setup
    reconstruct(recon_spec(cfg, "pt"), listmode_h5, phantom_h5, tmp_path / "a.h5")
    sharp = read_recon(tmp_path / "a.h5").image
    cfg2 = copy.deepcopy(cfg)
    cfg2["recon"]["postfilter_fwhm_mm"] = 6.0
    reconstruct(recon_spec(cfg2, "pt"), listmode_h5, phantom_h5, tmp_path / "b.h5")
    smooth = read_recon(tmp_path / "b.h5").image
    # Zero padding outside the grid: the source is 5 mm from the last plane, so a little of
    # its activity is filtered out of the image.
    assert 0.9 * sharp.sum() < smooth.sum() <= sharp.sum() * (1 + 1e-5)
    assert smooth.max() < 0.5 * sharp.max()
    # A 6 mm FWHM Gaussian spreads the peak: the profile along x through it gets wider.
    iz, iy, ix = np.unravel_index(np.argmax(sharp), sharp.shape)
    width = [np.sum(im[iz, iy] >= im[iz, iy].max() / 2) for im in (sharp, smooth)]
    assert width[1] >= width[0] + 2


def test_bad_inputs_give_one_clear_error_and_no_output(setup, tmp_path):
    cfg, folder, phantom_h5, listmode_h5 = setup
    spec = recon_spec(cfg, "pt")
    out = tmp_path / "x.h5"
    # Another scanner geometry.
    other = write_events(tmp_path / "other.h5",
                         {"crystal1": np.array([0]), "crystal2": np.array([60]),
                          "time1_ns": np.zeros(1), "time2_ns": np.zeros(1)},
                         Scanner(crystals_per_ring=128, modules_per_ring=16))
    with pytest.raises(ValueError, match=r"other.h5: recorded with another scanner geometry: "
                                         r"crystals_per_ring is 128 in the file, 184"):
        reconstruct(spec, other, phantom_h5, out)
    # An image box wider than the attenuation map.
    wide = copy.deepcopy(spec)
    wide["recon"]["fov_xy_mm"] = 120.0
    with pytest.raises(ValueError, match=r"point_0000.h5: the attenuation map \(mu511\) covers"):
        reconstruct(wide, listmode_h5, phantom_h5, out)
    # An image box larger than the ring.
    huge = copy.deepcopy(spec)
    huge["recon"]["fov_xy_mm"] = 240.0
    with pytest.raises(ValueError, match="larger than the ring"):
        reconstruct(huge, listmode_h5, phantom_h5, out)
    # A cached system matrix of another grid.
    coarse = copy.deepcopy(spec)
    coarse["recon"]["voxel_size_xy_mm"] = 4.0
    stale = build_system_matrix_file(coarse, tmp_path / "coarse.h5")
    with pytest.raises(ValueError, match="coarse.h5: made for another geometry: shape_yx"):
        reconstruct(spec, listmode_h5, phantom_h5, out, system_h5=stale)
    # Not a list-mode file.
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        reconstruct(spec, phantom_h5.with_suffix(".png"), phantom_h5, out)
    assert not out.exists() and not list(tmp_path.glob("*.tmp")) and not list(
        tmp_path.glob(".*"))
    # The command line gives the same message on one line, exit code 2.
    assert recon_main(["reconstruct", "--spec", json.dumps(spec), "--listmode", str(other),
                       "--phantom-file", str(phantom_h5), "--out", str(out)]) == 2


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_empty_listmode_gives_a_zero_image_and_a_warning(setup, tmp_path, mode):
    cfg, _, phantom_h5, _ = setup
    spec = recon_spec(cfg, "pt")
    spec["recon"]["mode"] = mode
    spec["recon"]["attenuation_correction"] = False
    empty = write_events(tmp_path / "empty.h5", {"crystal1": np.zeros(0), "crystal2": np.zeros(0),
                                                 "time1_ns": np.zeros(0),
                                                 "time2_ns": np.zeros(0)})
    with pytest.warns(UserWarning, match="no usable coincidences"):
        reconstruct(spec, empty, phantom_h5, tmp_path / "zero.h5")
    rec = read_recon(tmp_path / "zero.h5")
    assert rec.image.shape == rec.grid.shape and not rec.image.any()


@pytest.mark.slow
def test_3d_listmode_tof_with_attenuation(setup, tmp_path):
    cfg, _, phantom_h5, listmode_h5 = setup
    spec = recon_spec(cfg, "pt")
    spec["recon"].update(mode="3d", tof=True, max_ring_difference=4, iterations=2)
    out = tmp_path / "tof.h5"
    reconstruct(spec, listmode_h5, phantom_h5, out)
    rec = read_recon(out)
    assert rec.attrs["algorithm"] == "OSEM (3D list-mode TOF)"
    np.testing.assert_allclose(peak_xyz(rec.image, rec.grid.origin_mm, rec.grid.voxel_size_mm),
                               SOURCE_MM, atol=2.0)
    with h5py.File(out) as f:
        assert json.loads(f.attrs["params"])["tof_sigma_mm"] == pytest.approx(
            np.sqrt(2) * 300 * 0.149896229 / 2.35482, rel=1e-4)


def test_defect_measures_are_written_and_missing_when_they_cannot_be_right(setup, tmp_path):
    cfg, _, _, listmode_h5 = setup
    cfg = copy.deepcopy(cfg)
    cfg["datasets"]["tb"] = {
        "family": "tube", "n_phantoms": 1, "acquisitions": ["short"],
        "grid": {"shape": [20, 64, 64], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "tube": {"outer_radius_mm": [26.0, 26.0], "wall_thickness_mm": [4.0, 4.0],
                 "length_mm": [36.0, 36.0], "end_cap_mm": 3.0, "anisotropic_probability": 0.0},
        "defects": {"count": [2, 2], "types": {"inclusion": 1.0},
                    "inclusion": {"diameter_mm": [6.0, 8.0], "material": "steel"}}}
    cfg = validate_config(cfg)
    phantom_h5 = tmp_path / "tube_0000.h5"
    build_phantom(phantom_spec(cfg, "tb", "tube_0000"), phantom_h5)
    spec = recon_spec(cfg, "tb")
    out = tmp_path / "short.h5"
    reconstruct(spec, listmode_h5, phantom_h5, out)
    doc = read_detectability(tmp_path / "short_defects.json")
    assert doc["phantom"] == listmode_h5.parent.name and doc["acquisition"] == "short"
    assert [r["label"] for r in doc["defects"]] == [1, 2]
    assert all(r["status"] == "ok" and np.isfinite(r["cnr"]) for r in doc["defects"])
    # The dataset's CSV and figure from the command line.
    csv_path, png = tmp_path / "detectability.csv", tmp_path / "defects.png"
    assert recon_main(["detectability", "--defects", str(tmp_path / "short_defects.json"),
                       "--out-csv", str(csv_path), "--out-png", str(png)]) == 0
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 3 and all(",ok" in line for line in lines[1:])
    assert png.read_bytes()[:4] == b"\x89PNG"
    # The same phantom file without its labels: the measures are missing, not made up.
    bare = tmp_path / "bare.h5"
    shutil.copy(phantom_h5, bare)
    with h5py.File(bare, "a") as f:
        del f["labels"]
    reconstruct(spec, listmode_h5, bare, tmp_path / "bare_fast.h5")
    rows = read_detectability(tmp_path / "bare_fast_defects.json")["defects"]
    assert {r["status"] for r in rows} == {"missing: the phantom file has no labels"}
    assert all(np.isnan(r["crc"]) for r in rows)
    # An image box too small for the defects: marked outside the grid.
    small = copy.deepcopy(spec)
    small["recon"]["fov_xy_mm"] = 4.0
    reconstruct(small, listmode_h5, phantom_h5, tmp_path / "small.h5")
    rows = read_detectability(tmp_path / "small_defects.json")["defects"]
    outside = [r for r in rows if r["status"] == "missing: the defect lies outside the image grid"]
    assert outside and all(np.isnan(r["cnr"]) for r in outside)


def test_non_finite_images_are_neither_written_nor_read(tmp_path):
    """A NaN voxel (e.g. from NaN list-mode times in another tool's file) never becomes a
    normal-looking reconstruction, and a crafted one is refused where it is read."""
    import h5py

    from recon.grid import ImageGrid
    from recon.image_io import read_recon, write_recon

    grid = ImageGrid((2, 3, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    image = np.ones(grid.shape, np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"r.h5: image has 1 NaN or infinite value\(s\) "
                                         r"\(first at index \(1, 2, 3\)\)"):
        write_recon(tmp_path / "r.h5", image, grid, [], {})
    assert not (tmp_path / "r.h5").exists()
    path = write_recon(tmp_path / "ok.h5", np.ones(grid.shape), grid, [], {})
    with h5py.File(path, "a") as f:
        f["image"][0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match="ok.h5: dataset image has 1 NaN or infinite"):
        read_recon(path)
    with h5py.File(path, "a") as f:
        f["image"][0, 0, 0] = 1.0
        f.attrs["voxel_size_mm"] = [2.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="ok.h5: attribute voxel_size_mm must be above 0 mm"):
        read_recon(path)


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_kernel_method_and_psf_through_the_stage(setup, tmp_path, mode):
    """``recon.kernel: mu`` and ``psf_fwhm_mm`` reach the EM of either mode: the point stays
    where it is, the counts are kept (K's rows sum to one, G is normalised), and the file says
    what was done; without the mu map the kernel is refused before any work."""
    cfg, _, phantom_h5, listmode_h5 = setup
    images = {}
    for name, extra in (("plain", {}), ("kernel", {"kernel": "mu", "psf_fwhm_mm": 3.0})):
        spec = recon_spec(cfg, "pt")
        spec["recon"].update(mode=mode, max_ring_difference=4, iterations=2, scatter="none",
                             **extra)
        reconstruct(spec, listmode_h5, phantom_h5, tmp_path / f"{name}.h5")
        images[name] = read_recon(tmp_path / f"{name}.h5")
    rec = images["kernel"]
    assert rec.attrs["kernel"] == "mu" and rec.attrs["psf_fwhm_mm"] == 3.0
    assert images["plain"].attrs["kernel"] == "none"
    np.testing.assert_allclose(peak_xyz(rec.image, rec.grid.origin_mm, rec.grid.voxel_size_mm),
                               SOURCE_MM, atol=2.0)
    assert rec.image.sum() == pytest.approx(images["plain"].image.sum(), rel=0.1)
    spec = recon_spec(cfg, "pt")
    spec["recon"].update(mode=mode, kernel="mu", attenuation_correction=False, scatter="none")
    with pytest.raises(ValueError, match="recon.kernel"):
        reconstruct(spec, listmode_h5, phantom_h5, tmp_path / "refused.h5")
    assert not (tmp_path / "refused.h5").exists()


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_a_histogram_reconstructs_as_its_events_do(setup, tmp_path, mode):
    """The same prompts and delayed coincidences as a list-mode file and as a coincidence
    histogram (counted here): the same image, 2D (weighted rebinning) and 3D non-TOF (pairs
    repeated; MLEM, so the order of the events does not matter); a TOF reconstruction of
    the histogram is refused naming recon.tof."""
    from sim.listmode.histogram import PairCounts, write_histogram

    cfg, _, phantom_h5, _ = setup
    scanner = Scanner()
    rng = np.random.default_rng(8)
    events = point_source_events(scanner, 6000, rng)
    window_events = point_source_events(scanner, 300, rng)
    delayed = {k: window_events[k] for k in ("crystal1", "crystal2")}
    attrs = {"engine": "test", "engine_version": "0", "primaries": 6000, "activity_bq": 1.0,
             "duration_s": 1.0, "scanner": json.dumps(scanner.to_dict(), sort_keys=True)}
    n_delayed = len(delayed["crystal1"])
    listmode_h5 = write_listmode(tmp_path / "l.h5", listmode_columns(events),
                                 listmode_columns({**delayed, "time1_ns": np.zeros(n_delayed),
                                                   "time2_ns": np.zeros(n_delayed)}), attrs)
    prompts, window = PairCounts(scanner.n_crystals), PairCounts(scanner.n_crystals)
    prompts.add(events["crystal1"], events["crystal2"])
    window.add(delayed["crystal1"], delayed["crystal2"])
    histogram_h5 = write_histogram(tmp_path / "h.h5", prompts, window, attrs)
    spec = recon_spec(cfg, "pt")
    spec["recon"].update(mode=mode, randoms="delayed", iterations=2,
                         **({"subsets": 1, "max_ring_difference": 4} if mode == "3d" else {}))
    # The geometry files once for both (the reconstructions themselves are compared).
    cached = ({"system_h5": build_system_matrix_file(spec, tmp_path / "system.h5")}
              if mode == "2d" else
              {"sensitivity_h5": build_sensitivity_file(spec, tmp_path / "sens.h5", phantom_h5)})
    images = {}
    for name, path in (("listmode", listmode_h5), ("histogram", histogram_h5)):
        summary = reconstruct(spec, path, phantom_h5, tmp_path / f"{name}_recon.h5", **cached)
        images[name] = (read_recon(tmp_path / f"{name}_recon.h5"), summary)
    (a, sa), (b, sb) = images["listmode"], images["histogram"]
    assert sa["prompts"] == sb["prompts"] == len(events["crystal1"])
    assert sa["coincidences_used"] == sb["coincidences_used"]
    assert a.attrs["delayed_used"] == b.attrs["delayed_used"] > 0
    np.testing.assert_allclose(b.image, a.image, rtol=1e-4, atol=1e-6 * a.image.max())
    spec["recon"].update(mode="3d", tof=True)
    with pytest.raises(ValueError, match="recon.tof needs list-mode events"):
        reconstruct(spec, histogram_h5, phantom_h5, tmp_path / "tof.h5")
    assert not (tmp_path / "tof.h5").exists()
