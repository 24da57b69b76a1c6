"""Trues of the statistical engine: with perfect detection, the geometric acceptance of a
sphere against a Monte Carlo estimate written here (isotropic photon axes, the polygon of
faces as half-planes); the detected trues per decay, and their distributions, against the
embedded Monte Carlo; the lines' expected detected trues against each photon's own
detection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.embedded.physics import rotate_directions
from sim.engines.embedded.source import FWHM_PER_SIGMA, Frame
from sim.engines.statistical import events
from sim.engines.statistical.entry import ring_entry
from sim.engines.statistical.events import (
    ActivityLookup,
    axes_of_lines,
    candidates,
    draw_trues,
)
from sim.engines.statistical.expectation import detected_per_decay
from sim.engines.statistical.line_trues import LineTrues, draw_line_trues
from sim.engines.statistical.response import (
    OUTSIDE_RINGS,
    DetectorResponse,
    ResponseBins,
    calibrate,
    fold,
    n_cells,
)
from sim.engines.statistical.trues import expected_trues
from sim.listmode.file import COLUMNS as LISTMODE_COLUMNS
from tests.sim.engines.statistical.helpers import (
    DIGITIZER,
    SCANNER,
    features,
    isotropic,
    phantom_data,
    sphere,
)


def _perfect_response() -> DetectorResponse:
    """Every photon entering a face cell is detected (one outcome per cell)."""
    bins = ResponseBins()
    n = n_cells(SCANNER, bins)
    zeros = np.zeros(n)
    return DetectorResponse(SCANNER, DIGITIZER, bins, np.ones(n, np.int64),
                            np.arange(n + 1, dtype=np.int64), zeros.astype(np.int16),
                            zeros.astype(np.int16), zeros.astype(np.float32) + 511,
                            np.zeros((n, 3), np.float32), zeros.astype(np.float32))


def _draw(phantom, response, decays: float, seed: int, min_sector_difference: int = 2):
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, response.scanner)
    frame = Frame(decays, 1.0, 1e12, 1)  # no decay during the frame: decays = activity
    chunks = list(draw_trues(expected, ActivityLookup(phantom.activity, phantom.voxel_size_mm,
                                                      phantom.origin_mm),
                             response, frame, 0.5, min_sector_difference, seed))
    return {k: np.concatenate([c[k] for c in chunks]) for k in LISTMODE_COLUMNS}


def test_with_perfect_detection_the_trues_per_decay_are_the_geometric_acceptance():
    phantom = sphere(12.0)
    phantom.mu511_per_mm[:] = 0
    decays = 400_000
    trues = _draw(phantom, _perfect_response(), decays, seed=1, min_sector_difference=0)
    per_decay = trues["crystal1"].size / decays
    # Reference: points uniform in the sphere, isotropic axes; an axis counts when both of
    # its ends leave the polygon of front faces within the axial extent of the face cells
    # (the rings and the virtual rings beyond the ends the response covers).
    rng = np.random.default_rng(4)
    n = 400_000
    r = 12.0 * rng.random(n) ** (1 / 3)
    point = r[:, None] * isotropic(n, rng)
    axis = isotropic(n, rng)
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
    sigma = np.sqrt(acceptance * (1 - acceptance) / n + acceptance / decays)
    assert abs(per_decay - acceptance) < 4 * sigma, (per_decay, acceptance)


@pytest.fixture(scope="module")
def response():
    # The default calibration's size: the interaction points are its values moved with
    # the entry, so its sampling noise shows in the radius test (150 photons per cell gave
    # p from 5e-5 to 0.4 over seeds, 400 gives 0.1 to 0.6).
    return calibrate(SCANNER, DIGITIZER, photons_per_cell=400, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("material", ["air", "water"])
def test_trues_match_the_monte_carlo_in_number_and_distribution(material, response):
    """A 15 mm sphere of activity (in air: detection only; in a water cube: attenuation
    too), 1.2e6 decays each, drawn by thinning and by counted lines: the trues per decay
    within 2 % (or 3 Poisson sigma) of the embedded engine's trues, and the distributions
    of ring difference, axial position, transaxial separation, view, energy, time
    difference and interaction radius consistent by chi-square and Kolmogorov-Smirnov tests
    at p > 0.001 (seeded: deterministic)."""
    phantom = sphere(15.0, material=material)
    decays = 1.2e6
    engine = FastEngine(phantom, SCANNER, DIGITIZER, SorterSettings(),
                        EngineSettings(chunk_decays=200_000))
    mc = engine.run(decays / 0.5, 0.5, 1e12, seed=5, workers=2)
    trues = mc.prompts["kind"] == 0
    measured = trues.sum() / mc.primaries
    sigma = np.sqrt(trues.sum()) / mc.primaries
    b = features({k: v[trues] for k, v in mc.prompts.items()})
    for stat in (_draw(phantom, response, decays, seed=3),
                 _draw_lines(phantom, response, decays, seed=3)):
        per_decay = stat["crystal1"].size / decays
        assert abs(per_decay - measured) < max(0.02 * measured, 3 * sigma), (per_decay,
                                                                              measured)
        a = features(stat)
        for name in ("ring_difference", "ring_sum", "separation", "view"):
            lo = min(a[name].min(), b[name].min())
            ha = np.bincount(a[name] - lo)
            hb = np.bincount(b[name] - lo, minlength=ha.size)
            ha = np.pad(ha, (0, hb.size - ha.size))
            used = (ha + hb) >= 20
            p = scipy.stats.chi2_contingency(np.stack([ha[used], hb[used]]))[1]
            assert p > 1e-3, (name, p)
        for name in ("time_difference", "radius"):  # times blurred anew, as energies
            p = scipy.stats.ks_2samp(a[name], b[name]).pvalue
            assert p > 1e-3, (name, p)
        # Energies: the calibration's deposits, blurred anew within the window.
        p = scipy.stats.ks_2samp(a["energy"], b["energy"]).pvalue
        assert p > 1e-3, ("energy", p)


def _draw_lines(phantom, response, decays: float, seed: int):
    """Trues counted per line (:mod:`.line_trues`), the whole frame in one slice."""
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, response.scanner)
    frame = Frame(decays, 1.0, 1e12, 1)
    counted = LineTrues.draw(detected_per_decay(expected, response), frame, seed)
    return draw_line_trues(counted, slice(None), expected,
                           ActivityLookup(phantom.activity, phantom.voxel_size_mm,
                                          phantom.origin_mm),
                           response, 0.5, 2, 0.0, 0, seed + 1)


def test_a_line_is_drawn_only_where_its_tube_holds_activity():
    """Lines counted on a shell: the drawn annihilation points lie in active voxels,
    and the count per line follows the rates (the total within 3 Poisson sigma of the
    expectation, with perfect detection)."""
    phantom = sphere(12.0)
    inner = sphere(8.0)
    phantom.activity[inner.activity > 0] = 0  # a shell 8-12 mm
    phantom.mu511_per_mm[:] = 0
    response = _perfect_response()
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    rates = detected_per_decay(expected, response)
    decays = 300_000
    counted = LineTrues.draw(rates, Frame(decays, 1.0, 1e12, 1), seed=2)
    mean = decays * rates.sum()
    assert abs(counted.line.size - mean) < 3 * np.sqrt(mean)
    assert np.all(np.diff(counted.time_s) >= 0)
    lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
    out = draw_line_trues(counted, slice(None), expected, lookup, response, 0.0, 0, 0.0, 0, 3)
    assert out["annihilation_mm"].shape[0] > 0.99 * counted.line.size
    # (float32 points on a voxel's face may round into the empty neighbour)
    assert np.mean(lookup(out["annihilation_mm"].astype(float)) == 0) < 1e-4


@pytest.mark.slow
def test_expected_detected_trues_per_decay_match_each_photons_own_detection(response):
    """The lines' expected pairs times both photons' detection probability at the central
    line, summed, against the exact thinning: candidates drawn from the envelopes, kept by
    the activity, each photon (acolinear, at its own entry point and angles) detected with
    its own probability (2 million candidates; a 12 mm sphere in air and in water;
    the module's calibrated response): within 3 sigma and 0.5 %."""
    sigma_rad = np.radians(0.5) / FWHM_PER_SIGMA
    for material in ("air", "water"):
        phantom = sphere(12.0, material=material)
        expected = expected_trues(phantom.activity, phantom.mu511_per_mm,
                                  phantom.voxel_size_mm, phantom.origin_mm, SCANNER)
        lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
        cumulative = np.cumsum(expected.envelope)
        cumulative /= cumulative[-1]
        rng = np.random.default_rng(7)
        n = 2_000_000
        e1, e2, x, kept, _ = candidates(expected, cumulative, lookup, SCANNER, n, rng)
        both = np.ones(kept.sum())
        for end, acolinear in ((e1, False), (e2, True)):
            d = end[kept] - x[kept]
            d /= np.linalg.norm(d, axis=1)[:, None]
            if acolinear:
                dx, dy = rng.normal(0.0, sigma_rad, (2, d.shape[0]))
                d = rotate_directions(d, np.cos(np.hypot(dx, dy)), np.arctan2(dy, dx))
            both *= response.probability(fold(SCANNER, response.bins,
                                              ring_entry(SCANNER, x[kept], d)))
        per_candidate = expected.envelope.sum() / n
        reference = both.sum() * per_candidate
        sigma = np.sqrt(np.sum(both**2)) * per_candidate
        got = detected_per_decay(expected, response).sum()
        assert abs(got - reference) < 3 * sigma + 0.005 * reference, (material, got,
                                                                         reference)


def test_lines_beside_a_hot_thin_rod_still_find_their_axes(monkeypatch):
    """A warm cylinder (radius 12 mm) holding a rod 200 times hotter (radius 1.5 mm, off
    the axis): lines grazing the cylinder or the rod keep a candidate once in a few hundred
    to a few thousand, and 100 rounds lost over 1 % of the coincidences. With the
    escalation, over 99.8 % get an axis, and the share whose annihilation lies in the rod is
    the rod's share of the expected trues (within 4 binomial sigma)."""
    shape = (20, 40, 40)
    zz, yy, xx = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    rod = (xx - 6.0) ** 2 + yy**2 < 1.5**2
    activity = np.where(xx**2 + yy**2 < 12.0**2, 1.0, 0.0)
    activity[rod] = 200.0
    phantom = phantom_data(np.full(shape, "air"), activity)
    response = _perfect_response()
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    rates = detected_per_decay(expected, response)
    counted = LineTrues.draw(rates, Frame(2e5, 1.0, 1e12, 1), seed=4)
    lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
    _, _, _, found = axes_of_lines(expected, lookup, SCANNER, counted.line,
                                   np.random.default_rng(5))
    monkeypatch.setattr(events, "ESCALATION", ())
    _, _, _, found_rounds_only = axes_of_lines(expected, lookup, SCANNER, counted.line,
                                               np.random.default_rng(5))
    assert found_rounds_only.mean() < 0.99  # the case the escalation is for
    assert found.mean() > 0.998, found.mean()
    # The rod's share: its expected trues over all, from the rod alone.
    only_rod = expected_trues(np.where(rod, activity, 0.0), phantom.mu511_per_mm,
                              phantom.voxel_size_mm, phantom.origin_mm, SCANNER)
    share = (detected_per_decay(only_rod, response).sum() * activity[rod].sum()
             / (rates.sum() * activity.sum()))
    monkeypatch.undo()
    out = draw_line_trues(counted, slice(None), expected, lookup, response, 0.0, 0, 0.0, 0, 6)
    points = out["annihilation_mm"].astype(float)
    in_rod = lookup(points) > 100
    n = in_rod.size
    assert abs(in_rod.mean() - share) < 4 * np.sqrt(share * (1 - share) / n), (in_rod.mean(),
                                                                                 share)
