"""Expected trues per line before detection, against the event drawing's candidates (which
make the tube average exactly by sampling), and the tube's cross-section against lines
drawn here."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engines.statistical.events import ActivityLookup, candidates
from sim.engines.statistical.expectation import line_expectations, tube_kernel
from sim.engines.statistical.trues import expected_trues
from tests.sim.engines.statistical.helpers import SCANNER, sphere


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
    per_decay = line_expectations(expected, phantom.activity, phantom.mu511_per_mm,
                                  phantom.voxel_size_mm, phantom.origin_mm, SCANNER)
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


@pytest.mark.slow
def test_expected_detected_trues_per_decay_match_the_drawn_trues():
    """The lines' expected pairs times both photons' detection probability at the central
    line, summed: the trues per decay the event drawing gives (2 million decays, a 12 mm
    sphere in air and in water, calibrated response), within 3 Poisson sigma and 0.5 %."""
    from sim.engines.embedded.source import Frame
    from sim.engines.statistical.events import draw_trues
    from sim.engines.statistical.expectation import detection_probabilities
    from sim.engines.statistical.response import calibrate
    from tests.sim.engines.statistical.helpers import DIGITIZER

    response = calibrate(SCANNER, DIGITIZER, photons_per_cell=150, seed=1)
    decays = 2e6
    for material in ("air", "water"):
        phantom = sphere(12.0, material=material)
        expected = expected_trues(phantom.activity, phantom.mu511_per_mm,
                                  phantom.voxel_size_mm, phantom.origin_mm, SCANNER)
        per_decay = (line_expectations(expected, phantom.activity, phantom.mu511_per_mm,
                                       phantom.voxel_size_mm, phantom.origin_mm, SCANNER)
                     * detection_probabilities(expected, response)).sum()
        lookup = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
        # No sector cut: the expectation counts every detected pair.
        drawn = sum(c["kind"].size for c in draw_trues(
            expected, lookup, response, Frame(decays, 1.0, 1e12, 1), 0.5, 0, seed=3))
        assert abs(drawn - decays * per_decay) < 3 * np.sqrt(drawn) + 0.005 * drawn, material
