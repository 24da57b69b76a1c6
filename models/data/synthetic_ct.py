"""Synthetic CT-like axial slices: the embedded stand-in for a medical CT collection.

SYNTHETIC DATA, not patient images: a procedural body cross-section (thorax or abdomen) with
textbook Hounsfield units (Hofer, *CT Teaching Manual*; Kalender, *Computed Tomography*):

=================  ========  ==========================================
tissue             HU        where
=================  ========  ==========================================
air                -1000     outside the body, bowel gas, trachea
lung               -850      two lungs (thorax slices)
fat                -100      subcutaneous layer, around the organs
soft tissue        40        muscle ring, heart, vessels, background
liver / kidney     55 / 30   abdomen slices
cancellous bone    400       vertebral body
cortical bone      1200      vertebral rim, ribs
lesions            +-20-60   0 to 3 round lesions in liver, lung or soft tissue
=================  ========  ==========================================

Shapes are drawn at twice the output resolution and averaged 2 x 2 (partial volume), then
correlated Gaussian noise (sigma 8 to 20 HU, about 1.5 pixel correlation) and a smooth
low-frequency field (+-5 HU) give scanner-like noise and texture. Slice ``i`` of seed ``s``
uses the random stream ``(s, i)``: the same seed gives the same slices, and a set can grow
without changing its first slices. Orientation as :mod:`models.ct_readers` (row 0 anterior,
column 0 at the patient's right).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

HU = {"air": -1000.0, "lung": -850.0, "fat": -100.0, "soft": 40.0, "liver": 55.0,
      "kidney": 30.0, "cancellous": 400.0, "cortical": 1200.0}
#: Tissue classes of the label map returned with each slice.
LABELS = {"air": 0, "lung": 1, "fat": 2, "soft": 3, "bone": 4, "lesion": 5}


def _ellipse(x, y, cx, cy, a, b, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def synthetic_slice(size_px: int, fov_mm: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One slice.

    Returns
    -------
    hu : numpy.ndarray
        (size_px, size_px) float32, HU.
    labels : numpy.ndarray
        (size_px, size_px) uint8 tissue class of :data:`LABELS` at each pixel centre.
    """
    fine = 2 * size_px
    c = (np.arange(fine) + 0.5) / fine * fov_mm - fov_mm / 2
    # x grows to the patient's left (columns), y to the back (rows).
    y, x = np.meshgrid(c, c, indexing="ij")
    hu = np.full(x.shape, HU["air"])
    label = np.full(x.shape, LABELS["air"], np.uint8)

    def paint(mask, tissue, cls):
        hu[mask] = HU[tissue] if isinstance(tissue, str) else tissue
        label[mask] = LABELS[cls]

    a, b = rng.uniform(130, 175), rng.uniform(95, 130)
    cx, cy = rng.normal(0, 5), rng.normal(0, 5)
    fat_mm, muscle_mm = rng.uniform(8, 30), rng.uniform(8, 15)
    paint(_ellipse(x, y, cx, cy, a, b), "fat", "fat")
    paint(_ellipse(x, y, cx, cy, a - fat_mm, b - fat_mm), "soft", "soft")
    inner_a, inner_b = a - fat_mm - muscle_mm, b - fat_mm - muscle_mm
    paint(_ellipse(x, y, cx, cy, inner_a, inner_b), "fat", "fat")
    paint(_ellipse(x, y, cx, cy + 0.1 * inner_b, 0.85 * inner_a, 0.8 * inner_b), "soft", "soft")
    thorax = rng.random() < 0.5
    organ_masks = []
    if thorax:
        for side in (-1, 1):
            lung = _ellipse(x, y, cx + side * 0.45 * inner_a, cy + 0.05 * inner_b,
                            0.4 * inner_a, 0.7 * inner_b, side * rng.uniform(-0.2, 0.2))
            paint(lung, "lung", "lung")
            organ_masks.append(lung)
            for _ in range(int(rng.integers(3, 8))):  # vessels in the lung
                px, py = rng.uniform(-0.3, 0.3) * inner_a, rng.uniform(-0.5, 0.5) * inner_b
                paint(lung & _ellipse(x, y, cx + side * 0.45 * inner_a + px, cy + py,
                                      rng.uniform(2, 5), rng.uniform(2, 5)), "soft", "soft")
        paint(_ellipse(x, y, cx + 0.15 * inner_a, cy - 0.2 * inner_b, 0.3 * inner_a,
                       0.35 * inner_b), "soft", "soft")  # heart
        paint(_ellipse(x, y, cx, cy - 0.55 * inner_b, 7, 7), "air", "air")  # trachea
        for phi in np.linspace(0, 2 * np.pi, 16, endpoint=False):  # ribs around the chest
            # y grows to the back: phi = pi/2 is the spine, 3 pi/2 the sternum.
            if abs(phi - np.pi / 2) < 0.5 or abs(phi - 1.5 * np.pi) < 0.3:
                continue
            paint(_ellipse(x, y, cx + 0.93 * inner_a * np.cos(phi),
                           cy + 0.93 * inner_b * np.sin(phi), 4, 6, phi), "cortical", "bone")
    else:
        liver = _ellipse(x, y, cx - 0.35 * inner_a, cy - 0.05 * inner_b, 0.5 * inner_a,
                         0.6 * inner_b, rng.uniform(-0.3, 0.3))
        paint(liver, "liver", "soft")
        organ_masks.append(liver)
        for side in (-1, 1):
            paint(_ellipse(x, y, cx + side * 0.4 * inner_a, cy + 0.45 * inner_b, 22, 32,
                           side * 0.4), "kidney", "soft")
        for _ in range(int(rng.integers(1, 5))):  # bowel gas
            paint(_ellipse(x, y, cx + rng.uniform(0.05, 0.5) * inner_a,
                           cy + rng.uniform(-0.5, 0.1) * inner_b, rng.uniform(4, 12),
                           rng.uniform(4, 10)), "air", "air")
    # Spine: vertebral body (cancellous inside a cortical rim) and posterior process.
    vy = cy + 0.72 * inner_b
    paint(_ellipse(x, y, cx, vy, 20, 17), "cortical", "bone")
    paint(_ellipse(x, y, cx, vy, 16, 13), "cancellous", "bone")
    paint(_ellipse(x, y, cx, vy + 28, 6, 12), "cortical", "bone")
    # Lesions: soft-tissue nodules in the lungs, hypo- or hyperdense lesions in the liver.
    for _ in range(int(rng.integers(0, 4))):
        host = organ_masks[int(rng.integers(len(organ_masks)))]
        candidates = np.flatnonzero(host)
        if candidates.size == 0:
            continue
        centre = candidates[int(rng.integers(candidates.size))]
        radius = rng.uniform(4, 15)
        lesion = host & _ellipse(x, y, x.flat[centre], y.flat[centre], radius, radius)
        if thorax:
            value = HU["soft"] + rng.uniform(-20, 20)
        else:
            value = HU["liver"] + rng.choice([-1.0, 1.0]) * rng.uniform(20, 60)
        paint(lesion, value, "lesion")
    # Partial volume: 2 x 2 average; labels at the pixel-centre sample.
    hu = hu.reshape(size_px, 2, size_px, 2).mean(axis=(1, 3))
    label = label[::2, ::2]
    noise_sigma = rng.uniform(8, 20)
    noise = gaussian_filter(rng.normal(size=hu.shape), 1.5)
    noise *= noise_sigma / max(noise.std(), 1e-12)
    texture = gaussian_filter(rng.normal(size=hu.shape), size_px / 8)
    texture *= 5.0 / max(np.abs(texture).max(), 1e-12)
    body = label != LABELS["air"]
    hu = hu + np.where(body, noise + texture, noise)
    return hu.astype(np.float32), label


def synthetic_slices(n: int, size_px: int, fov_mm: float, seed: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` slices; slice ``i`` uses the stream ``(seed, i)``."""
    hus, labels = [], []
    for i in range(n):  # one slice per iteration; each slice is vectorised
        hu, label = synthetic_slice(size_px, fov_mm, np.random.default_rng([seed, i]))
        hus.append(hu)
        labels.append(label)
    return hus, labels
