"""Positron source of the embedded engine: decays, annihilation points and photon pairs.

The model is GATE's voxelised back-to-back source:

* the number of decays in a frame is Poisson with mean ``A0 tau (1 - exp(-T / tau))``
  (``tau = T_half / ln 2``), so the half-life is always applied; for 0.1 s of F-18 the
  correction is 1e-5, for a 10 s frame 5e-4;
* the frame is cut into time slices of equal expected decay count (one slice per chunk of the
  engine), and decay times inside a slice follow the decaying exponential, sorted;
* positions are drawn from the activity map (probability proportional to voxel activity) and
  uniformly inside the voxel;
* optional positron range (off by default, as in GATE's back-to-back source): an isotropic
  displacement whose one-dimensional projection is the bi-exponential of Derenzo, fitted for
  F-18 in water by Levin and Hoffman (Phys. Med. Biol. 44 (1999) 781): C = 0.516,
  k1 = 37.9 /mm, k2 = 3.10 /mm. A projection ``exp(-k |x|)`` belongs to a 3-D radial distance
  distributed as Gamma(2, 1/k), so the range is a mixture of two Gamma laws (mean 0.6 mm);
* two photons of 511 keV, back to back up to the acolinearity: photon 2 is turned away from
  ``-d1`` by a two-dimensional Gaussian angle whose projection on any plane has the given FWHM
  (0.5 degree by default, the measured angular correlation in water).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engines.embedded.physics import ELECTRON_MASS_KEV, rotate_directions

#: Levin & Hoffman (1999) F-18 in water: C, k1 (1/mm), k2 (1/mm) of C e^-k1|x| + (1-C) e^-k2|x|.
F18_RANGE_WATER = (0.516, 37.9, 3.10)
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class Frame:
    """An acquisition frame cut into time slices of equal expected decay count.

    Attributes
    ----------
    activity_bq : float
        Activity at the start of the frame, Bq.
    duration_s : float
    half_life_s : float
    n_slices : int
    """

    activity_bq: float
    duration_s: float
    half_life_s: float
    n_slices: int

    @classmethod
    def for_chunks(
        cls, activity_bq: float, duration_s: float, half_life_s: float, chunk_decays: int
    ) -> Frame:
        """Frame with enough slices that each holds about ``chunk_decays`` decays."""
        frame = cls(activity_bq, duration_s, half_life_s, 1)
        n = max(1, int(np.ceil(frame.expected_decays / chunk_decays)))
        return cls(activity_bq, duration_s, half_life_s, n)

    @property
    def tau_s(self) -> float:
        """Mean life, s."""
        return self.half_life_s / np.log(2.0)

    @property
    def decayed_fraction(self) -> float:
        """Fraction of the nuclei present at the start that decay during the frame."""
        return float(-np.expm1(-self.duration_s / self.tau_s))

    @property
    def expected_decays(self) -> float:
        """Mean number of decays in the frame."""
        return self.activity_bq * self.tau_s * self.decayed_fraction

    def time_at_fraction_s(self, q: np.ndarray | float) -> np.ndarray:
        """Time by which a fraction ``q`` of the frame's decays has happened, s."""
        return -self.tau_s * np.log1p(-np.asarray(q) * self.decayed_fraction)

    @property
    def slice_edges_s(self) -> np.ndarray:
        """Slice boundaries, s, shape (n_slices + 1,); the last is the frame end."""
        edges = self.time_at_fraction_s(np.linspace(0.0, 1.0, self.n_slices + 1))
        edges[-1] = self.duration_s
        return edges

    def sample_slice_times_ns(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """Decay times of slice ``k``: a Poisson number of sorted times, ns."""
        n = rng.poisson(self.expected_decays / self.n_slices)
        q = (k + rng.random(n)) / self.n_slices
        return np.sort(self.time_at_fraction_s(q)) * 1e9


@dataclass(frozen=True)
class VoxelSource:
    """Activity map of a phantom, ready for sampling.

    Attributes
    ----------
    cumulative : numpy.ndarray
        Running sum of the activity of the active voxels, normalised to end at 1, shape (n,).
    voxels : numpy.ndarray
        Flat (z, y, x) index of each active voxel, shape (n,).
    shape : tuple of int
        Grid shape (nz, ny, nx).
    voxel_size_mm, origin_mm : numpy.ndarray
        (z, y, x), mm; ``origin_mm`` is the centre of voxel (0, 0, 0).
    """

    cumulative: np.ndarray
    voxels: np.ndarray
    shape: tuple[int, int, int]
    voxel_size_mm: np.ndarray
    origin_mm: np.ndarray

    @classmethod
    def from_activity(
        cls, activity: np.ndarray, voxel_size_mm: np.ndarray, origin_mm: np.ndarray
    ) -> VoxelSource:
        """Build from an activity image (z, y, x), any non-negative scale."""
        flat = np.asarray(activity, dtype=np.float64).ravel()
        if np.any(flat < 0) or not np.isfinite(flat).all() or flat.sum() <= 0:
            raise ValueError("activity map must be finite, non-negative and not all zero")
        voxels = np.flatnonzero(flat)
        cumulative = np.cumsum(flat[voxels])
        return cls(cumulative / cumulative[-1], voxels, tuple(activity.shape),
                   np.asarray(voxel_size_mm, float), np.asarray(origin_mm, float))

    def sample_points_mm(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Decay positions (x, y, z), mm, shape (n, 3)."""
        u = rng.random(n)
        # Sorted queries make the binary searches cache-friendly; results go back in place.
        order = np.argsort(u)
        k = np.empty(n, np.int64)
        k[order] = np.searchsorted(self.cumulative, u[order], side="right")
        flat = self.voxels[np.minimum(k, self.cumulative.size - 1)]
        zyx = np.stack(np.unravel_index(flat, self.shape), axis=1).astype(np.float64)
        zyx += rng.random((n, 3)) - 0.5
        zyx = self.origin_mm + zyx * self.voxel_size_mm
        return zyx[:, ::-1].copy()


def sample_isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors uniform on the sphere, shape (n, 3)."""
    cos_t = 2.0 * rng.random(n) - 1.0
    phi = 2.0 * np.pi * rng.random(n)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def positron_range_mm(n: int, rng: np.random.Generator, density_g_cm3: float = 1.0) -> np.ndarray:
    """Isotropic F-18 positron displacements, mm, shape (n, 3) (see the module docstring).

    ``density_g_cm3`` scales the water ranges (range ~ 1 / density).
    """
    c, k1, k2 = F18_RANGE_WATER
    # Each exponential term's weight is its area: 2 C / k1 and 2 (1 - C) / k2.
    w1 = (c / k1) / (c / k1 + (1.0 - c) / k2)
    k = np.where(rng.random(n) < w1, k1, k2) * density_g_cm3
    distance = rng.gamma(2.0, 1.0, n) / k
    return sample_isotropic(n, rng) * distance[:, None]


def back_to_back(
    n: int, acolinearity_fwhm_deg: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Directions of the two annihilation photons, each shape (n, 3).

    The deviation from collinearity is a 2-D isotropic Gaussian angle whose projection has
    FWHM ``acolinearity_fwhm_deg`` (0 gives exactly opposite photons).
    """
    d1 = sample_isotropic(n, rng)
    if acolinearity_fwhm_deg <= 0:
        return d1, -d1
    sigma = np.radians(acolinearity_fwhm_deg) / FWHM_PER_SIGMA
    dx, dy = rng.normal(0.0, sigma, (2, n))
    theta = np.hypot(dx, dy)
    d2 = rotate_directions(-d1, np.cos(theta), np.arctan2(dy, dx))
    return d1, d2


#: Energy of each annihilation photon, keV.
ANNIHILATION_KEV = ELECTRON_MASS_KEV
