"""Expected trues per line before detection against the envelopes' candidates (which make
the tube average exactly by sampling), on spheres and on a rod thinner than a cell; the
tube's axial cross-section against lines drawn here;
the central lines' cells against traced rays; the per-track detection tables against the
response's own interpolation. (After detection, against each photon's own detection:
test_trues.py, which shares its calibrated response.)"""

from __future__ import annotations

import numpy as np
import pytest

from sim.engines.statistical.entry import ring_entry, virtual_ring_z_mm
from sim.engines.statistical.events import ActivityLookup, candidates
from sim.engines.statistical.expectation import (
    central_folds,
    detection_probabilities,
)
from sim.engines.statistical.projection import face_centres_xy
from sim.engines.statistical.response import calibrate, fold
from sim.engines.statistical.trues import (
    ExpectedTrues,
    expected_trues,
    tube_kernel,
)
from tests.sim.engines.statistical.helpers import DIGITIZER, SCANNER, phantom_data, sphere


@pytest.mark.parametrize("width_mm, voxel_mm", [(4.0, 1.0), (4.0, 2.0), (4.0, 0.7)])
def test_the_tube_cross_section_is_the_offset_of_two_uniform_ends(width_mm, voxel_mm):
    """Against 4 million lines drawn here: ends uniform over the cell, offset half-way
    histogrammed on the voxels (each bin within 4 binomial sigma)."""
    kernel = tube_kernel(width_mm, voxel_mm)
    n = (kernel.size - 1) // 2
    assert kernel.sum() == pytest.approx(1.0) and np.allclose(kernel, kernel[::-1])
    rng = np.random.default_rng(5)
    draws = 4_000_000
    p, q = (rng.uniform(-width_mm / 2, width_mm / 2, draws) for _ in range(2))
    edges = (np.arange(-n, n + 2) - 0.5) * voxel_mm
    frequency = np.histogram((p + q) / 2, bins=edges)[0] / draws
    sigma = np.sqrt(kernel * (1 - kernel) / draws)
    assert np.all(np.abs(frequency - kernel) <= 4 * sigma + 1e-12), (frequency, kernel)


def test_empty_planes_around_the_activity_change_no_line():
    """A rod filling a short grid from one axial face to the other (1 mm planes), and the
    same rod with five empty planes added at each end: the lines are the same ones, each
    with the same expected pairs (the tube's axial blur carries an end plane's activity
    beyond the grid; cut off at the grid's faces, the short rod lost 3 % of its pairs)."""
    lines = []
    for empty in (0, 5):
        shape = (20 + 2 * empty, 24, 40)
        zz, yy, xx = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
        activity = (((xx - 8.0) ** 2 + yy**2 < 1.6**2) & (np.abs(zz) < 10)).astype(float)
        phantom = phantom_data(np.full(shape, "air"), activity)
        e = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                           phantom.origin_mm, SCANNER)
        key = ((e.tracks.i[e.track].astype(np.int64) * SCANNER.crystals_per_ring
                + e.tracks.j[e.track]) * 1000 + (e.ring1 + 100)) * 1000 + e.ring2 + 100
        order = np.argsort(key)
        lines.append((key[order], e.pairs[order]))
    (key0, pairs0), (key5, pairs5) = lines
    np.testing.assert_array_equal(key0, key5)
    # float32 transforms of different lengths: a few 1e-4 apart
    np.testing.assert_allclose(pairs0, pairs5, rtol=1e-3, atol=1e-6 * pairs5.max())
    assert abs(pairs0.sum() / pairs5.sum() - 1) < 1e-4


@pytest.mark.slow
def test_tube_averages_of_a_thin_off_axis_rod_match_the_drawn_candidates():
    """A rod of 3.2 mm diameter, 45 mm off the axis, on a 2 mm grid (thinner than a crystal
    cell, the case a blurred density spreads): 8 million candidates drawn from the
    envelopes and kept by the activity give each line's pairs exactly. Grouped by the
    distance of the line's track from the rod (1 mm bins), every group holding over 1 %
    of the counts within 1 % and 4 Poisson sigma of them, the total within 0.5 %. (The
    density blurred by the tube's cross-section, read on the voxel grid, missed the total
    by 1.7 % here.)"""
    shape = (50, 60, 60)  # 100 mm long: the transaxial average is what is checked
    zz, yy, xx = np.meshgrid(*[(np.arange(s) - (s - 1) / 2) * 2.0 for s in shape],
                             indexing="ij")
    activity = ((xx - 45.0) ** 2 + yy**2 < 1.6**2).astype(float)
    phantom = phantom_data(np.full(shape, "air"), activity, voxel_size_mm=(2.0, 2.0, 2.0))
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
    cumulative = np.cumsum(expected.envelope)
    cumulative /= cumulative[-1]
    rng = np.random.default_rng(3)
    n = 8_000_000
    observed = np.zeros(expected.track.size)
    for _ in range(4):
        *_, kept, line = candidates(expected, cumulative, lookup, SCANNER, n // 4, rng)
        observed += np.bincount(line[kept], minlength=expected.track.size)
    mean = n * expected.pairs / expected.envelope.sum()
    assert abs(mean.sum() / observed.sum() - 1) < 0.005
    tracks = expected.tracks
    d = tracks.end_xy - tracks.start_xy
    distance = ((tracks.start_xy[:, 0] - 45.0) * d[:, 1] - tracks.start_xy[:, 1] * d[:, 0]
                ) / np.linalg.norm(d, axis=1)
    group = np.round(distance[expected.track]).astype(int)
    group -= group.min()
    o = np.bincount(group, weights=observed)
    e = np.bincount(group, weights=mean)
    big = o > 0.01 * o.sum()
    assert big.sum() >= 6
    assert np.all(np.abs(e[big] - o[big]) <= 4 * np.sqrt(o[big]) + 0.01 * o[big]), (
        o[big], e[big] / o[big])


@pytest.mark.slow
@pytest.mark.parametrize("material", ["air", "water"])
def test_expected_trues_per_line_match_the_drawn_candidates(material):
    """A 12 mm sphere (in air; in a water cube): 4 million candidates drawn from the lines'
    envelopes, kept by the activity at their points, estimate each line's expected pairs
    per decay without approximation. Their total within 3 Poisson sigma and 0.3 %; over
    lines grouped by distance from the axis (2 mm bins) and ring difference, chi-square per
    group below 2 (the tube's cross-section is the one half-way along the line); inside
    8 mm, every 2 mm ring within 1 %."""
    phantom = sphere(12.0, material=material)
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    per_decay = expected.pairs
    n = 4_000_000
    cumulative = np.cumsum(expected.envelope)
    cumulative /= cumulative[-1]
    lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
    rng = np.random.default_rng(11)
    kept_lines = []
    for _ in range(4):
        *_, kept, line = candidates(expected, cumulative, lookup, SCANNER, n // 4, rng)
        kept_lines.append(line[kept])
    observed = np.bincount(np.concatenate(kept_lines), minlength=expected.track.size)
    mean = n * per_decay / expected.envelope.sum()  # candidates per envelope unit
    total = observed.sum()
    assert abs(total - mean.sum()) < 3 * np.sqrt(total) + 0.003 * total
    tracks = expected.tracks
    d = tracks.end_xy - tracks.start_xy
    radius = np.abs(tracks.start_xy[:, 0] * d[:, 1] - tracks.start_xy[:, 1] * d[:, 0]) \
        / np.linalg.norm(d, axis=1)
    ring = np.minimum((radius[expected.track] / 2).astype(int), 20)
    difference = np.minimum(np.abs(expected.ring1.astype(int) - expected.ring2), 69)
    group = ring * 70 + difference
    o = np.bincount(group, weights=observed)
    e = np.bincount(group, weights=mean)
    used = e > 200
    assert used.sum() > 300
    assert np.mean((o[used] - e[used]) ** 2 / e[used]) < 2.0
    by_ring = np.bincount(ring, weights=observed)[:4] / np.bincount(ring, weights=mean)[:4]
    np.testing.assert_allclose(by_ring, 1.0, atol=0.01)


def test_central_lines_fold_onto_the_cells_a_traced_ray_gives():
    """The central lines' cells and angles (no tracing) against :func:`.entry.ring_entry`
    of each line from its middle, both ways, folded: equal cells and mirrors, angles within
    1e-9 of a bin."""
    phantom = sphere(12.0)
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    response = calibrate(SCANNER, DIGITIZER, photons_per_cell=10, seed=2)
    lines = np.random.default_rng(3).choice(expected.track.size, 20_000, replace=False)
    centres = face_centres_xy(SCANNER)
    track = expected.track[lines]
    ends = [np.concatenate([centres[c], virtual_ring_z_mm(SCANNER, r)[:, None]], axis=1)
            for c, r in ((expected.tracks.i[track], expected.ring1[lines]),
                         (expected.tracks.j[track], expected.ring2[lines]))]
    middle = (ends[0] + ends[1]) / 2
    d = ends[1] - ends[0]
    d /= np.linalg.norm(d, axis=1)[:, None]
    subset = ExpectedTrues(expected.tracks, expected.track[lines], expected.ring1[lines],
                           expected.ring2[lines], expected.envelope[lines],
                           expected.pairs[lines], expected.density_max, expected.track_lo,
                           expected.track_hi, expected.z_lo_mm, expected.z_hi_mm)
    for folded, direction in zip(central_folds(subset, response, slice(None)), (-d, d),
                                 strict=True):
        traced = fold(SCANNER, response.bins, ring_entry(SCANNER, middle, direction))
        for name in ("cell", "base", "flip_t", "flip_z"):
            np.testing.assert_array_equal(getattr(folded, name), getattr(traced, name), name)
        for name in ("alpha_x", "beta_x"):
            np.testing.assert_allclose(getattr(folded, name), getattr(traced, name),
                                       atol=1e-9)


def test_line_probabilities_per_track_table_equal_the_photons_interpolated_response():
    """The per-track tables interpolated per line against the response's own bilinear
    interpolation of both central photons' folded cells (every line of a 12 mm sphere in
    water, lines crossing the axial ends included): equal within 1e-12."""
    phantom = sphere(12.0, material="water")
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, SCANNER)
    response = calibrate(SCANNER, DIGITIZER, photons_per_cell=10, seed=4)
    one, two = central_folds(expected, response, slice(None))
    reference = response.probability(one) * response.probability(two)
    assert np.any(reference == 0) and np.any(reference > 0)
    got = detection_probabilities(expected, response, chunk_lines=100_000)
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12)
