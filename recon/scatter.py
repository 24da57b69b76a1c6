"""Scatter estimate of rebinned data: single scatter simulation (Watson 2000) scaled by tail
fitting, computed from what a scanner has (the measured prompts and delayed window, the mu
map and the current activity estimate), never from the engine's truth labels.

Single scatter simulation (SSS). For detectors ``A`` and ``B`` and scatter points ``S``
sampled in the attenuating object (spacing ``scatter_step_mm``, volume ``V`` each)::

    S_AB = sum_S V mu_S / sigma_KN(511) dsigma_KN/dOmega(theta) cos_A cos_B / (R_A^2 R_B^2)
           x [ eps(511) eps(E') exp(-I_A - f' I_B) L_A  +  eps(E') eps(511) exp(-f' I_A - I_B) L_B ]

with ``I_X`` and ``L_X`` the line integrals of mu (511 keV) and of the activity from ``S`` to
detector ``X``, ``R_X`` their length, ``cos_X`` the incidence on the crystal face, ``theta``
the scattering angle (``cos theta = -u_A . u_B``), ``E' = 511 / (2 - cos theta)`` keV,
``f' = sigma_KN(E') / sigma_KN(511)`` the attenuation at ``E'`` relative to 511 keV (Compton
dominates at these energies in water and aluminium), and ``eps(E)`` the share of a photon's
deposits inside the energy window under the digitizer's Gaussian blur
(FWHM ``R sqrt(511 E)``). The first term has the emission between ``S`` and ``A`` (the photon
to ``B`` scatters at ``S``), the second the reverse.

Detectors and rings are grouped (``crystal_step`` crystals, ``ring_step`` rings) into coarse
detectors at the groups' mean positions; the estimate, averaged over the ring differences of
each rebinned plane, is interpolated (periodic bilinear in the two crystal coordinates,
linear along z) to every bin and plane and multiplied by the plane's number of LORs, as STIR's
SSS interpolates from a downsampled scanner. Volumes are box-averaged onto a coarse grid
(``coarse_voxel_mm``) for the line integrals.

Tail fitting. Bins whose LOR misses the object (line integral of the smoothed mu map below
``tail_mu``) hold only scatter and randoms; the scale is
``alpha = sum_tails (prompts - randoms) / sum_tails SSS`` (the moment estimate of
``prompts ~ Poisson(alpha SSS + randoms)`` there), one scale for all planes (the axial shape
comes from SSS; per-plane tails hold a few counts at these statistics), clipped at 0.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.special
import torch

from recon.grid import ImageGrid
from recon.projector import Projector
from recon.sinogram import SinogramGeometry, plane_multiplicity
from recon.system_matrix import SystemMatrix2D
from recon.truth import box_average

log = logging.getLogger(__name__)

ELECTRON_REST_KEV = 510.99895


@dataclass(frozen=True)
class ScatterSettings:
    """Sampling of the single scatter simulation and the tail threshold (module docstring)."""

    scatter_step_mm: float = 10.0
    coarse_voxel_mm: float = 4.0
    crystal_step: int = 8
    ring_step: int = 8
    mu_threshold_per_mm: float = 0.004
    tail_mu: float = 1e-3


def scattered_energy_kev(cos_theta, energy_kev: float = ELECTRON_REST_KEV):
    """Compton formula: energy after scattering by ``theta``, keV."""
    return energy_kev / (1.0 + energy_kev / ELECTRON_REST_KEV * (1.0 - cos_theta))


def klein_nishina(cos_theta, energy_kev: float = ELECTRON_REST_KEV):
    """Klein-Nishina ``dsigma/dOmega`` per electron, in units of the classical electron radius
    squared (r_e^2)."""
    p = scattered_energy_kev(cos_theta, energy_kev) / energy_kev
    return 0.5 * p * p * (p + 1.0 / p - (1.0 - cos_theta * cos_theta))


def klein_nishina_total(energy_kev):
    """Total Klein-Nishina cross section per electron, in units of r_e^2."""
    k = np.asarray(energy_kev, dtype=float) / ELECTRON_REST_KEV
    log_term = np.log1p(2 * k)
    return 2 * math.pi * ((1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - log_term / k)
                          + log_term / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2)


def window_efficiency(energy_kev, window_kev: tuple[float, float], resolution: float):
    """Share of photopeak deposits of energy ``E`` inside the window, under a Gaussian blur of
    FWHM ``resolution sqrt(511 E)`` (the digitizer's model)."""
    e = np.asarray(energy_kev, dtype=float)
    sigma = resolution * np.sqrt(ELECTRON_REST_KEV * e) / (2 * math.sqrt(2 * math.log(2)))
    lo, hi = window_kev
    return (scipy.special.ndtr((hi - e) / sigma) - scipy.special.ndtr((lo - e) / sigma))


def _group_step(n: int, step: int) -> int:
    """The largest divisor of ``n`` not above ``step`` (groups must tile the ring)."""
    return max(d for d in range(1, max(1, min(step, n)) + 1) if n % d == 0)


@dataclass(frozen=True)
class CoarseDetectors:
    """Grouped detectors: positions (transaxial groups, ring groups, 3) at the mean depth of
    interaction, unit face normals (transaxial groups, 3), group sizes."""

    position_mm: np.ndarray
    normal: np.ndarray
    crystal_step: int
    ring_step: int


def coarse_detectors(geometry: SinogramGeometry, settings: ScatterSettings) -> CoarseDetectors:
    scanner = geometry.scanner
    cs = _group_step(scanner.crystals_per_ring, settings.crystal_step)
    rs = _group_step(scanner.rings, settings.ring_step)
    ids = np.arange(scanner.crystals_per_ring)  # ring 0
    pos = scanner.crystal_position_mm(ids, geometry.doi_mm)
    frames = scanner.crystal_frames(ids)
    group_xy = pos[:, :2].reshape(-1, cs, 2).mean(axis=1)
    normal = frames[:, 0, :].reshape(-1, cs, 3).mean(axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    group_z = np.asarray(scanner.ring_z_mm).reshape(-1, rs).mean(axis=1)
    position = np.zeros((len(group_xy), len(group_z), 3))
    position[..., :2] = group_xy[:, None, :]
    position[..., 2] = group_z[None, :]
    return CoarseDetectors(position, normal, cs, rs)


def scatter_points(mu: np.ndarray, grid: ImageGrid, step_mm: float, threshold: float
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Scatter points: a regular lattice of ``step_mm`` through the grid box, kept where the
    mu map (box-averaged over the lattice cell) exceeds ``threshold``. Returns positions
    (n, 3) as (x, y, z) mm, mu there (n,) and the cell volume, mm^3."""
    n = np.maximum(1, np.round((grid.upper_mm - grid.lower_mm) / step_mm)).astype(int)
    size = (grid.upper_mm - grid.lower_mm) / n
    lattice = ImageGrid(tuple(n), tuple(size), tuple(grid.lower_mm + size / 2))
    mu_cells = box_average(mu, grid, lattice)
    keep = mu_cells > threshold
    z, y, x = np.meshgrid(*(lattice.centres_mm(a) for a in range(3)), indexing="ij")
    points = np.stack([x[keep], y[keep], z[keep]], axis=1)
    return points, mu_cells[keep], float(np.prod(size))


def single_scatter(geometry: SinogramGeometry, grid: ImageGrid, activity: np.ndarray,
                   mu_per_mm: np.ndarray, plane_index: np.ndarray, max_ring_difference: int,
                   window_kev: tuple[float, float], energy_resolution: float,
                   settings: ScatterSettings = ScatterSettings(),
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Unscaled single-scatter estimate of every rebinned bin (module docstring).

    Parameters
    ----------
    activity, mu_per_mm : numpy.ndarray
        Activity estimate and the (unsmoothed) 511 keV mu map on ``grid``, (z, y, x).
    plane_index : numpy.ndarray
        Rebinning plane ``r1 + r2`` of each plane of ``grid``.

    Returns
    -------
    numpy.ndarray
        (bins, planes), float64, >= 0; 0 in invalid bins.
    """
    det = coarse_detectors(geometry, settings)
    per_lor = coarse_single_scatter(geometry, grid, activity, mu_per_mm, max_ring_difference,
                                    window_kev, energy_resolution, settings, device)
    return to_rebinned(per_lor, det, geometry, plane_index, max_ring_difference)


def coarse_single_scatter(geometry: SinogramGeometry, grid: ImageGrid, activity: np.ndarray,
                          mu_per_mm: np.ndarray, max_ring_difference: int,
                          window_kev: tuple[float, float], energy_resolution: float,
                          settings: ScatterSettings = ScatterSettings(),
                          device: torch.device | str = "cpu") -> np.ndarray:
    """SSS of every coarse detector pair, averaged over the ring-group pairs of each coarse
    plane ``m = ra + rb`` within the ring difference: (groups, groups, 2 ring groups - 1),
    per LOR, unscaled."""
    scanner = geometry.scanner
    coarse_shape = tuple(max(1, int(round(e / settings.coarse_voxel_mm)))
                         for e in grid.upper_mm - grid.lower_mm)
    coarse_size = tuple((grid.upper_mm - grid.lower_mm) / np.asarray(coarse_shape))
    coarse = ImageGrid(coarse_shape, coarse_size,
                       tuple(grid.lower_mm + np.asarray(coarse_size) / 2))
    mu_c = box_average(mu_per_mm, grid, coarse)
    act_c = box_average(np.clip(activity, 0, None), grid, coarse)
    points, mu_s, volume = scatter_points(mu_per_mm, grid, settings.scatter_step_mm,
                                          settings.mu_threshold_per_mm)
    det = coarse_detectors(geometry, settings)
    n_t, n_r = det.position_mm.shape[:2]
    n_m = 2 * n_r - 1
    if len(points) == 0:
        return np.zeros((n_t, n_t, n_m))
    dets = det.position_mm.reshape(-1, 3)
    p1 = np.repeat(points, len(dets), axis=0)
    p2 = np.tile(dets, (len(points), 1))
    projector = Projector(coarse, device=device, dtype=torch.float32)
    i_mu = projector.forward(mu_c, p1, p2).reshape(len(points), n_t, n_r).double()
    i_act = projector.forward(act_c, p1, p2).reshape(len(points), n_t, n_r).double()
    vec = torch.as_tensor(dets[None, :, :] - points[:, None, :]).reshape(len(points), n_t,
                                                                          n_r, 3)
    dist = torch.linalg.vector_norm(vec, dim=-1)
    unit = vec / dist[..., None]
    normal = torch.as_tensor(det.normal)[None, :, None, :]
    cos_face = (unit * normal).sum(-1).abs()
    geom = cos_face / dist**2  # (s, t, r)
    mu_s_t = torch.as_tensor(mu_s)
    e511 = float(window_efficiency(ELECTRON_REST_KEV, window_kev, energy_resolution))
    sigma511 = float(klein_nishina_total(ELECTRON_REST_KEV))
    pitch_c = det.ring_step * scanner.axial_pitch_mm
    max_dc = int(max_ring_difference * scanner.axial_pitch_mm // pitch_c)
    total = torch.zeros(n_t, n_t, n_m, dtype=torch.float64)
    pairs = torch.zeros(n_m, dtype=torch.float64)
    for ra in range(n_r):
        for rb in range(max(0, ra - max_dc), min(n_r, ra + max_dc + 1)):
            ua, ub = unit[:, :, ra], unit[:, :, rb]  # (s, t, 3)
            cos_theta = -(ua[:, :, None, :] * ub[:, None, :, :]).sum(-1)  # (s, ta, tb)
            energy = scattered_energy_kev(cos_theta)
            e_prime = torch.as_tensor(window_efficiency(energy.numpy(), window_kev,
                                                        energy_resolution))
            f_prime = torch.as_tensor(klein_nishina_total(energy.numpy())) / sigma511
            ia, ib = i_mu[:, :, ra][:, :, None], i_mu[:, :, rb][:, None, :]
            la, lb = i_act[:, :, ra][:, :, None], i_act[:, :, rb][:, None, :]
            paths = (torch.exp(-ia - f_prime * ib) * la + torch.exp(-f_prime * ia - ib) * lb)
            kernel = (mu_s_t[:, None, None] / sigma511 * klein_nishina(cos_theta)
                      * geom[:, :, ra][:, :, None] * geom[:, :, rb][:, None, :]
                      * e511 * e_prime)
            total[:, :, ra + rb] += volume * (kernel * paths).sum(0)
            pairs[ra + rb] += 1
    return (total / pairs.clamp(min=1)).numpy()


def interpolate_per_lor(mean: np.ndarray, det: CoarseDetectors, scanner,
                        crystal_a: np.ndarray, crystal_b: np.ndarray, z_mid_mm: np.ndarray
                        ) -> np.ndarray:
    """The per-LOR coarse estimate (ta, tb, m) at LORs given by their transaxial crystal
    indices and the height of their midpoint: periodic bilinear in the crystal coordinates,
    linear along z (clamped to the first and last coarse plane), >= 0."""
    cs, rs = det.crystal_step, det.ring_step
    # Continuous coarse coordinates: group i is centred on crystal cs * i + (cs - 1) / 2;
    # coarse plane m = ra + rb sits at (z_ra + z_rb) / 2.
    u = (np.asarray(crystal_a) - (cs - 1) / 2) / cs
    v = (np.asarray(crystal_b) - (cs - 1) / 2) / cs
    w = (np.asarray(z_mid_mm) - det.position_mm[0, 0, 2]) / (rs * scanner.axial_pitch_mm / 2)
    padded = np.pad(mean, ((0, 0), (0, 0), (1, 1)), mode="edge")
    coords = np.stack([u, v, np.clip(w, 0, mean.shape[2] - 1) + 1])
    return np.clip(scipy.ndimage.map_coordinates(padded, coords, order=1, mode="grid-wrap"),
                   0, None)


def to_rebinned(mean: np.ndarray, det: CoarseDetectors, geometry: SinogramGeometry,
                plane_index: np.ndarray, max_ring_difference: int) -> np.ndarray:
    """Interpolate the per-LOR coarse estimate (ta, tb, m) to every bin and plane, times the
    plane's number of LORs."""
    scanner = geometry.scanner
    a, b = geometry.pairs()
    a, b = np.maximum(a, 0).ravel(), np.maximum(b, 0).ravel()
    z_plane = scanner.ring_z_mm[0] + plane_index * scanner.axial_pitch_mm / 2
    n_bins, n_planes = len(a), len(plane_index)
    per_lor = interpolate_per_lor(mean, det, scanner, np.repeat(a, n_planes),
                                  np.repeat(b, n_planes), np.tile(z_plane, n_bins))
    lors = plane_multiplicity(scanner.rings, max_ring_difference)[plane_index]
    return per_lor.reshape(n_bins, n_planes) * lors[None, :] * geometry.valid().ravel()[:, None]


@dataclass(frozen=True)
class ScatterEstimate:
    """A scaled scatter estimate: the coarse per-LOR SSS (ta, tb, m), its detectors, the tail
    scale, and the expected scattered counts of every rebinned bin (bins, planes)."""

    coarse: np.ndarray
    detectors: CoarseDetectors
    scale: float
    rebinned: np.ndarray

    def at_lors(self, scanner, crystal1: np.ndarray, crystal2: np.ndarray) -> np.ndarray:
        """Expected scattered counts on the LORs of crystal pairs (global ids), (n,)."""
        r1, t1 = scanner.ring_and_index(np.asarray(crystal1))
        r2, t2 = scanner.ring_and_index(np.asarray(crystal2))
        z_mid = (scanner.ring_z_mm[r1] + scanner.ring_z_mm[r2]) / 2
        return self.scale * interpolate_per_lor(self.coarse, self.detectors, scanner, t1, t2,
                                                z_mid)


def tail_mask(system: SystemMatrix2D, mu_smoothed: np.ndarray, valid: np.ndarray,
              threshold: float) -> np.ndarray:
    """Bins (bins, planes) whose direct LOR misses the object: line integral of the smoothed
    mu map below ``threshold`` (the smoothing keeps a margin around the object's edge)."""
    columns = np.asarray(mu_smoothed, np.float64).reshape(mu_smoothed.shape[0], -1).T
    return (system.matrix @ columns < threshold) & valid[:, None]


def fit_tail_scale(prompts: np.ndarray, randoms: np.ndarray | None, scatter: np.ndarray,
                   tails: np.ndarray) -> float:
    """Scale of the scatter estimate from the tails (module docstring), >= 0; 0 when the
    estimate is 0 there."""
    s = float(scatter[tails].sum())
    if s <= 0:
        return 0.0
    excess = float(prompts[tails].sum()) - (0.0 if randoms is None else float(randoms[tails].sum()))
    return max(excess, 0.0) / s
