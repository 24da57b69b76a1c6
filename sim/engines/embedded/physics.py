"""Photon interaction physics for the embedded engine: cross-section tables and Compton sampling.

Cross sections come from xraylib (Rayleigh, Compton, photoelectric; the same data the phantom
``mu511`` maps use), tabulated once per material on a fine logarithmic energy grid
(:class:`EnergyGrid`, so that locating an energy is arithmetic) and interpolated linearly.

Compton scattering follows the free-electron Klein-Nishina cross section, sampled with the
Butcher-Messel composition-rejection method (the method of Geant4's ``G4KleinNishinaCompton``),
vectorised: each rejection round redraws only the photons still rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.phantoms.materials import get_material

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


#: h c in keV * angstrom: a photon of E keV has wavelength HC / E angstrom.
HC_KEV_ANGSTROM = 12.398419843320026


@dataclass(frozen=True)
class EnergyGrid:
    """Uniform grid in log(energy), so locating an energy is arithmetic, not a search.

    The engine's tables (cross sections, majorants) share this grid; each photon's position
    on it is computed once per energy change and reused by every lookup.
    """

    e_min_kev: float
    e_max_kev: float
    n: int

    @property
    def energy_kev(self) -> np.ndarray:
        """Grid energies, keV, shape (n,)."""
        return np.geomspace(self.e_min_kev, self.e_max_kev, self.n)

    def locate(self, energy_kev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower grid index and linear weight of each energy, shapes (m,), clipped to the grid."""
        step = np.log(self.e_max_kev / self.e_min_kev) / (self.n - 1)
        x = np.log(energy_kev / self.e_min_kev) / step
        i = np.clip(x.astype(np.int64), 0, self.n - 2)
        return i, np.clip(x - i, 0.0, 1.0)


def interpolate_rows(table: np.ndarray, row: np.ndarray | int, i: np.ndarray,
                     w: np.ndarray) -> np.ndarray:
    """Linear interpolation on an :class:`EnergyGrid`, vectorised over photons.

    Parameters
    ----------
    table : numpy.ndarray
        Shape (n_rows, n_energies).
    row : array of int, shape (m,), or int
        Table row of each photon.
    i, w : numpy.ndarray
        From :meth:`EnergyGrid.locate`, shape (m,).

    Returns
    -------
    numpy.ndarray
        Shape (m,).
    """
    lo = table[row, i]
    return lo + w * (table[row, i + 1] - lo)


@dataclass(frozen=True)
class RayleighSampler:
    """Coherent (Rayleigh) scattering angles from xraylib atomic form factors.

    The differential cross section is Thomson's ``(1 + cos^2 theta) / 2`` times the squared
    form factor ``F^2(x)`` with momentum transfer ``x = sin(theta / 2) / lambda`` (1/angstrom).
    With ``u = x^2`` the form-factor part does not depend on energy, so ``u`` is drawn from the
    tabulated cumulative of ``F^2(u)`` truncated at ``u_max = (E / hc)^2`` (backscatter), and the
    Thomson factor is applied by rejection; the scheme PENELOPE uses. Compounds add the
    elements' ``F^2`` weighted by atoms per gram (mass fraction / atomic weight), the
    independent-atom approximation Geant4's Livermore model uses too.

    Attributes
    ----------
    u_grid : numpy.ndarray
        ``x^2`` grid, 1/angstrom^2, shape (n,), from 0.
    cumulative : numpy.ndarray
        Running integral of ``F^2`` over ``u`` per material, shape (n_materials, n).
    """

    u_grid: np.ndarray
    cumulative: np.ndarray

    @classmethod
    def build(
        cls, materials: tuple[str, ...] | list[str], e_max_kev: float, n: int = 600
    ) -> RayleighSampler:
        """Tabulate the form factors of ``materials`` up to the backscatter of ``e_max_kev``."""
        import xraylib  # only needed while building

        u_max = (e_max_kev / HC_KEV_ANGSTROM) ** 2
        u = np.concatenate([[0.0], np.geomspace(1e-6, u_max, n - 1)])
        x = np.sqrt(u)
        rows = []
        for name in materials:
            f2 = np.zeros_like(u)
            for z, mass_fraction in get_material(name).composition.items():
                ff = np.array([xraylib.FF_Rayl(z, float(q)) for q in x])
                f2 += mass_fraction / xraylib.AtomicWeight(z) * ff * ff
            steps = 0.5 * (f2[1:] + f2[:-1]) * np.diff(u)
            # A tiny floor keeps the cumulative strictly increasing where F^2 underflows.
            rows.append(np.concatenate([[0.0], np.cumsum(steps + 1e-300)]))
        return cls(u, np.stack(rows))

    def sample(
        self, material_index: np.ndarray, energy_kev: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Cosine of the scattering angle for each photon, shape (m,).

        Parameters
        ----------
        material_index : array of int, shape (m,)
            Row of the materials given to :meth:`build`.
        energy_kev : array of float, shape (m,)
        rng : numpy.random.Generator
        """
        cos_theta = np.empty(energy_kev.size)
        for m in np.unique(material_index):
            sel = np.flatnonzero(material_index == m)
            cdf = self.cumulative[m]
            u_max = (energy_kev[sel] / HC_KEV_ANGSTROM) ** 2
            g_max = np.interp(u_max, self.u_grid, cdf)
            pending = np.arange(sel.size)
            while pending.size:
                r1, r2 = rng.random((2, pending.size))
                u = np.interp(r1 * g_max[pending], cdf, self.u_grid)
                c = np.clip(1.0 - 2.0 * u / u_max[pending], -1.0, 1.0)
                accept = 2.0 * r2 <= 1.0 + c * c
                cos_theta[sel[pending[accept]]] = c[accept]
                pending = pending[~accept]
        return cos_theta


def rotate_directions(
    direction: np.ndarray, cos_theta: np.ndarray, phi_rad: np.ndarray
) -> np.ndarray:
    """Turn unit vectors by polar angle ``theta`` and azimuth ``phi`` about themselves.

    Parameters
    ----------
    direction : numpy.ndarray
        Unit vectors, shape (m, 3).
    cos_theta, phi_rad : numpy.ndarray
        Shape (m,).

    Returns
    -------
    numpy.ndarray
        New unit vectors, shape (m, 3).
    """
    u, v, w = direction[:, 0], direction[:, 1], direction[:, 2]
    sin_theta = np.sqrt(np.maximum(0.0, 1.0 - cos_theta * cos_theta))
    cos_phi, sin_phi = np.cos(phi_rad), np.sin(phi_rad)
    rho = np.sqrt(np.maximum(0.0, 1.0 - w * w))
    along_z = rho < 1e-10
    rho_safe = np.where(along_z, 1.0, rho)
    out = np.empty_like(direction)
    out[:, 0] = u * cos_theta + sin_theta * (u * w * cos_phi - v * sin_phi) / rho_safe
    out[:, 1] = v * cos_theta + sin_theta * (v * w * cos_phi + u * sin_phi) / rho_safe
    out[:, 2] = w * cos_theta - sin_theta * cos_phi * rho
    if np.any(along_z):
        sign = np.sign(w[along_z])
        out[along_z, 0] = sin_theta[along_z] * cos_phi[along_z]
        out[along_z, 1] = sin_theta[along_z] * sin_phi[along_z]
        out[along_z, 2] = sign * cos_theta[along_z]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out
