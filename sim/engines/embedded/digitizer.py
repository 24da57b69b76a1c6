"""GATE-like digitizer of the embedded engine: hits -> adder -> readout -> blurring -> window.

The chain follows GATE's (``/gate/digitizer/Singles/insert ...``):

1. **adder** (per event and crystal): deposits of one decay in one crystal become one pulse
   with the summed energy, the energy-weighted centroid as position and the time of the
   earliest deposit (GATE's ``adder`` with its default energy-weighted centroid policy);
2. **readout** (per event and block of ``crystals_per_ring / modules_per_ring`` x
   ``crystals_per_module_axial`` crystals): the pulses of one block become one single with
   their summed energy and the crystal, position and time of the most energetic pulse
   (``readout`` with ``setPolicy TakeEnergyWinner`` at module depth);
3. **energy blurring**: Gaussian, FWHM ``R sqrt(511 keV * E)`` (resolution R at 511 keV,
   scaling as 1 / sqrt(E), ``energyResolution`` with ``setEnergyOfReference 511 keV``);
4. **time blurring**: Gaussian per single, FWHM ``time_resolution_ps``;
5. **energy window** ``[low, high]`` keV (``thresholder`` / ``upholder``).

A single's truth (event, photon, phantom scatter counts) is the one of the winning pulse's
earliest deposit. Singles of different decays never merge: like GATE without a pile-up module,
the engine has no dead time or pile-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special

from sim.engines.embedded.source import FWHM_PER_SIGMA
from sim.engines.embedded.transport import C_MM_PER_NS, Hits
from sim.scanner.geometry import Scanner

#: Columns of a singles table (dict of 1-D or (n, 3) arrays).
SINGLES_COLUMNS = ("time_ns", "crystal", "energy_kev", "pos_mm", "event", "photon",
                   "n_compton", "n_rayleigh", "annihilation_mm")


@dataclass(frozen=True)
class DigitizerSettings:
    """Digitizer parameters (the digitizer keys of the ``scanner`` config section)."""

    energy_resolution: float = 0.15
    energy_reference_kev: float = 511.0
    time_resolution_ps: float = 300.0
    energy_window_kev: tuple[float, float] = (350.0, 650.0)

    @classmethod
    def from_config(cls, scanner_cfg: dict) -> DigitizerSettings:
        """From the ``scanner`` config section."""
        return cls(energy_resolution=float(scanner_cfg["energy_resolution"]),
                   time_resolution_ps=float(scanner_cfg["time_resolution_ps"]),
                   energy_window_kev=tuple(float(e) for e in scanner_cfg["energy_window_kev"]))


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal keys in a sorted array."""
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def adder_readout(hits: Hits, scanner: Scanner, decay_time_ns: np.ndarray) -> dict:
    """Singles before blurring from the hits of one batch of decays.

    Parameters
    ----------
    hits : Hits
        Crystal deposits; ``hits.photon // 2`` indexes ``decay_time_ns``.
    scanner : Scanner
    decay_time_ns : numpy.ndarray
        Decay times of the batch, ns, shape (n_decays,).

    Returns
    -------
    dict
        Columns ``time_ns``, ``crystal``, ``energy_kev``, ``pos_mm``, ``event`` (batch-local
        decay index), ``photon``, ``n_compton``, ``n_rayleigh``; one row per single, in no
        particular order.
    """
    event = hits.photon // 2
    time_ns = decay_time_ns[event] + hits.path_mm / C_MM_PER_NS
    # Adder: order by (event, crystal, time) so each group's first row is its earliest hit.
    key = event * scanner.n_crystals + hits.crystal
    order = np.lexsort((time_ns, key))
    key, first = key[order], _group_starts(key[order])
    group = np.cumsum(np.r_[False, key[1:] != key[:-1]]) if key.size else key
    energy = hits.energy_kev[order]
    e_sum = np.bincount(group, energy)
    safe = np.where(e_sum > 0, e_sum, 1.0)
    centroid = np.stack([np.bincount(group, energy * hits.pos_mm[order, a]) for a in range(3)],
                        axis=1) / safe[:, None]
    lead = order[first]
    pulses = {
        "time_ns": time_ns[lead], "crystal": hits.crystal[lead], "energy_kev": e_sum,
        "pos_mm": centroid, "event": event[lead], "photon": hits.photon[lead],
        "n_compton": hits.n_compton[lead], "n_rayleigh": hits.n_rayleigh[lead],
    }
    # Readout: per (event, block), the energy winner takes the block's summed energy.
    ring, index = scanner.ring_and_index(pulses["crystal"])
    block = ((ring // scanner.crystals_per_module_axial) * scanner.modules_per_ring
             + index // scanner.crystals_per_module)
    n_blocks = scanner.axial_modules * scanner.modules_per_ring
    bkey = pulses["event"] * n_blocks + block
    order = np.lexsort((-pulses["energy_kev"], bkey))
    bkey_sorted = bkey[order]
    first = _group_starts(bkey_sorted)
    group = np.cumsum(np.r_[False, bkey_sorted[1:] != bkey_sorted[:-1]]) if bkey.size else bkey
    winner = order[first]
    singles = {name: col[winner] for name, col in pulses.items()}
    singles["energy_kev"] = np.bincount(group, pulses["energy_kev"][order])
    return singles


def energy_sigma_kev(settings: DigitizerSettings, energy_kev: np.ndarray) -> np.ndarray:
    """Standard deviation of the energy blurring at ``energy_kev`` (FWHM
    ``resolution x sqrt(reference x E)``), keV."""
    return (settings.energy_resolution * np.sqrt(settings.energy_reference_kev
                                                 * np.asarray(energy_kev))
            / FWHM_PER_SIGMA)


def time_sigma_ns(settings: DigitizerSettings) -> float:
    """Standard deviation of the time blurring, ns."""
    return settings.time_resolution_ps * 1e-3 / FWHM_PER_SIGMA


def blur_and_window(singles: dict, settings: DigitizerSettings,
                    rng: np.random.Generator, keep_deposits: bool = False) -> dict:
    """Energy and time blurring, then the energy window; returns the kept singles (with
    ``keep_deposits``, their unblurred ``deposited_kev`` and ``time_unblurred_ns`` too)."""
    energy = singles["energy_kev"]
    sigma_kev = energy_sigma_kev(settings, energy)
    blurred = np.maximum(energy + sigma_kev * rng.standard_normal(energy.size), 0.0)
    time_ns = singles["time_ns"] + time_sigma_ns(settings) * rng.standard_normal(energy.size)
    low, high = settings.energy_window_kev
    keep = (blurred >= low) & (blurred <= high)
    out = {name: col[keep] for name, col in singles.items()}
    if keep_deposits:
        out["deposited_kev"] = out["energy_kev"]
        out["time_unblurred_ns"] = out["time_ns"]
    out["energy_kev"] = blurred[keep]
    out["time_ns"] = time_ns[keep]
    return out


def blur_within_window(deposited_kev: np.ndarray, settings: DigitizerSettings,
                       rng: np.random.Generator) -> np.ndarray:
    """Blurred energies of singles known to fall in the energy window: the blurring's
    normal distribution about each deposit, truncated to the window (drawn by inverting its
    distribution function on the side of the mean's tail, so that deposits far outside the
    window keep their precision), keV, float64 with the shape of ``deposited_kev``."""
    mean = np.asarray(deposited_kev, np.float64)
    sigma = np.maximum(energy_sigma_kev(settings, mean), 1e-12)
    low, high = settings.energy_window_kev
    a, b = (low - mean) / sigma, (high - mean) / sigma
    # Above the window's centre, draw -x between -b and -a (the lower tail is precise).
    flip = (a + b) / 2 > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    u = scipy.special.ndtr(lo) + rng.random(mean.shape) * (scipy.special.ndtr(hi)
                                                          - scipy.special.ndtr(lo))
    x = np.clip(scipy.special.ndtri(u), lo, hi)
    return mean + sigma * np.where(flip, -x, x)
