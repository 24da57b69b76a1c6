"""LOR geometry: mean depth of interaction, end points and the ring sinogram, against a
numerical integral, the scanner's own crystal axes and an ideal ring computed here."""

from __future__ import annotations

import numpy as np
import pytest

from recon.geometry import RingSinogram, lor_endpoints_mm, mean_interaction_depth_mm
from sim.scanner.geometry import Scanner


def test_mean_depth_against_numerical_integral():
    mu, depth = 0.0818, 20.0  # LYSO at 511 keV, 1/mm; crystal depth, mm
    x = np.linspace(0.0, depth, 200_001)
    pdf = mu * np.exp(-mu * x)
    expected = np.trapezoid(x * pdf, x) / np.trapezoid(pdf, x)
    assert mean_interaction_depth_mm(mu, depth) == pytest.approx(expected, rel=1e-8)
    assert mean_interaction_depth_mm(1e-6, depth) == pytest.approx(depth / 2, rel=1e-4)


def test_endpoints_lie_on_the_crystal_axis_at_the_depth():
    scanner = Scanner()
    ids = np.array([0, 183, 5000, 11775])
    p, _ = lor_endpoints_mm(scanner, ids, ids, doi_mm=7.0)
    frames = scanner.crystal_frames(ids)
    centre = scanner.crystal_centres_mm(ids)
    # 7 mm below the front face = 3 mm in front of the centre along the outward normal.
    np.testing.assert_allclose(p, centre - 3.0 * frames[:, 0, :], atol=1e-9)


def test_every_pair_has_one_bin_and_each_view_one_empty_bin():
    sino = RingSinogram(184)
    a, b = sino.pairs()
    assert sino.shape == (92, 184)
    valid = a >= 0
    assert valid.sum() == 184 * 183 // 2 == 92 * 183
    assert (valid.sum(axis=1) == 183).all()
    assert (~valid[:, 0]).all() and valid[:, 1:].all()  # bin 0 is the empty one
    view, radial = sino.bins(b[valid], a[valid])  # order of the crystals does not matter
    np.testing.assert_array_equal(view, np.nonzero(valid)[0])
    np.testing.assert_array_equal(radial, np.nonzero(valid)[1])


def test_bins_order_lors_by_signed_distance_on_an_ideal_ring():
    """On a ring of N points at angles 2 pi k / N, the LORs of a view, taken in radial
    order, have increasing signed distance along that view's normal, and (almost) share
    its direction."""
    n, radius = 184, 100.0
    sino = RingSinogram(n)
    a, b = sino.pairs()
    angles = 2 * np.pi * np.arange(n) / n
    points = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    for view in range(sino.shape[0]):
        ok = a[view] >= 0
        pa, pb = points[a[view, ok]], points[b[view, ok]]
        normal_angle = np.pi * (2 * view + 0.25) / n
        normal = np.array([np.cos(normal_angle), np.sin(normal_angle)])
        direction = (pb - pa) / np.linalg.norm(pb - pa, axis=1)[:, None]
        assert np.abs(direction @ normal).max() < np.sin(np.pi / n) + 1e-12
        distance = (pa + pb) / 2 @ normal  # signed offset of the chord's midpoint
        assert (np.diff(distance) > 0).all()


def test_bad_indices_are_refused():
    sino = RingSinogram(184)
    with pytest.raises(ValueError, match="two different crystals"):
        sino.bins([3], [3])
    with pytest.raises(ValueError, match="out of range"):
        sino.bins([0], [184])
    with pytest.raises(ValueError, match="even number"):
        RingSinogram(183)
