"""Enhancement of low-count images (``enhance`` rule, ``results/{dataset}/enhance/``): pix2pix
against the classical answer, on the held-out pairs of ``positron.h5``.

For every (low-count, reference) pair of ``enhance.split`` (``test`` by default; never the
training split), four images of the slice are compared with its reference image and with
its truth image (the phantom's activity on the same pixels, ``truth`` of ``positron.h5``):

* ``low-count``: the low-count image as reconstructed;
* ``post-filtered``: the classical answer, the same image smoothed by a Gaussian whose FWHM
  is the one of ``enhance.post_filter_fwhm_px`` with the best mean PSNR to the reference on
  the validation pairs (chosen there, reported on the held-out split);
* ``pix2pix``: the trained U-Net's output (evaluation mode, deterministic);
* ``reference``: the long acquisition itself (against the truth only: the ceiling).

Every image is compared in the image sets' normalisation (each at its own maximum, values in
[-1, 1]; a filtered image is renormalised the same way), so PSNR and SSIM (scikit-image,
data range 2, 7 px window) measure shape, not count level. The defect CNR of a slice with a
defect is ``s (mean(defect) - mean(ring)) / std(ring)`` on its defect mask and the ring of
pixels 2 to 4 px around it inside the part (truth above its minimum), where ``s`` is the sign
of the same difference in the truth image: positive when the image shows the defect with its
true contrast (a cold bubble cold, a solution-filled pit warm), negative when it shows it
inverted, which a domain expert would call wrong however large the number; less the same
measure (same sign) at the **mirrored control**, the mask turned by 180 degrees about the
image centre (the tube's axis): a place at the same depth in the part without the defect, so
that what any image shows there (the roll-off of a blurred wall, noise) does not count as
seeing the defect. Slices whose control touches the defect are left out. Reported as the mean
over the slices, with the share of slices whose CNR the image raised over the low-count one.

The real-trained defect detector then scores the same slices as each kind shows them
(:mod:`models.evaluate.enhance_detection`): does enhancement raise detection, or only PSNR?

The classical answer in full would reconstruct the low-count data again with more iterations
and a post-filter; here the image sets' reconstruction (``recon`` settings) is kept and only
the post-filter is tuned, which the README states.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import binary_dilation, gaussian_filter  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from models.data.image_set import check_images, open_image_set  # noqa: E402
from models.data.labels import image_classes  # noqa: E402
from models.data.loaders import string_column  # noqa: E402
from models.evaluate.enhance_detection import detection_markdown, detection_rows  # noqa: E402
from models.training.generate import restore_final  # noqa: E402
from models.training.loop import sample_images  # noqa: E402
from pipeline.fileio import atomic_output  # noqa: E402
from recon.device import resolve_device  # noqa: E402

log = logging.getLogger(__name__)

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
DATA_RANGE = 2.0
SSIM_WINDOW_PX = 7
RING_PX = (2, 4)
ROWS = ("low-count", "post-filtered", "pix2pix", "reference")


def held_out_pairs(positron_h5: Path, split: str) -> dict[str, np.ndarray]:
    """Low-count, reference and truth images (n, H, W), defect masks (n, H, W) bool and the
    defect class (n,) of the pairs of ``split``."""
    with open_image_set(positron_h5, "positron image set") as f:
        for name in ("images", "pairs", "split", "truth", "masks"):
            if name not in f:
                raise ValueError(f"{positron_h5}: missing dataset {name}; enhancement needs "
                                 "pairs, truth images and masks (rebuild the image set)")
        pairs = f["pairs"][...]
        splits = string_column(f["split"])
        keep = pairs[splits[pairs[:, 1]] == split] if len(pairs) else pairs
        if len(keep) == 0:
            raise ValueError(f"{positron_h5}: no (low-count, reference) pair in the {split} "
                             "split (enhance.split)")
        rows = np.unique(keep.ravel())
        read = {name: f[name][rows] for name in ("images", "truth")}
        for name, stack in read.items():  # NaN or unnormalised images: refused, not scored
            check_images(positron_h5, stack, dataset=name, rows=rows)
        images = dict(zip(rows.tolist(), read["images"], strict=True))
        truth = dict(zip(rows.tolist(), read["truth"], strict=True))
        masks = dict(zip(rows.tolist(), f["masks"][rows] > 0, strict=True))
    classes = image_classes(positron_h5)[keep[:, 1]]
    low = np.stack([images[r] for r in keep[:, 0]]).astype(np.float64)
    ref = np.stack([images[r] for r in keep[:, 1]]).astype(np.float64)
    return {"low": low, "reference": ref,
            "truth": np.stack([truth[r] for r in keep[:, 1]]).astype(np.float64),
            "masks": np.stack([masks[r] for r in keep[:, 1]]), "classes": classes}


def renormalise(activity: np.ndarray) -> np.ndarray:
    """Images (n, H, W) of non-negative values at their own maximum, in [-1, 1]."""
    peak = activity.reshape(len(activity), -1).max(axis=1)
    return 2.0 * activity / np.where(peak > 0, peak, 1.0)[:, None, None] - 1.0


def post_filter(images: np.ndarray, fwhm_px: float) -> np.ndarray:
    """Normalised images (n, H, W) smoothed in activity by a Gaussian of ``fwhm_px`` (per
    image, not across images) and renormalised."""
    if fwhm_px <= 0:
        return images.copy()
    activity = (images + 1.0) / 2.0
    sigma = fwhm_px / FWHM_PER_SIGMA
    return renormalise(gaussian_filter(activity, sigma=(0, sigma, sigma), mode="nearest"))


def psnr(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each image against its target, data range 2."""
    return np.asarray([peak_signal_noise_ratio(t, i, data_range=DATA_RANGE)
                       for i, t in zip(images, targets, strict=True)])


def ssim(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """SSIM of each image against its target (scikit-image, Gaussian-free 7 px window)."""
    return np.asarray([structural_similarity(t, i, data_range=DATA_RANGE,
                                             win_size=SSIM_WINDOW_PX)
                       for i, t in zip(images, targets, strict=True)])


def _ring(mask: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Pixels 2 to 4 px (taxicab) around ``mask``, inside ``part``."""
    inner, outer = RING_PX
    return (binary_dilation(mask, iterations=outer) & ~binary_dilation(mask, iterations=inner)
            & part)


def _signed_cnr(image: np.ndarray, inside: np.ndarray, ring: np.ndarray, sign: float) -> float:
    if ring.sum() < 4 or not inside.any() or image[ring].std() == 0:
        return float("nan")
    return float(sign * (image[inside].mean() - image[ring].mean()) / image[ring].std())


def defect_cnr(images: np.ndarray, masks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CNR (n,) of the defect of each image, signed by the truth's contrast and less the same
    measure at the mirrored control (module docstring); NaN without a defect, a usable ring,
    a contrast in the truth or a control clear of the defect."""
    out = np.full(len(images), np.nan)
    outer = RING_PX[1]
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):  # slices, not pixels
        if not mask.any():
            continue
        part = truth[i] > truth[i].min() + 1e-6
        ring = _ring(mask, part)
        if ring.sum() < 4:
            continue
        sign = np.sign(truth[i][mask].mean() - truth[i][ring].mean())
        control = np.rot90(mask, 2)
        if sign == 0 or (binary_dilation(control, iterations=outer) & mask).any():
            continue
        out[i] = (_signed_cnr(image, mask, ring, sign)
                  - _signed_cnr(image, control, _ring(control, part), sign))
    return out


def choose_fwhm(positron_h5: Path, candidates: list[float]) -> tuple[float, dict[str, float]]:
    """The candidate FWHM with the best mean PSNR to the reference on the validation pairs
    (the smallest candidate when there is no validation pair), and every candidate's PSNR."""
    try:
        val = held_out_pairs(positron_h5, "val")
    except ValueError:
        return float(min(candidates)), {}
    scores = {str(f): float(psnr(post_filter(val["low"], f), val["reference"]).mean())
              for f in candidates}
    best = max(candidates, key=lambda f: scores[str(f)])
    return float(best), scores


def enhance_images(model_pt: Path, low: np.ndarray, device: str) -> np.ndarray:
    """pix2pix outputs (n, H, W) of normalised low-count images (n, H, W)."""
    method, state = restore_final(model_pt, "pix2pix")
    if method.data != "paired":
        raise ValueError(f"{model_pt}: method {state['method']} does not enhance paired images")
    size = int(state["arch"]["image_size"])
    if low.shape[-1] != size:
        raise ValueError(f"{model_pt} enhances {size} px images, the pairs are {low.shape[-1]} px")
    method.to(resolve_device(device))
    inputs = {"low": torch.from_numpy(low.astype(np.float32))[:, None]}
    return sample_images(method, inputs)[:, 0].numpy().astype(np.float64)


def summarise(images: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> list[dict]:
    """One row per image kind: PSNR and SSIM to the reference and to the truth (mean and
    standard error), the mean defect CNR and the share of slices with a higher CNR than the
    low-count image."""
    base = defect_cnr(data["low"], data["masks"], data["truth"])
    rows = []
    for name, x in images.items():
        row: dict[str, Any] = {"images": name, "n_pairs": len(x)}
        for target in ("reference", "truth"):
            if name == "reference" and target == "reference":
                row.update({f"psnr_{target}": float("nan"), f"ssim_{target}": float("nan"),
                            f"psnr_{target}_se": float("nan"), f"ssim_{target}_se": float("nan")})
                continue
            for metric, fn in (("psnr", psnr), ("ssim", ssim)):
                v = fn(x, data[target])
                row[f"{metric}_{target}"] = float(v.mean())
                row[f"{metric}_{target}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(
                    v) > 1 else 0.0
        cnr = defect_cnr(x, data["masks"], data["truth"])
        ok = np.isfinite(cnr) & np.isfinite(base)
        row["defect_cnr"] = float(np.mean(cnr[ok])) if ok.any() else float("nan")
        row["defect_cnr_se"] = float(np.std(cnr[ok], ddof=1) / np.sqrt(ok.sum())) if ok.sum(
        ) > 1 else float("nan")
        row["cnr_raised_share"] = float(np.mean(cnr[ok] > base[ok])) if ok.any() else float(
            "nan")
        row["n_defect_slices"] = int(ok.sum())
        rows.append(row)
    return rows


def _markdown(rows: list[dict], fwhm: float, split: str) -> str:
    head = ("| images | PSNR to reference (dB) | SSIM to reference | PSNR to truth (dB) | "
            "SSIM to truth | defect CNR | CNR raised (share of slices) |\n|---|---|---|---|---|"
            "---|---|\n")

    def cell(row, key, digits):
        v = row[key]
        if not np.isfinite(v):
            return "n/a"
        se = row.get(f"{key}_se")
        return f"{v:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None and np.isfinite(
            se) else "")

    body = "".join(
        f"| {r['images']} | {cell(r, 'psnr_reference', 2)} | {cell(r, 'ssim_reference', 3)} | "
        f"{cell(r, 'psnr_truth', 2)} | {cell(r, 'ssim_truth', 3)} | {cell(r, 'defect_cnr', 2)} "
        f"| {cell(r, 'cnr_raised_share', 2)} |\n" for r in rows)
    n, d = rows[0]["n_pairs"], rows[0]["n_defect_slices"]
    return (f"# Enhancement: {split} split\n\n{head}{body}\n{n} (low-count, reference) pairs of "
            f"the {split} split, {d} with a measurable defect. Post-filter: Gaussian of "
            f"{fwhm:g} px FWHM (best PSNR to the reference on the validation pairs). Mean ± "
            "standard error over slices; images at their own maximum in [-1, 1], PSNR and "
            f"SSIM with data range 2 ({SSIM_WINDOW_PX} px window). Defect CNR: (defect - ring) / "
            f"std(ring), ring {RING_PX[0]}-{RING_PX[1]} px around the mask inside the part, "
            "signed so that the truth's contrast is positive (negative: the defect shown "
            "inverted), less the same measure at the mask turned by 180 degrees about the "
            "tube axis (0: the image shows nothing at the defect that it does not show "
            "elsewhere at that depth).\n")


def write_figure(path: Path, images: dict[str, np.ndarray], data: dict[str, np.ndarray],
                 n: int = 4) -> None:
    """Before/after panels: slices with the largest defects first (rows), low-count,
    post-filtered, pix2pix, reference and truth (columns), defect outlines in red."""
    order = np.argsort(-data["masks"].reshape(len(data["masks"]), -1).sum(1))[:n]
    columns = [*images.items(), ("truth", data["truth"])]
    fig, axes = plt.subplots(len(order), len(columns), figsize=(2.0 * len(columns),
                                                                2.0 * len(order)), squeeze=False)
    for r, i in enumerate(order):
        for c, (name, x) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(x[i], cmap="inferno", vmin=-1, vmax=1, origin="lower")
            if data["masks"][i].any():
                ax.contour(data["masks"][i], levels=[0.5], colors="red", linewidths=0.6,
                           origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle("Enhancement of held-out low-count slices (defect outlines in red)", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_enhance(spec: dict[str, Any], positron_h5: str | Path, model_pt: str | Path,
                out_dir: str | Path, overwrite: bool = False) -> list[dict]:
    """Write ``enhance.csv``, ``enhance.md``, ``enhance.json`` and ``enhance.png``."""
    positron_h5, model_pt, out_dir = Path(positron_h5), Path(model_pt), Path(out_dir)
    names = ("enhance.csv", "enhance.md", "enhance.json", "enhance.png")
    for name in names:
        if (out_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{out_dir / name} exists; pass --overwrite to replace it")
    cfg = spec["enhance"]
    candidates = [float(f) for f in cfg["post_filter_fwhm_px"]]
    if not candidates or not all(np.isfinite(f) and f >= 0 for f in candidates):
        raise ValueError(f"config key enhance.post_filter_fwhm_px: {cfg['post_filter_fwhm_px']}"
                         " must be finite numbers >= 0")
    data = held_out_pairs(positron_h5, cfg["split"])
    fwhm, scores = choose_fwhm(positron_h5, candidates)
    images = {"low-count": data["low"], "post-filtered": post_filter(data["low"], fwhm),
              "pix2pix": enhance_images(model_pt, data["low"], spec["device"]),
              "reference": data["reference"]}
    rows = summarise(images, data)
    detection = detection_rows(spec, positron_h5, images, data["classes"])
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [k for k in rows[0] if k != "images"]
    with atomic_output(out_dir / "enhance.csv", overwrite=True) as tmp:
        Path(tmp).write_text("images," + ",".join(keys) + "\n" + "".join(
            f"{r['images']}," + ",".join(f"{r[k]:.6g}" for k in keys) + "\n" for r in rows))
    with atomic_output(out_dir / "enhance.md", overwrite=True) as tmp:
        Path(tmp).write_text(_markdown(rows, fwhm, cfg["split"])
                             + detection_markdown(detection))
    with atomic_output(out_dir / "enhance.json", overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps({"rows": rows, "detection": detection,
                                         "post_filter_fwhm_px": fwhm,
                                         "validation_psnr_by_fwhm": scores,
                                         "split": cfg["split"], "model": str(model_pt)},
                                        indent=2))
    write_figure(out_dir / "enhance.png", images, data)
    for r in rows:
        log.info("%s: PSNR %.2f dB to reference, %.2f dB to truth; defect CNR %.2f",
                 r["images"], r["psnr_reference"], r["psnr_truth"], r["defect_cnr"])
    return rows
