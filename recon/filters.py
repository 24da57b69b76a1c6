"""Isotropic Gaussian smoothing given by its FWHM in mm, on anisotropic voxels: the one filter
of the reconstruction (post-filter of images, mu maps smoothed to the data's resolution)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage

from recon.projector import FWHM_PER_SIGMA


def gaussian_fwhm(volume: np.ndarray, voxel_size_mm: Sequence[float], fwhm_mm: float
                  ) -> np.ndarray:
    """``volume`` (z, y, x) smoothed by an isotropic Gaussian of ``fwhm_mm`` (0: unchanged);
    outside the volume counts as 0, so nothing leaks in from beyond its box. float32."""
    volume = np.asarray(volume, np.float32)
    if fwhm_mm <= 0:
        return volume
    sigma = [fwhm_mm / FWHM_PER_SIGMA / float(v) for v in voxel_size_mm]
    return scipy.ndimage.gaussian_filter(volume, sigma, mode="constant").astype(np.float32)
