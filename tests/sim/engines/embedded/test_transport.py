"""Photon transport against closed forms: narrow-beam attenuation exp(-mu L) with mu taken
from xraylib directly, through uniform slabs and through a slab holding a dense insert (which
exercises the dense-box majorant); geometry helpers against brute-force checks."""

from __future__ import annotations

import numpy as np
import pytest
import xraylib

from sim.engines.embedded.transport import (
    ZONE_BORE,
    DetectorRing,
    MaterialTables,
    PhantomMedium,
    Photons,
    Transport,
    box_entry_mm,
    box_exit_mm,
    cylinder_exit_mm,
)
from sim.phantoms.materials import get_material
from sim.scanner.geometry import Scanner

XRAYLIB = {"aluminium": ("Al", 2.699), "water": ("H2O", 1.0), "steel": (None, 8.0)}


def _mu_xraylib_per_mm(name: str, energy_kev: float) -> float:
    formula, density = XRAYLIB[name]
    if name == "steel":  # SS304 by mass: Fe 0.695, Cr 0.19, Ni 0.095, Mn 0.02
        mass = sum(w * xraylib.CS_Total(z, energy_kev)
                   for z, w in ((26, 0.695), (24, 0.19), (28, 0.095), (25, 0.02)))
    else:
        mass = xraylib.CS_Total_CP(formula, energy_kev)
    return mass * density / 10.0


def _slab_transport(names_x: list[str], energy_kev: float, n: int, seed: int):
    """Pencil beam along +x through voxels of 1 mm (materials along x); returns the fraction
    leaving the far face without any interaction."""
    tables = MaterialTables.build(("air", "aluminium", "lyso", "steel", "water"))
    names = np.empty((4, 4, len(names_x)), dtype=object)
    names[...] = np.array(names_x, dtype=object)
    mu511 = np.vectorize(lambda m: get_material(m).mu511_per_mm)(names)
    origin = -(np.array(names.shape) - 1) / 2.0
    medium = PhantomMedium.build(names, mu511, np.ones(3), origin, tables)
    transport = Transport(tables, medium, DetectorRing.build(Scanner(), tables), 1.0)
    start = np.tile([medium.lo_mm[0] + 1e-9, 0.3, -0.2], (n, 1))
    photons = Photons.start(start, np.tile([1.0, 0.0, 0.0], (n, 1)), energy_kev,
                            np.arange(n), medium)
    transport.transport_phantom(photons, np.random.default_rng(seed))
    uncollided = ((photons.zone == ZONE_BORE) & (photons.n_compton == 0)
                  & (photons.n_rayleigh == 0)
                  & np.isclose(photons.pos_mm[:, 0], medium.hi_mm[0]))
    return uncollided.mean(), medium


@pytest.mark.parametrize("material,length_mm,energy_kev", [
    ("aluminium", 40, 511.0), ("water", 60, 511.0), ("aluminium", 10, 150.0),
    ("water", 30, 80.0),
])
def test_narrow_beam_transmission_through_slabs(material, length_mm, energy_kev):
    n = 200_000
    fraction, _ = _slab_transport([material] * length_mm, energy_kev, n, seed=1)
    expected = np.exp(-_mu_xraylib_per_mm(material, energy_kev) * length_mm)
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert abs(fraction - expected) < 4 * sigma, (fraction, expected)


def test_transmission_through_water_with_a_steel_insert_uses_the_dense_box():
    names = ["water"] * 30 + ["steel"] * 6 + ["water"] * 30
    n = 200_000
    fraction, medium = _slab_transport(names, 511.0, n, seed=2)
    # The steel voxels form a box of 6 of 66 columns: the dense-box majorant is active.
    assert np.isfinite(medium.dense_lo_mm).all()
    assert medium.dense_hi_mm[0] - medium.dense_lo_mm[0] == pytest.approx(6.0)
    expected = np.exp(-60 * _mu_xraylib_per_mm("water", 511.0)
                      - 6 * _mu_xraylib_per_mm("steel", 511.0))
    sigma = np.sqrt(expected * (1 - expected) / n)
    assert abs(fraction - expected) < 4 * sigma, (fraction, expected)


def test_box_and_cylinder_distances_against_marching():
    rng = np.random.default_rng(0)
    n = 2000
    lo, hi = np.array([-3.0, -2.0, -5.0]), np.array([4.0, 2.5, 1.0])
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    inside = rng.uniform(lo, hi, (n, 3))
    t = box_exit_mm(inside, d, lo, hi)
    exit_point = inside + t[:, None] * d
    # On the surface: inside within rounding, and on at least one face.
    assert np.all(exit_point >= lo - 1e-9) and np.all(exit_point <= hi + 1e-9)
    assert np.all(np.min(np.minimum(np.abs(exit_point - lo), np.abs(exit_point - hi)),
                         axis=1) < 1e-9)
    outside = rng.uniform(-20, 20, (n, 3))
    outside = outside[~np.all((outside >= lo) & (outside <= hi), axis=1)]
    d_out = d[: outside.shape[0]]
    t_in = box_entry_mm(outside, d_out, lo, hi)
    # Brute force: march in 0.005 mm steps up to 60 mm.
    s = np.arange(0, 60, 0.005)
    pts = outside[:, None, :] + s[None, :, None] * d_out[:, None, :]
    hit = np.all((pts >= lo) & (pts <= hi), axis=2)
    first = np.where(hit.any(axis=1), s[np.argmax(hit, axis=1)], np.inf)
    finite = np.isfinite(first)
    assert np.array_equal(finite, np.isfinite(t_in))
    np.testing.assert_allclose(t_in[finite], first[finite], atol=0.006)
    r = 7.0
    p = rng.uniform(-4, 4, (n, 3))
    t_c = cylinder_exit_mm(p, d, r)
    np.testing.assert_allclose(np.hypot(*(p + t_c[:, None] * d)[:, :2].T), r, rtol=1e-9)


def test_phantom_that_does_not_fit_the_bore_is_refused():
    tables = MaterialTables.build(("air", "lyso"))
    names = np.full((2, 240, 240), "air", dtype=object)
    medium = PhantomMedium.build(names, np.zeros(names.shape), np.ones(3),
                                 -(np.array(names.shape) - 1) / 2.0, tables)
    with pytest.raises(ValueError, match="does not fit inside the ring's bore"):
        Transport(tables, medium, DetectorRing.build(Scanner(), tables), 1.0)
