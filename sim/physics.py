"""Photon interaction physics for the embedded engine: cross-section tables and Compton sampling.

Cross sections come from xraylib (Rayleigh, Compton, photoelectric; the same data the phantom
``mu511`` maps use), tabulated once per material on a logarithmic energy grid and interpolated
log-log, which is how Geant4's standard EM models use their tables too.

Compton scattering follows the free-electron Klein-Nishina cross section, sampled with the
Butcher-Messel composition-rejection method (the method of Geant4's ``G4KleinNishinaCompton``),
vectorised: each rejection round redraws only the photons still rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.materials import get_material

ELECTRON_MASS_KEV = 510.99895
PROCESSES = ("rayleigh", "compton", "photo")


@dataclass(frozen=True)
class CrossSectionTable:
    """Linear attenuation coefficients of several materials on a log energy grid.

    Attributes
    ----------
    materials : tuple of str
        Material names; row order of ``mu_per_mm``.
    energy_kev : numpy.ndarray
        Grid, shape (n_energies,), increasing.
    mu_per_mm : numpy.ndarray
        Shape (n_materials, 3, n_energies): Rayleigh, Compton, photoelectric, 1/mm.
    """

    materials: tuple[str, ...]
    energy_kev: np.ndarray
    mu_per_mm: np.ndarray

    @classmethod
    def build(
        cls,
        materials: tuple[str, ...] | list[str],
        e_min_kev: float = 1.0,
        e_max_kev: float = 1000.0,
        n_energies: int = 600,
    ) -> CrossSectionTable:
        """Tabulate ``materials`` from xraylib between ``e_min_kev`` and ``e_max_kev``."""
        energy = np.geomspace(e_min_kev, e_max_kev, n_energies)
        mu = np.stack([
            np.stack([get_material(m).linear_attenuation_per_mm(energy, p) for p in PROCESSES])
            for m in materials
        ])
        return cls(tuple(materials), energy, mu)

    def mu(self, material_index: np.ndarray, energy_kev: np.ndarray) -> np.ndarray:
        """Per-process coefficients for each photon, 1/mm, shape (n, 3).

        Parameters
        ----------
        material_index : array of int, shape (n,)
            Row of ``materials`` for each photon.
        energy_kev : array of float, shape (n,)
            Photon energies, within the table's range.
        """
        log_e = np.log(self.energy_kev)
        x = np.log(np.asarray(energy_kev, dtype=float))
        if np.any(x < log_e[0] - 1e-12) or np.any(x > log_e[-1] + 1e-12):
            raise ValueError(
                f"energy outside the cross-section table [{self.energy_kev[0]}, "
                f"{self.energy_kev[-1]}] keV"
            )
        i = np.clip(np.searchsorted(log_e, x) - 1, 0, log_e.size - 2)
        w = (x - log_e[i]) / (log_e[i + 1] - log_e[i])
        table = np.log(np.maximum(self.mu_per_mm[np.asarray(material_index)], 1e-300))
        lo = np.take_along_axis(table, i[:, None, None].repeat(3, axis=1), axis=2)[..., 0]
        hi = np.take_along_axis(table, (i + 1)[:, None, None].repeat(3, axis=1), axis=2)[..., 0]
        return np.exp(lo + w[:, None] * (hi - lo))

    def mu_total(self, material_index: np.ndarray, energy_kev: np.ndarray) -> np.ndarray:
        """Total linear attenuation for each photon, 1/mm, shape (n,)."""
        return self.mu(material_index, energy_kev).sum(axis=1)


def sample_klein_nishina(
    energy_kev: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample Compton scattering on free electrons (Klein-Nishina).

    Parameters
    ----------
    energy_kev : numpy.ndarray
        Incident photon energies, shape (n,).
    rng : numpy.random.Generator

    Returns
    -------
    (cos_theta, scattered_energy_kev), each shape (n,): polar scattering angle cosine and the
    scattered photon energy ``E / (1 + k (1 - cos_theta))`` with ``k = E / m_e c^2``.
    """
    energy = np.asarray(energy_kev, dtype=float)
    k = energy / ELECTRON_MASS_KEV
    eps0 = 1.0 / (1.0 + 2.0 * k)
    eps0_sq = eps0 * eps0
    alpha1 = -np.log(eps0)
    alpha2 = 0.5 * (1.0 - eps0_sq)
    eps = np.empty_like(energy)
    pending = np.arange(energy.size)
    while pending.size:
        r1, r2, r3 = rng.random((3, pending.size))
        a1, a2, e0sq, kk = alpha1[pending], alpha2[pending], eps0_sq[pending], k[pending]
        # Composition: f1 ~ 1/eps on [eps0, 1] with weight alpha1, f2 ~ eps with weight alpha2.
        first = r1 < a1 / (a1 + a2)
        trial = np.where(first, np.exp(-a1 * r2), np.sqrt(e0sq + (1.0 - e0sq) * r2))
        one_minus_cos = (1.0 - trial) / (trial * kk)
        sin_sq = one_minus_cos * (2.0 - one_minus_cos)
        accept = r3 <= 1.0 - trial * sin_sq / (1.0 + trial * trial)
        eps[pending[accept]] = trial[accept]
        pending = pending[~accept]
    cos_theta = 1.0 - (1.0 - eps) / (eps * k)
    return np.clip(cos_theta, -1.0, 1.0), eps * energy
