"""Expected trues per line before detection against the envelopes' candidates (which make
the tube average exactly by sampling); the tube's cross-section against lines drawn here;
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
    disc_kernel,
    expected_trues,
    tube_kernel,
)
from tests.sim.engines.statistical.helpers import DIGITIZER, SCANNER, sphere


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


@pytest.mark.parametrize("width_mm, voxel_mm", [(4.0, 1.0), (3.2, 0.8), (4.0, 0.5)])
def test_the_disc_kernel_projects_to_the_tube_triangle_in_every_direction(width_mm,
                                                                        voxel_mm):
    """Projected on directions 0, 30 and 45 degrees, the kernel's variance is the
    triangle's, ``h^2 / 6`` (half-width ``h``), plus the voxel box's ``v^2 / 12`` (each
    weight is the kernel integrated over a voxel: the kernel convolved with the voxel,
    sampled at the voxels' centres; exact as the voxel shrinks, checked for voxels up to a
    quarter of the cell), within 4 %; symmetric, sums to one.
    A separable triangle blur along x and y would give the 45 degree projection the same
    variance but a support wider by sqrt(2): checked on the largest offset reached."""
    kernel = disc_kernel(width_mm, np.array([voxel_mm, voxel_mm]))
    assert kernel.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
    np.testing.assert_allclose(kernel, kernel.T)
    m = (kernel.shape[0] - 1) // 2
    y, x = np.meshgrid(*(np.arange(-m, m + 1) * voxel_mm,) * 2, indexing="ij")
    h = width_mm / 2
    for angle in np.radians([0.0, 30.0, 45.0]):
        offset = x * np.cos(angle) + y * np.sin(angle)
        variance = np.sum(kernel * offset**2)
        assert variance == pytest.approx(h * h / 6 + voxel_mm**2 / 12, rel=0.04)
    # No mass beyond the disc of radius h (grown by the half diagonal of a voxel).
    assert kernel[np.hypot(x, y) > h + voxel_mm / np.sqrt(2)].sum() == 0


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
