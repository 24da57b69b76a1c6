"""Source model against closed forms: decay counts and times of a decaying source, sampling
of the activity map, acolinearity width, and the F-18 positron range against the published
bi-exponential projection (Levin & Hoffman 1999)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from sim.engines.embedded.source import Frame, VoxelSource, back_to_back, positron_range_mm


def test_decay_count_and_times_follow_the_decay_law():
    half_life = 100.0  # s, short so that the decay is visible within the frame
    frame = Frame.for_chunks(1e5, 200.0, half_life, chunk_decays=400_000)
    tau = half_life / np.log(2)
    expected = 1e5 * tau * (1 - np.exp(-200.0 / tau))
    assert frame.expected_decays == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(0)
    times_s = np.concatenate([frame.sample_slice_times_ns(k, rng) for k in
                              range(frame.n_slices)]) * 1e-9
    assert abs(times_s.size - expected) < 4 * np.sqrt(expected)
    assert np.all(np.diff(times_s) >= 0) and times_s.max() <= 200.0
    # Times follow exp(-t / tau) truncated to the frame (Kolmogorov-Smirnov).
    cdf = lambda t: (1 - np.exp(-t / tau)) / (1 - np.exp(-200.0 / tau))  # noqa: E731
    assert stats.kstest(times_s, cdf).pvalue > 1e-3


def test_positions_follow_the_activity_map():
    activity = np.zeros((2, 3, 4))
    activity[0, 1, 2] = 3.0
    activity[1, 2, 0] = 1.0
    source = VoxelSource.from_activity(activity, np.array([2.0, 1.0, 1.0]),
                                       np.array([-1.0, -1.0, -1.5]))
    pts = source.sample_points_mm(40_000, np.random.default_rng(1))  # (x, y, z)
    # Voxel (z=0, y=1, x=2): centre (x, y, z) = (0.5, 0, -1); 3/4 of the decays.
    in_first = np.all(np.abs(pts - [0.5, 0.0, -1.0]) <= [0.5, 0.5, 1.0], axis=1)
    in_second = np.all(np.abs(pts - [-1.5, 1.0, 1.0]) <= [0.5, 0.5, 1.0], axis=1)
    assert np.all(in_first | in_second)
    assert in_first.mean() == pytest.approx(0.75, abs=4 * np.sqrt(0.75 * 0.25 / 40_000))
    with pytest.raises(ValueError, match="non-negative and not all zero"):
        VoxelSource.from_activity(np.zeros((2, 2, 2)), np.ones(3), np.zeros(3))


def test_acolinearity_width():
    n = 200_000
    d1, d2 = back_to_back(n, 0.5, np.random.default_rng(2))
    np.testing.assert_allclose(np.linalg.norm(d2, axis=1), 1.0, atol=1e-12)
    deviation = d2 + d1  # small vector perpendicular to d1, length ~ the angle
    # The component along a fixed perpendicular direction is Gaussian with FWHM 0.5 degree.
    e = np.cross(d1, [0.0, 0.0, 1.0])
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    angle_deg = np.degrees(np.sum(deviation * e, axis=1))
    assert 2.3548 * angle_deg.std() == pytest.approx(0.5, rel=0.01)
    same = back_to_back(10, 0.0, np.random.default_rng(3))
    np.testing.assert_array_equal(same[0], -same[1])


def test_positron_range_projection_is_the_published_biexponential():
    c, k1, k2 = 0.516, 37.9, 3.10  # Levin & Hoffman (1999), F-18 in water, 1/mm
    x = positron_range_mm(400_000, np.random.default_rng(4))[:, 0]
    edges = np.linspace(-2.0, 2.0, 41)
    observed, _ = np.histogram(x, edges)

    def p(t):
        return c * np.exp(-k1 * abs(t)) + (1 - c) * np.exp(-k2 * abs(t))

    norm = 2 * (c / k1 + (1 - c) / k2)  # area of the bi-exponential
    expected = np.array([integrate.quad(p, a, b)[0]
                         for a, b in zip(edges[:-1], edges[1:], strict=True)]) / norm
    expected *= x.size
    inside = observed.sum()
    chi2, p_value = stats.chisquare(observed, expected * inside / expected.sum())
    assert p_value > 1e-3, chi2
