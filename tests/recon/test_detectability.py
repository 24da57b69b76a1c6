"""Truth on the image grid and defect detectability, against analytic references: block means,
sphere volumes, and images whose contrast and noise are set by the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recon.detectability import (
    DetectabilitySettings,
    measure_defects,
    read_json,
    write_csv,
    write_json,
)
from recon.grid import ImageGrid
from recon.truth import (
    activity_concentration,
    box_average,
    defect_fraction,
    overlap_fractions,
    shape_from_record,
)
from sim.phantoms.shapes import Sphere
from tests.sim.synthetic import phantom_data

FILL_RADIUS_MM = 14.0


def _fine_centres(n: int, voxel_mm: float) -> np.ndarray:
    return -(n - 1) / 2 * voxel_mm + voxel_mm * np.arange(n)


def tube_phantom(spheres: list[tuple[str, tuple[float, float, float], float]],
                 shape=(24, 40, 40)) -> tuple:
    """Water cylinder (z axis) of uniform activity in air, 1 mm voxels, with spherical
    defects ``(material, centre (x, y, z) mm, radius mm)`` of no activity."""
    z, y, x = np.meshgrid(*(_fine_centres(n, 1.0) for n in shape), indexing="ij")
    names = np.where(x**2 + y**2 <= FILL_RADIUS_MM**2, "water", "air").astype(object)
    labels = np.zeros(shape, np.uint8)
    defects = []
    for label, (material, centre, radius) in enumerate(spheres, start=1):
        inside = (x - centre[0])**2 + (y - centre[1])**2 + (z - centre[2])**2 <= radius**2
        # The phantom stage labels every voxel the solid touches (nearest point of the cube).
        near = [np.clip(c, a - 0.5, a + 0.5) for a, c in zip((x, y, z), centre, strict=True)]
        touched = sum((a - c)**2 for a, c in zip(near, centre, strict=True)) < radius**2
        names[inside] = material
        labels[touched] = label
        defects.append({"label": label, "type": "inclusion" if material == "steel" else "bubble",
                        "material": material, "replaces": ["water"],
                        "diameter_mm": 2 * radius,
                        "shape": Sphere(centre, radius).describe()})
    activity = (names == "water").astype(float)
    phantom = phantom_data(names.astype(str), activity / activity.sum())
    phantom.labels = labels
    phantom.defects = defects
    return phantom


def coarse_grid(phantom, factor=2) -> ImageGrid:
    shape = tuple(n // factor for n in phantom.activity.shape)
    voxel = tuple(v * factor for v in phantom.voxel_size_mm)
    origin = tuple(-(n - 1) / 2 * v for n, v in zip(shape, voxel, strict=True))
    return ImageGrid(shape, voxel, origin)


def test_overlap_fractions_of_nested_and_shifted_cells():
    fine = _fine_centres(8, 1.0)
    coarse = _fine_centres(4, 2.0)
    w = overlap_fractions(coarse, 2.0, fine, 1.0)
    np.testing.assert_allclose(w, np.kron(np.eye(4), [[0.5, 0.5]]))
    # A cell shifted by a quarter of its width: 3/4 of one source cell, 1/4 of the next.
    w = overlap_fractions(np.array([0.25]), 1.0, np.array([0.0, 1.0]), 1.0)
    np.testing.assert_allclose(w, [[0.75, 0.25]])
    # A cell half outside the source extent covers only half.
    w = overlap_fractions(np.array([4.0]), 1.0, fine, 1.0)
    assert w.sum() == pytest.approx(0.5)


def test_box_average_is_the_block_mean_and_exact_on_linear_ramps():
    rng = np.random.default_rng(0)
    volume = rng.random((6, 8, 10))
    src = ImageGrid(volume.shape, (1.0, 1.0, 1.0), tuple(_fine_centres(n, 1.0)[0]
                                                          for n in volume.shape))
    dst = ImageGrid((3, 4, 5), (2.0, 2.0, 2.0), tuple(_fine_centres(n, 2.0)[0]
                                                      for n in (3, 4, 5)))
    blocks = volume.reshape(3, 2, 4, 2, 5, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(box_average(volume, src, dst), blocks)
    # Cells at any offset and width: the mean over 20000 points of each cell of a volume that
    # varies along x (constant per source cell, 0 outside the source box).
    profile = rng.random(volume.shape[2])
    along_x = np.broadcast_to(profile, volume.shape)
    shifted = ImageGrid((2, 2, 4), (2.0, 2.0, 2.5), (-1.5, -2.0, -4.3))
    points = (shifted.centres_mm(2)[:, None]
              + 2.5 * ((np.arange(20000) + 0.5) / 20000 - 0.5)[None, :])
    cell = np.floor(points - src.lower_mm[2]).astype(int)
    values = np.where((cell >= 0) & (cell < profile.size), profile[np.clip(cell, 0, 9)], 0.0)
    np.testing.assert_allclose(box_average(along_x, src, shifted)[0, 0], values.mean(axis=1),
                               atol=1e-3)


def test_defect_fraction_integrates_to_the_sphere_volume():
    phantom = tube_phantom([("steel", (3.0, -2.0, 1.0), 4.5)])
    grid = coarse_grid(phantom)
    f = defect_fraction(phantom.defects[0], phantom, grid, subsamples=8).fraction
    volume = f.sum() * np.prod(grid.voxel_size_mm)
    # Exact up to the 8^3 sub-samples per voxel.
    assert volume == pytest.approx(4 / 3 * math.pi * 4.5**3, rel=0.02)
    assert f.max() == pytest.approx(1.0)
    assert 0.0 <= f.min()


def test_shape_records_round_trip_and_bad_ones_are_refused():
    sphere = Sphere((1.0, 2.0, 3.0), 2.5)
    assert shape_from_record(sphere.describe()) == sphere
    with pytest.raises(ValueError, match="unknown defect shape"):
        shape_from_record({"shape": "Teapot"})
    with pytest.raises(ValueError, match="Sphere"):
        shape_from_record({"shape": "Sphere", "centre_mm": [0, 0, 0]})


def test_a_perfect_image_recovers_full_contrast_at_any_scale():
    phantom = tube_phantom([("steel", (5.0, 0.0, 0.0), 4.0), ("air", (-6.0, 3.0, 3.0), 3.0)])
    grid = coarse_grid(phantom)
    truth = activity_concentration(phantom, grid)
    rows = measure_defects(7.5e3 * truth, grid, phantom)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert row["crc"] == pytest.approx(1.0, abs=1e-6)
        assert row["ratio"] == pytest.approx(row["truth_defect"] / row["truth_background"])
        assert row["ratio"] < 0.5  # cold, partial volume at the edge of the ROI only


def test_an_invisible_defect_has_no_contrast_and_noise_sets_the_cnr():
    phantom = tube_phantom([("steel", (5.0, 0.0, 0.0), 4.0)])
    grid = coarse_grid(phantom)
    truth = activity_concentration(phantom, grid)
    flat = np.where(truth > 0.5 * truth.max(), 1.0, 0.0)
    flat[defect_fraction(phantom.defects[0], phantom, grid).fraction > 0] = 1.0
    (row,) = measure_defects(flat, grid, phantom)
    assert row["ratio"] == pytest.approx(1.0)
    assert row["crc"] == pytest.approx(0.0, abs=1e-9)

    rng = np.random.default_rng(1)
    scale, sigma = 100.0, 4.0
    noisy = scale * truth / truth.max() + rng.normal(0.0, sigma, truth.shape)
    (row,) = measure_defects(noisy, grid, phantom)
    contrast = scale * abs(row["truth_defect"] - row["truth_background"]) / truth.max()
    assert row["std_background"] == pytest.approx(sigma, rel=0.15)
    assert row["cnr_voxel"] == pytest.approx(contrast / sigma, rel=0.2)
    # White noise: the mean of N voxels spreads by sigma / sqrt(N).
    assert row["std_roi"] == pytest.approx(sigma / math.sqrt(row["roi_voxels"]), rel=0.3)
    measured = abs(row["mean_defect"] - row["mean_background"])
    assert row["cnr"] == pytest.approx(measured / row["std_roi"], rel=1e-9)
    assert row["crc"] == pytest.approx(1.0, abs=0.1)


def test_roi_cnr_keeps_the_correlation_of_the_noise():
    """Smoothed noise (as a reconstruction's): the spread of the ROI means around the defect
    matches the spread of the defect ROI's own mean over independent noise realisations (the
    slow reference), which white-noise scaling of the voxel noise underestimates."""
    import scipy.ndimage

    phantom = tube_phantom([("steel", (0.0, 0.0, 0.0), 4.0)], shape=(40, 56, 56))
    grid = coarse_grid(phantom)
    truth = activity_concentration(phantom, grid)
    rng = np.random.default_rng(3)

    def noisy() -> np.ndarray:
        noise = scipy.ndimage.gaussian_filter(rng.normal(0.0, 1.0, truth.shape), 1.0)
        return 100.0 * truth / truth.max() + noise / noise.std() * 5.0

    rows = [measure_defects(noisy(), grid, phantom)[0] for _ in range(40)]
    fraction = defect_fraction(phantom.defects[0], phantom, grid).fraction
    roi = fraction >= 0.5 * fraction.max()
    ensemble = [float(noisy()[roi].mean()) for _ in range(400)]
    reference = float(np.std(ensemble, ddof=1))
    estimate = float(np.mean([r["std_roi"] for r in rows]))
    assert estimate == pytest.approx(reference, rel=0.2)
    white = float(np.mean([r["std_background"] for r in rows])) / math.sqrt(roi.sum())
    assert white < 0.6 * reference


def test_defects_that_cannot_be_measured_are_marked_missing():
    phantom = tube_phantom([("steel", (5.0, 0.0, 0.0), 4.0), ("air", (-6.0, 3.0, 3.0), 3.0)])
    # A grid covering only the -x half misses the steel sphere.
    grid = ImageGrid((12, 20, 6), (2.0, 2.0, 2.0), (-11.0, -19.0, -19.0))
    truth = activity_concentration(phantom, grid)
    rows = measure_defects(truth, grid, phantom)
    assert rows[0]["status"] == "missing: the defect lies outside the image grid"
    assert math.isnan(rows[0]["crc"]) and math.isnan(rows[0]["cnr"])
    # A background shell wider than the fill: too few background voxels.
    grid = coarse_grid(phantom)
    truth = activity_concentration(phantom, grid)
    rows = measure_defects(truth, grid, phantom, DetectabilitySettings(guard_mm=30.0))
    assert all(r["status"].startswith("missing:") and "background voxels" in r["status"]
               for r in rows)
    phantom.labels = None
    rows = measure_defects(truth, grid, phantom)
    assert {r["status"] for r in rows} == {"missing: the phantom file has no labels"}


def test_json_and_csv_keep_missing_measures_missing(tmp_path):
    phantom = tube_phantom([("steel", (5.0, 0.0, 0.0), 4.0)])
    grid = ImageGrid((12, 20, 6), (2.0, 2.0, 2.0), (-11.0, -19.0, -19.0))
    rows = measure_defects(activity_concentration(phantom, grid), grid, phantom)
    write_json(tmp_path / "d.json", rows, {"phantom": "p", "acquisition": "a"},
               DetectabilitySettings())
    doc = read_json(tmp_path / "d.json")
    assert math.isnan(doc["defects"][0]["crc"])
    assert write_csv(tmp_path / "d.csv", [doc]) == 1
    text = (tmp_path / "d.csv").read_text().splitlines()
    assert text[0].startswith("phantom,acquisition,label,type")
    assert "missing: the defect lies outside the image grid" in text[1]
