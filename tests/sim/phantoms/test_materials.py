"""Material attenuation against published values (DESIGN.md, xraylib 4.3 / NIST XCOM)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.phantoms.materials import MATERIALS, get_material


@pytest.mark.parametrize("name, mu_per_cm", [
    ("water", 0.0960),
    ("aluminium", 0.2258),
    ("lyso", 0.818),
    ("bgo", 0.963),
])
def test_mu511_published(name, mu_per_cm):
    assert get_material(name).mu511_per_mm * 10 == pytest.approx(mu_per_cm, rel=2e-3)


def test_compton_dominates_aluminium_and_lyso_photo_fraction():
    al = get_material("aluminium")
    assert al.linear_attenuation_per_mm(511.0, "compton") / al.mu511_per_mm == pytest.approx(
        0.99, abs=0.01)
    lyso = get_material("lyso")
    assert lyso.linear_attenuation_per_mm(511.0, "photo") / lyso.mu511_per_mm == pytest.approx(
        0.31, abs=0.01)


def test_processes_add_up_and_attenuation_falls_with_energy():
    water = get_material("water")
    e = np.array([100.0, 300.0, 511.0])
    parts = sum(water.linear_attenuation_per_mm(e, p) for p in ("compton", "rayleigh", "photo"))
    np.testing.assert_allclose(parts, water.linear_attenuation_per_mm(e), rtol=1e-3)
    assert np.all(np.diff(water.linear_attenuation_per_mm(e)) < 0)


def test_air_is_nearly_transparent_and_compositions_sum_to_one():
    # NIST XCOM: air 0.0869 cm2/g at 511 keV (interpolated), density 1.205 mg/cm3.
    assert get_material("air").mu511_per_mm == pytest.approx(0.0869 * 0.001205 / 10, rel=0.02)
    for material in MATERIALS.values():
        assert sum(material.composition.values()) == pytest.approx(1.0)
        assert material.gate_name


def test_unknown_material():
    with pytest.raises(KeyError, match="unknown material 'unobtainium'"):
        get_material("unobtainium")
