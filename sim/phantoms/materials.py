"""Material table: composition, density and photon attenuation from xraylib.

Compositions are mass fractions per element (xraylib's compound parser for formulas).
Attenuation uses xraylib's total cross section (Rayleigh + Compton + photoelectric), the same
physics the embedded engine samples, so ``mu511`` in a phantom file is the narrow-beam
attenuation coefficient of that engine. Each material also names its GATE 9
(``GateMaterials.db``) and Geant4 NIST equivalents for the GATE engines.

Reference values at 511 keV (xraylib 4.3): water 0.0960 /cm, aluminium 0.2258 /cm,
LYSO (7.1 g/cm3) 0.818 /cm, BGO 0.963 /cm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import xraylib


@dataclass(frozen=True)
class Material:
    """One material.

    Attributes
    ----------
    name : str
        Name used in configs and phantom files.
    density_g_cm3 : float
        Mass density, g/cm3.
    formula : str
        Chemical formula parsed by xraylib, or '' when ``mass_fractions`` is given.
    mass_fractions : dict
        Element symbol -> mass fraction (summing to 1); overrides ``formula``.
    gate_name : str
        Name in GATE 9's ``GateMaterials.db``.
    geant4_name : str
        Geant4 NIST material name, or '' when opengate must build it from the composition.
    """

    name: str
    density_g_cm3: float
    formula: str = ""
    mass_fractions: dict[str, float] = field(default_factory=dict)
    gate_name: str = ""
    geant4_name: str = ""

    @cached_property
    def composition(self) -> dict[int, float]:
        """Atomic number -> mass fraction (sums to 1)."""
        if self.mass_fractions:
            fractions = {
                xraylib.SymbolToAtomicNumber(sym): w for sym, w in self.mass_fractions.items()
            }
        else:
            parsed = xraylib.CompoundParser(self.formula)
            fractions = dict(zip(parsed["Elements"], parsed["massFractions"], strict=True))
        total = sum(fractions.values())
        return {z: w / total for z, w in fractions.items()}

    def mass_attenuation_cm2_g(
        self, energy_kev: np.ndarray | float, process: str = "total"
    ) -> np.ndarray:
        """Mass attenuation coefficient, cm2/g, for ``process`` in
        {'total', 'compton', 'rayleigh', 'photo'}; shape of ``energy_kev``."""
        function = {
            "total": xraylib.CS_Total,
            "compton": xraylib.CS_Compt,
            "rayleigh": xraylib.CS_Rayl,
            "photo": xraylib.CS_Photo,
        }[process]
        energies = np.atleast_1d(np.asarray(energy_kev, dtype=float))
        # xraylib is scalar; the table is tabulated once per material and energy grid.
        out = np.array(
            [sum(w * function(z, float(e)) for z, w in self.composition.items()) for e in energies]
        )
        return out.reshape(np.shape(energy_kev))

    def linear_attenuation_per_mm(
        self, energy_kev: np.ndarray | float, process: str = "total"
    ) -> np.ndarray:
        """Linear attenuation coefficient, 1/mm, shape of ``energy_kev``."""
        return self.mass_attenuation_cm2_g(energy_kev, process) * self.density_g_cm3 / 10.0

    @cached_property
    def mu511_per_mm(self) -> float:
        """Linear attenuation at 511 keV, 1/mm."""
        return float(self.linear_attenuation_per_mm(511.0))

    def describe(self) -> dict:
        """JSON-serialisable description (written into phantom files)."""
        return {
            "name": self.name,
            "density_g_cm3": self.density_g_cm3,
            "mass_fractions": {
                xraylib.AtomicNumberToSymbol(z): round(w, 6) for z, w in self.composition.items()
            },
            "mu511_per_mm": self.mu511_per_mm,
            "gate_name": self.gate_name,
            "geant4_name": self.geant4_name,
        }


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material(
            "air",
            0.001205,
            mass_fractions={"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
            # GateMaterials.db has had no Air since GATE 9.1; GATE takes NIST names too.
            gate_name="G4_AIR",
            geant4_name="G4_AIR",
        ),
        Material("water", 1.0, "H2O", gate_name="Water", geant4_name="G4_WATER"),
        Material("aluminium", 2.699, "Al", gate_name="Aluminium", geant4_name="G4_Al"),
        Material(
            "steel",
            7.92,
            mass_fractions={"Fe": 0.695, "Cr": 0.19, "Ni": 0.095, "Mn": 0.02},
            gate_name="SS304",
            geant4_name="G4_STAINLESS-STEEL",
        ),
        Material(
            "polyethylene", 0.96, "C2H4", gate_name="Polyethylene", geant4_name="G4_POLYETHYLENE"
        ),
        Material("pmma", 1.19, "C5H8O2", gate_name="PMMA", geant4_name="G4_PLEXIGLASS"),
        # GateMaterials.db's "LYSO" is 7.36 g/cm3; "LYSO-Ce-Hilger" is this one (7.10, + Ce).
        Material("lyso", 7.1, "Lu1.8Y0.2SiO5", gate_name="LYSO-Ce-Hilger"),
        Material("bgo", 7.13, "Bi4Ge3O12", gate_name="BGO", geant4_name="G4_BGO"),
        Material("lead", 11.35, "Pb", gate_name="Lead", geant4_name="G4_Pb"),
    )
}


def get_material(name: str) -> Material:
    """Material by name, with an error that lists the known names."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise KeyError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}") from None
