"""Entry geometry and the Monte Carlo-calibrated detector response, against references
computed here: the scanner's own crystal lookup, LYSO's stopping power from xraylib, and
the mirror symmetries of the ring checked on photons sent from both sides."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xraylib

from sim.engines.statistical.entry import (
    direction_from_angles,
    ring_entry,
    virtual_ring,
    virtual_ring_z_mm,
)
from sim.engines.statistical.response import (
    ResponseBins,
    axial_classes,
    calibrate,
    calibration_photons,
    fold,
    ring_transport,
    send_photons,
)
from tests.sim.engines.statistical.helpers import DIGITIZER, SCANNER


def _lines(n: int, rng: np.random.Generator, radius_mm: float = 60.0):
    """Lines from points in a cylinder of the bore, isotropic directions within 60 degrees
    of the transaxial plane."""
    r = radius_mm * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    start = np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(-100, 100, n)], axis=1)
    cos_t = rng.uniform(-0.85, 0.85, n)
    psi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - cos_t**2)
    return start, np.stack([s * np.cos(psi), s * np.sin(psi), cos_t], axis=1)


def test_the_entry_crystal_is_the_one_the_line_reaches_under_the_face():
    rng = np.random.default_rng(1)
    start, direction = _lines(20000, rng)
    entry = ring_entry(SCANNER, start, direction)
    # The entry point lies on the polygon of front faces (the apothem along its normal) and
    # the line has not met another face before: it is inside every other face's half-space.
    angles = SCANNER.module_angles_rad
    normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    height = entry.point_mm[:, :2] @ normals.T
    rows = np.arange(len(start))
    np.testing.assert_allclose(height[rows, entry.module], SCANNER.inner_radius_mm, atol=1e-9)
    assert np.all(height <= SCANNER.inner_radius_mm + 1e-9)
    # Just past the face the scanner's own lookup finds the entry crystal, wherever the
    # point is inside a crystal (not in a gap, not past the ends).
    inside = SCANNER.crystal_id_at(entry.point_mm + 1e-6 * direction)
    hit = inside >= 0
    assert hit.mean() > 0.5
    ring, index = SCANNER.ring_and_index(inside[hit])
    assert np.array_equal(index, entry.index(SCANNER)[hit])
    assert np.array_equal(ring, entry.ring[hit])
    # Angles: the direction rebuilt from them is the line's.
    again = direction_from_angles(SCANNER, entry.module, entry.alpha_rad, entry.beta_rad)
    np.testing.assert_allclose(again, direction, atol=1e-12)


def test_the_entry_face_is_the_nearest_face_ahead_even_for_grazing_lines():
    """Against the search over every face: lines from near the faces and the corners,
    heading along them (the exit is then in a corner, one face or the other) or anywhere."""
    rng = np.random.default_rng(7)
    n = 40000
    angles = SCANNER.module_angles_rad
    normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    corner_r = SCANNER.inner_radius_mm / np.cos(np.pi / SCANNER.modules_per_ring)
    # Start points just inside the polygon (up to 3 mm in from a corner or a face).
    phi = rng.uniform(0, 2 * np.pi, n)
    r = np.where(rng.random(n) < 0.5, corner_r, SCANNER.inner_radius_mm) - rng.uniform(
        0.5, 3.0, n)
    start = np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(-50, 50, n)], axis=1)
    inside = np.all(start[:, :2] @ normals.T < SCANNER.inner_radius_mm, axis=1)
    start = start[inside]
    # Directions near the tangent of the start's circle (grazing) or anywhere.
    psi = phi[inside] + np.pi / 2 + np.where(rng.random(inside.sum()) < 0.7,
                                            rng.normal(0, 0.05, inside.sum()),
                                            rng.uniform(0, 2 * np.pi, inside.sum()))
    tilt = rng.uniform(-0.5, 0.5, psi.size)
    direction = np.stack([np.cos(tilt) * np.cos(psi), np.cos(tilt) * np.sin(psi),
                          np.sin(tilt)], axis=1)
    entry = ring_entry(SCANNER, start, direction)
    towards = direction[:, :2] @ normals.T
    t = np.where(towards > 1e-12, (SCANNER.inner_radius_mm - start[:, :2] @ normals.T)
                 / np.where(towards > 1e-12, towards, 1.0), np.inf)
    np.testing.assert_array_equal(entry.module, np.argmin(t, axis=1))
    np.testing.assert_allclose(entry.distance_mm, t.min(axis=1), rtol=1e-12, atol=1e-9)


def test_virtual_rings_continue_past_the_ends():
    pitch, half = SCANNER.axial_pitch_mm, SCANNER.axial_length_mm / 2
    z = np.array([-half - 1.5 * pitch, -half - 0.5 * pitch, -half + 0.5 * pitch,
                  half - 0.5 * pitch, half + 0.5 * pitch])
    assert virtual_ring(SCANNER, z).tolist() == [-2, -1, 0, SCANNER.rings - 1, SCANNER.rings]
    assert np.array_equal(virtual_ring(SCANNER, SCANNER.ring_z_mm), np.arange(SCANNER.rings))
    rings = np.arange(-2, SCANNER.rings + 2)
    assert np.array_equal(virtual_ring(SCANNER, virtual_ring_z_mm(SCANNER, rings)), rings)


@pytest.fixture(scope="module")
def response():
    return calibrate(SCANNER, DIGITIZER, photons_per_cell=24, seed=3)


def test_normal_incidence_is_detected_as_lyso_stops_it(response):
    """At normal incidence on a middle crystal the detection probability lies between the
    photoelectric share of first interactions and the probability of interacting at all in
    20 mm of LYSO (Lu1.8Y0.2SiO5, 7.1 g/cm3, from xraylib)."""
    mu = xraylib.CS_Total_CP("Lu1.8Y0.2SiO5", 511.0) * 7.1 / 10.0
    photo = xraylib.CS_Photo_CP("Lu1.8Y0.2SiO5", 511.0) * 7.1 / 10.0
    interact = 1.0 - np.exp(-mu * SCANNER.crystal_depth_mm)
    rng = np.random.default_rng(5)
    n = 40000
    module = rng.integers(SCANNER.modules_per_ring, size=n)
    tau = rng.uniform(-6.0, 6.0, n)  # the module's middle columns
    z = rng.uniform(-60.0, 60.0, n)
    from sim.engines.statistical.entry import face_point_mm

    direction = direction_from_angles(SCANNER, module, np.zeros(n), np.zeros(n))
    start = face_point_mm(SCANNER, module, tau, z) - 30.0 * direction
    entry = ring_entry(SCANNER, start, direction)
    p = response.probability(fold(SCANNER, response.bins, entry)).mean()
    assert photo / mu * interact < p < interact, (photo / mu * interact, p, interact)


def test_the_mirrors_fold_alike_photons_onto_one_cell():
    """Photons with alpha < 0 and with alpha > 0, from the lower and the upper half of the
    scanner, each sent and folded on their own, give the same detection probability per
    (column, alpha) class and the same distribution of column and ring offsets: a wrong
    mirror would fold the edge columns of one side onto the middle ones of the other."""
    bins = ResponseBins(alpha_bins=5, beta_bins=4)
    transport = ring_transport(SCANNER)
    rng = np.random.default_rng(11)
    start, direction = calibration_photons(SCANNER, 400_000, bins, rng)
    entry = ring_entry(SCANNER, start, direction)
    sides = {"alpha<0, lower": (entry.alpha_rad < 0) & (entry.point_mm[:, 2] < 0),
             "alpha>0, upper": (entry.alpha_rad > 0) & (entry.point_mm[:, 2] > 0)}
    stats = {}
    for name, sel in sides.items():
        cells, out = send_photons(SCANNER, DIGITIZER, bins, transport, start[sel],
                                  direction[sel], rng)
        # (column, alpha bin) of each cell: coarse classes with thousands of photons each.
        cls = cells // (axial_classes(SCANNER) * bins.alpha_bins * bins.beta_bins) * 10 + (
            cells // bins.beta_bins) % bins.alpha_bins
        det = out["cell"] // (axial_classes(SCANNER) * bins.alpha_bins * bins.beta_bins) * 10 + (
            out["cell"] // bins.beta_bins) % bins.alpha_bins
        stats[name] = (np.bincount(cls, minlength=80), np.bincount(det, minlength=80),
                       out["d_index"], out["d_ring"])
    (sent_a, det_a, di_a, dr_a), (sent_b, det_b, di_b, dr_b) = stats.values()
    used = np.flatnonzero(sent_a + sent_b)
    assert used.size == 8 * bins.alpha_bins and min(sent_a[used].min(), sent_b[used].min()) > 1000
    sent_a, det_a, sent_b, det_b = sent_a[used], det_a[used], sent_b[used], det_b[used]
    pa, pb = det_a / sent_a, det_b / sent_b
    # Chi-square of the two sides' detection probabilities over the 40 classes; and the same
    # with one side's columns taken unmirrored (u for n - 1 - u), which must be far worse:
    # the comparison can tell a wrong fold.
    def chi2(pa, sa, pb, sb):
        pooled = (pa * sa + pb * sb) / (sa + sb)
        return float(np.sum((pa - pb) ** 2 / (pooled * (1 - pooled) * (1 / sa + 1 / sb))))

    dof = used.size
    assert scipy.stats.chi2.sf(chi2(pa, sent_a, pb, sent_b), dof) > 1e-3
    wrong = np.arange(dof).reshape(8, bins.alpha_bins)[::-1].ravel()
    assert scipy.stats.chi2.sf(chi2(pa[wrong], sent_a[wrong], pb, sent_b), dof) < 1e-6
    for a, b in ((di_a, di_b), (dr_a, dr_b)):
        values = np.arange(-3, 4)
        ca = np.array([(a == v).sum() for v in values])
        cb = np.array([(b == v).sum() for v in values])
        table = np.stack([ca, cb])
        assert scipy.stats.chi2_contingency(table[:, table.min(axis=0) > 5])[1] > 1e-3


def test_drawn_outcomes_lie_in_their_crystals_and_match_the_calibration(response):
    rng = np.random.default_rng(7)
    start, direction = _lines(50000, rng)
    entry = ring_entry(SCANNER, start, direction)
    folded = fold(SCANNER, response.bins, entry)
    p = response.probability(folded)
    detected = rng.random(p.size) < p
    sub = entry.subset(detected)
    out = response.draw(folded.subset(detected), sub, rng)
    # Every drawn interaction point is inside the crystal drawn with it (the frames and the
    # mirrors put it back where the Monte Carlo had it).
    shrink = out["pos_mm"].astype(float)
    centre = SCANNER.crystal_centres_mm(out["crystal"])
    looked_up = SCANNER.crystal_id_at(centre + 0.999 * (shrink - centre))
    assert np.mean(looked_up == out["crystal"]) > 0.999
    # Energies are in the window, and most photons are seen in the entry crystal or the next.
    assert out["energy_kev"].min() >= 350.0 and out["energy_kev"].max() <= 650.0
    _, index = SCANNER.ring_and_index(out["crystal"])
    step = np.abs((index - sub.index(SCANNER) + 92) % 184 - 92)
    assert np.mean(step <= 1) > 0.6
