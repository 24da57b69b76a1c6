"""Embedded-engine physics: cross-section tables and Klein-Nishina sampling against references
written here (xraylib called directly; the analytic Klein-Nishina formula integrated)."""

from __future__ import annotations

import numpy as np
import pytest
import xraylib
from scipy import integrate, stats

from sim.engines.embedded.physics import ELECTRON_MASS_KEV, sample_klein_nishina


def _edge_kev(z: int, shell: int) -> float:
    try:
        return xraylib.EdgeEnergy(z, shell)
    except ValueError:  # light elements have no such shell
        return 0.0


def test_engine_tables_match_xraylib_away_from_absorption_edges():
    """The engine's per-process mu (grid lookup + linear interpolation) against xraylib called
    here directly, at random energies; the one grid bin holding an edge is excluded."""
    from sim.engines.embedded.transport import MaterialTables

    tables = MaterialTables.build(("water", "aluminium", "lyso"))
    rng = np.random.default_rng(0)
    energies = rng.uniform(5.0, 515.0, 300)
    edges = [_edge_kev(z, shell) for z in (1, 8, 13, 71, 39, 14)
             for shell in (xraylib.K_SHELL, xraylib.L1_SHELL, xraylib.L2_SHELL, xraylib.L3_SHELL)]
    energies = energies[[min(abs(np.log(e / k)) for k in edges if k > 0) > 0.005
                         for e in energies]]
    i, w = tables.grid.locate(energies)
    for formula, density, name in (("H2O", 1.0, "water"), ("Al", 2.699, "aluminium"),
                                   ("Lu1.8Y0.2SiO5", 7.1, "lyso")):
        mu = tables.mu3(tables.row(name), i, w)
        for col, fn in enumerate((xraylib.CS_Rayl_CP, xraylib.CS_Compt_CP, xraylib.CS_Photo_CP)):
            ref = np.array([fn(formula, float(e)) * density / 10 for e in energies])
            np.testing.assert_allclose(mu[:, col], ref, rtol=1e-3)


def _kn_pdf_cos(cos_t: np.ndarray, energy_kev: float) -> np.ndarray:
    """Klein-Nishina d(sigma)/d(cos theta), unnormalised: P^2 (P + 1/P - sin^2 theta)."""
    p = 1.0 / (1.0 + energy_kev / ELECTRON_MASS_KEV * (1.0 - cos_t))
    return p * p * (p + 1.0 / p - (1.0 - cos_t * cos_t))


@pytest.mark.parametrize("energy_kev", [511.0, 200.0])
def test_klein_nishina_angles_goodness_of_fit(energy_kev):
    n = 200_000
    cos_t, e_out = sample_klein_nishina(np.full(n, energy_kev), np.random.default_rng(42))
    edges = np.linspace(-1.0, 1.0, 41)
    observed, _ = np.histogram(cos_t, edges)
    total, _ = integrate.quad(_kn_pdf_cos, -1, 1, args=(energy_kev,))
    expected = np.array([integrate.quad(_kn_pdf_cos, a, b, args=(energy_kev,))[0]
                         for a, b in zip(edges[:-1], edges[1:], strict=True)]) / total * n
    chi2, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3, f"chi2 {chi2:.1f} over 39 dof"
    # Compton kinematics: E' = E / (1 + k (1 - cos theta)).
    np.testing.assert_allclose(
        e_out, energy_kev / (1 + energy_kev / ELECTRON_MASS_KEV * (1 - cos_t)), rtol=1e-10)
    assert e_out.min() >= energy_kev / (1 + 2 * energy_kev / ELECTRON_MASS_KEV) - 1e-9


def test_klein_nishina_energy_distribution_and_seed():
    """Mean scattered energy at 511 keV from the analytic distribution, and reproducibility."""
    n = 200_000
    _, e_out = sample_klein_nishina(np.full(n, 511.0), np.random.default_rng(3))
    total, _ = integrate.quad(_kn_pdf_cos, -1, 1, args=(511.0,))
    mean_e, _ = integrate.quad(
        lambda c: _kn_pdf_cos(c, 511.0) * 511.0 / (1 + 511.0 / ELECTRON_MASS_KEV * (1 - c)), -1, 1)
    standard_error = e_out.std() / np.sqrt(n)
    assert e_out.mean() == pytest.approx(mean_e / total, abs=4 * standard_error)
    again = sample_klein_nishina(np.full(1000, 511.0), np.random.default_rng(3))[1]
    np.testing.assert_array_equal(again, sample_klein_nishina(np.full(1000, 511.0),
                                                              np.random.default_rng(3))[1])


def test_rayleigh_angles_follow_thomson_times_form_factor():
    """Aluminium at 60 keV: histogram of cos(theta) against (1 + cos^2)/2 * FF(q)^2 with
    q = sin(theta/2) E / hc, FF from xraylib, integrated numerically here."""
    from sim.engines.embedded.physics import HC_KEV_ANGSTROM, RayleighSampler

    energy = 60.0
    sampler = RayleighSampler.build(("aluminium", "water"), 520.0)
    n = 200_000
    cos_t = sampler.sample(np.zeros(n, int), np.full(n, energy), np.random.default_rng(5))

    def pdf(c):
        q = np.sqrt((1 - c) / 2) * energy / HC_KEV_ANGSTROM
        return (1 + c * c) / 2 * xraylib.FF_Rayl(13, float(q)) ** 2

    edges = np.linspace(-1.0, 1.0, 41)
    observed, _ = np.histogram(cos_t, edges)
    weights = np.array([integrate.quad(pdf, a, b)[0]
                        for a, b in zip(edges[:-1], edges[1:], strict=True)])
    expected = weights / weights.sum() * n
    keep = expected > 20
    chi2, p_value = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum()
                                    / expected[keep].sum())
    assert p_value > 1e-3, f"chi2 {chi2:.1f}"
    # Forward peaking grows with energy: the mean cosine is higher at 300 keV.
    hard = sampler.sample(np.zeros(n, int), np.full(n, 300.0), np.random.default_rng(6))
    assert hard.mean() > cos_t.mean() + 0.05


def test_rotation_keeps_angle_and_unit_length():
    from sim.engines.embedded.physics import rotate_directions

    rng = np.random.default_rng(1)
    d = rng.normal(size=(5000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:3] = [[0, 0, 1], [0, 0, -1], [1, 0, 0]]  # the poles take a separate branch
    cos_t = rng.uniform(-1, 1, 5000)
    out = rotate_directions(d, cos_t, rng.uniform(0, 2 * np.pi, 5000))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(out * d, axis=1), cos_t, atol=1e-9)
    # Azimuths uniform: the mean of the turned vectors' perpendicular parts vanishes.
    perp = out - np.sum(out * d, axis=1)[:, None] * d
    assert np.abs(perp[3:, 2].mean()) < 0.03
