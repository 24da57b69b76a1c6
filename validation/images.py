"""Two engines' reconstructions of one phantom compared over noise realisations.

Every realisation of each engine is reconstructed as the image sets are (the dataset's
``recon`` settings), so what differs is only where the events came from. Per image:

* the **source ROI**: voxels whose truth (the phantom's activity averaged over each voxel,
  :func:`recon.truth.activity_concentration`) is at least ``ROI_LEVEL`` of its maximum,
  eroded by one voxel when that leaves at least ``MIN_ROI_VOXELS`` (the solution of a tube
  away from its walls; the line of a line source). Its mean and its voxel noise (CoV, the
  standard deviation over the mean of the ROI's voxels) are measured;
* every defect's CRC and CNR, as the reconstruction measured them
  (:mod:`recon.detectability`, the ``_defects.json`` written beside each image).

Over the realisations each measure has a mean and a standard error (standard deviation over
the square root of the number of realisations). The candidate engine passes a measure:

* ROI mean: relative difference of the means within ``ROI_MEAN_TOLERANCE`` (2 %);
* CoV: relative difference of the mean CoVs within ``COV_TOLERANCE`` (5 %);
* CRC and CNR of each defect: difference of the means within ``SE_SIGMAS`` combined
  standard errors (``sqrt(se_a^2 + se_b^2)``; at 2, identical engines fail about one
  measure in twenty by chance). A defect measured in fewer than two realisations of either
  engine has no standard error and gets the status ``not measured``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage

from recon.detectability import read_json
from recon.image_io import read_recon
from recon.truth import activity_concentration
from sim.phantoms.file import PhantomData

ROI_LEVEL = 0.9
MIN_ROI_VOXELS = 20
ROI_MEAN_TOLERANCE = 0.02
COV_TOLERANCE = 0.05
SE_SIGMAS = 2.0


def source_roi(truth: np.ndarray) -> np.ndarray:
    """The source ROI of a truth image (module docstring), bool of its shape."""
    roi = truth >= ROI_LEVEL * truth.max()
    eroded = scipy.ndimage.binary_erosion(roi)
    return eroded if eroded.sum() >= MIN_ROI_VOXELS else roi


@dataclass
class ImageMeasures:
    """One reconstruction's measures: source ROI mean and CoV, each defect's CRC and CNR
    (keyed ``"{label} {type}"``; NaN where the reconstruction could not measure it)."""

    roi_mean: float
    roi_cov: float
    defects: dict[str, tuple[float, float]]


def measure(recon_h5: str | Path, defects_json: str | Path, phantom: PhantomData,
            roi: np.ndarray | None = None) -> ImageMeasures:
    """The measures of one reconstruction; ``roi`` is computed from the phantom when not
    given (pass it to share it between images of one grid)."""
    recon = read_recon(recon_h5)
    if roi is None:
        roi = source_roi(activity_concentration(phantom, recon.grid))
    if roi.shape != recon.image.shape:
        raise ValueError(f"{recon_h5}: image shape {recon.image.shape}, the ROI's {roi.shape}")
    values = recon.image[roi].astype(np.float64)
    mean = float(values.mean())
    doc = read_json(defects_json)
    defects = {f"{int(r['label'])} {r['type']}": (float(r["crc"]), float(r["cnr"]))
               for r in doc["defects"]}
    return ImageMeasures(mean, float(values.std() / mean) if mean > 0 else float("nan"),
                         defects)


def _mean_se(values: list[float]) -> tuple[float, float, int]:
    """Mean, standard error and number of the finite values."""
    x = np.asarray([v for v in values if np.isfinite(v)], float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se, int(x.size)


def _relative_row(name: str, a: list[float], b: list[float], tolerance: float) -> dict:
    (ma, sa, _), (mb, sb, _) = _mean_se(a), _mean_se(b)
    rel = (mb - ma) / ma if ma else float("nan")
    se = np.hypot(sa, sb) / abs(ma) if ma else float("nan")
    return {"check": name, "reference": ma, "candidate": mb, "difference": rel,
            "statistic": rel / se if se else float("nan"),
            "criterion": f"|relative| <= {tolerance:g} (statistic: z)",
            "status": "pass" if abs(rel) <= tolerance else "fail"}


def _se_row(name: str, a: list[float], b: list[float]) -> dict:
    (ma, sa, na), (mb, sb, nb) = _mean_se(a), _mean_se(b)
    se = float(np.hypot(sa, sb))
    z = (mb - ma) / se if se > 0 else float("nan")
    if min(na, nb) < 2:
        status = "not measured"
    else:
        status = "pass" if abs(mb - ma) <= SE_SIGMAS * se else "fail"
    return {"check": name, "reference": ma, "candidate": mb, "difference": mb - ma,
            "statistic": z, "criterion": f"|difference| <= {SE_SIGMAS:g} combined standard "
                                         "errors (statistic: z)", "status": status}


def image_rows(reference: list[ImageMeasures], candidate: list[ImageMeasures]) -> list[dict]:
    """Rows comparing the measures of two engines' realisations (module docstring)."""
    rows = [
        _relative_row("source ROI mean", [m.roi_mean for m in reference],
                      [m.roi_mean for m in candidate], ROI_MEAN_TOLERANCE),
        _relative_row("source ROI voxel CoV", [m.roi_cov for m in reference],
                      [m.roi_cov for m in candidate], COV_TOLERANCE),
    ]
    names = sorted({k for m in reference + candidate for k in m.defects},
                   key=lambda k: int(k.split()[0]))
    for name in names:
        for index, measure_name in enumerate(("CRC", "CNR")):
            rows.append(_se_row(f"defect {name} {measure_name}",
                                [m.defects.get(name, (np.nan, np.nan))[index]
                                 for m in reference],
                                [m.defects.get(name, (np.nan, np.nan))[index]
                                 for m in candidate]))
    return rows
