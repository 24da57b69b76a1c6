"""Expected trues of the statistical engine: the geometric acceptance of a sphere against a
Monte Carlo estimate written here (isotropic photon axes, the polygon of faces as
half-planes), and the detected trues per decay against the embedded Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.statistical.response import (
    OUTSIDE_RINGS,
    DetectorResponse,
    ResponseBins,
    calibrate,
    n_cells,
)
from sim.engines.statistical.trues import expected_trues
from sim.scanner.geometry import Scanner
from tests.sim.synthetic import phantom_data

SCANNER = Scanner()
DIGITIZER = DigitizerSettings(0.15, 511.0, 300.0, (350.0, 650.0))


def _sphere(radius_mm: float, shape=(40, 40, 40), material: str = "air"):
    zz, yy, xx = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    activity = ((xx**2 + yy**2 + zz**2) < radius_mm**2).astype(float)
    return phantom_data(np.full(shape, material), activity)


def _perfect_response() -> DetectorResponse:
    """Every photon entering a face cell is detected (one outcome per cell)."""
    bins = ResponseBins()
    n = n_cells(SCANNER, bins)
    zeros = np.zeros(n)
    return DetectorResponse(SCANNER, DIGITIZER, bins, np.ones(n, np.int64),
                            np.arange(n + 1, dtype=np.int64), zeros.astype(np.int16),
                            zeros.astype(np.int16), zeros.astype(np.float32) + 511,
                            np.zeros((n, 3), np.float32), zeros.astype(np.float32))


def test_with_perfect_detection_the_sum_is_the_geometric_acceptance():
    phantom = _sphere(12.0)
    result = expected_trues(phantom.activity, phantom.mu511_per_mm * 0, phantom.voxel_size_mm,
                            phantom.origin_mm, _perfect_response())
    # Reference: points uniform in the sphere, isotropic axes; an axis counts when both of
    # its ends leave the polygon of front faces within the axial extent of the face cells
    # (the rings and the virtual rings beyond the ends the response covers).
    rng = np.random.default_rng(4)
    n = 400_000
    r = 12.0 * rng.random(n) ** (1 / 3)
    point = r[:, None] * _isotropic(n, rng)
    axis = _isotropic(n, rng)
    angles = SCANNER.module_angles_rad
    normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    half = SCANNER.axial_length_mm / 2 + OUTSIDE_RINGS * SCANNER.axial_pitch_mm
    both = np.ones(n, bool)
    for d in (axis, -axis):
        towards = d[:, :2] @ normals.T
        t = np.where(towards > 0, (SCANNER.inner_radius_mm - point[:, :2] @ normals.T)
                     / np.where(towards > 0, towards, 1), np.inf).min(axis=1)
        both &= np.abs(point[:, 2] + t * d[:, 2]) < half
    acceptance = both.mean()
    sigma = np.sqrt(acceptance * (1 - acceptance) / n)
    assert abs(result.per_decay - acceptance) < 0.01 * acceptance + 4 * sigma, (
        result.per_decay, acceptance)


def _isotropic(n, rng):
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - cos_t**2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), cos_t], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("material", ["air", "water"])
def test_detected_trues_per_decay_match_the_monte_carlo(material):
    """A 15 mm sphere of activity (in air: detection only; in water: attenuation too): the
    expected trues per decay against the embedded engine's trues, within 2 % (the
    calibration's own statistics included) or 3 Poisson sigma."""
    phantom = _sphere(15.0, material=material)
    response = calibrate(SCANNER, DIGITIZER, photons_per_cell=40, seed=1)
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, response).per_decay
    engine = FastEngine(phantom, SCANNER, DIGITIZER, SorterSettings(),
                        EngineSettings(chunk_decays=200_000))
    counts = engine.run(2e6, 0.4, 6586.2, seed=5, workers=2).counts
    measured = counts["trues"] / counts["primaries"]
    sigma = np.sqrt(counts["trues"]) / counts["primaries"]
    assert abs(expected - measured) < max(0.02 * measured, 3 * sigma), (expected, measured)
