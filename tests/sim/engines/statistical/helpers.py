"""What the statistical engine's tests share: the default scanner and digitizer, an activity
sphere phantom, isotropic directions, and the per-coincidence features compared with the
embedded Monte Carlo."""

from __future__ import annotations

import numpy as np

from sim.engines.embedded.digitizer import DigitizerSettings
from sim.phantoms.file import PhantomData
from sim.scanner.geometry import Scanner
from tests.sim.synthetic import phantom_data

SCANNER = Scanner()
DIGITIZER = DigitizerSettings(0.15, 511.0, 300.0, (350.0, 650.0))


def sphere(radius_mm: float, shape=(40, 40, 40), material: str = "air") -> PhantomData:
    """A uniform sphere of activity at the centre of a 1 mm grid of ``material``."""
    zz, yy, xx = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    activity = ((xx**2 + yy**2 + zz**2) < radius_mm**2).astype(float)
    return phantom_data(np.full(shape, material), activity)


def isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors uniform on the sphere, shape (n, 3)."""
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    s = np.sqrt(1 - cos_t**2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), cos_t], axis=1)


def features(columns: dict) -> dict:
    """Ring difference and sum, transaxial separation, view (integers), energies, time
    difference and interaction radius of list-mode coincidences."""
    r1, i1 = SCANNER.ring_and_index(columns["crystal1"])
    r2, i2 = SCANNER.ring_and_index(columns["crystal2"])
    r1, r2, i1, i2 = (x.astype(np.int64) for x in (r1, r2, i1, i2))
    half = SCANNER.crystals_per_ring // 2
    return {"ring_difference": np.abs(r1 - r2), "ring_sum": r1 + r2,
            "separation": np.abs((i1 - i2 + half) % SCANNER.crystals_per_ring - half),
            "view": (i1 + i2) % SCANNER.crystals_per_ring,
            "energy": np.concatenate([columns["energy1_kev"], columns["energy2_kev"]]),
            "time_difference": columns["time1_ns"] - columns["time2_ns"],
            "radius": np.linalg.norm(columns["pos1_mm"][:, :2], axis=1)}
