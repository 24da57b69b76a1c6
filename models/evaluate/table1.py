"""Table 1 of the seed paper as a product of the DAG (``evaluate`` rule, ``results/{dataset}/
eval/``): every trained method's generated set against the real **held-out** images
(``evaluate.held_out_split``), next to sanity rows computed the same way.

Rows: each method of ``train.methods`` (its ``generated/{method}.h5``; the mean over
``evaluate.seeds`` when several), then ``real ({split})``: the real images of the other
held-out split (the floor: new real images, what a perfect generator would reach), ``noise``
(uniform pixels in [-1, 1]) and ``blurred mean`` (the mean training image, Gaussian-blurred
by 2 px, repeated): the ceiling of bad generators. Real images are those of
``train.acquisition`` (the images the methods learned). Every row holds the same number of
images (``evaluate.sample_size``, or the smallest set's size): a seeded subsample of each
set, because Fréchet distance and coverage depend on the sample size.

Columns (:mod:`models.metrics`): MS-SSIM diversity (mean over random pairs within the set;
lower is more diverse; compare with the real rows), MS-SSIM to real (random pairs of one
image of the set and one held-out image), the domain-feature Fréchet distance and kernel
distance (KID x 10^3: the unbiased squared MMD of the whole sets, with its standard deviation
over ``kid_subsets`` subsets as torchmetrics reports it) to the held-out images, memorisation
(Fréchet distance to the training images minus to the held-out ones), precision, recall,
density and coverage against the held-out vectors, the copy share by pixel and by feature
nearest neighbours and the data-copying z-score by features (nearest-training distances
against the held-out images' own), and the training throughput (mean images/s of
``history.csv``). The feature columns carry bootstrap intervals over phantoms and the caption
states the rankings they support (:mod:`models.evaluate.intervals`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from models.data.image_set import check_images, open_image_set
from models.data.loaders import PositronImages
from models.evaluate.attention_usage import attention_usage, usage_sentence
from models.evaluate.feature_network import (
    INFORMATIVE_AUC,
    embed,
    load_feature_network,
    random_feature_network,
)
from models.evaluate.intervals import (
    INTERVAL_COLUMNS,
    FeatureSet,
    bootstrap_intervals,
    feature_scores,
    ranking_sentence,
    separated_pairs,
)
from models.methods import method_class
from models.metrics.distances import frechet_distance, kernel_distance
from models.metrics.memorisation import copy_statistics, nearest
from models.metrics.msssim import check_scales, mean_ms_ssim, scale_weights
from models.nets.feature_cnn import FeatureCNN
from models.training.history import read_history
from models.training.stage import sampling_sources
from pipeline.fileio import atomic_output, decoded_attrs

log = logging.getLogger(__name__)

#: The sanity rows after the methods; the first is the real images of the split that is
#: neither the training nor the held-out one (``real (val)`` or ``real (test)``).
SANITY_ROWS = ("real", "noise", "blurred mean")
BLUR_PX = 2.0

COLUMNS = [
    ("method", "method", None),
    ("msssim_diversity", "MS-SSIM diversity", 4),
    ("msssim_to_real", "MS-SSIM to held-out", 4),
    ("l1_diversity", "pairwise L1 (pixels)", 3),
    ("frechet", "Fréchet distance to held-out (domain features)", 3),
    ("kid_x1e3", "KID x 10^3 to held-out (domain features)", 2),
    ("kid_std_x1e3", "KID std x 10^3 (subsets)", 2),
    ("memorisation", "memorisation (Fréchet to train - to held-out)", 3),
    ("frechet_random", "Fréchet distance to held-out (untrained features)", 3),
    ("precision", "precision", 3),
    ("recall", "recall", 3),
    ("density", "density", 3),
    ("coverage", "coverage", 3),
    ("copy_share_pixels", "copy share (pixels)", 3),
    ("copy_share", "copy share (features)", 3),
    ("copy_z", "data-copying z (features)", 2),
    ("images_per_s", "training images/s", 1),
    ("detector_auc_real_plus", "detector AUC, real + generated", 3),
    ("detector_delta_auc", "Δ AUC vs real only", 3),
    ("detector_auc_only", "detector AUC, generated only", 3),
]
#: Table 1's downstream columns (:mod:`models.evaluate.downstream`), NaN for a method whose
#: images carry no labels and for the sanity rows.
DOWNSTREAM_COLUMNS = ("detector_auc_real_plus", "detector_delta_auc", "detector_auc_only")


@dataclass(frozen=True)
class EvalSettings:
    """The ``evaluate`` config section, parsed (``config/schema.yaml``)."""

    msssim_scales: int
    msssim_window_px: int
    msssim_sigma_px: float
    msssim_pairs: int
    kid_subset_size: int
    kid_subsets: int
    prdc_k: int
    copy_quantile: float
    held_out_split: str
    walk_steps: int
    seed: int
    inception_weights: str | None = None
    sample_size: int | None = None
    bootstrap: int = 200

    @classmethod
    def from_section(cls, s: dict[str, Any]) -> EvalSettings:
        m = s["msssim"]
        return cls(int(m["scales"]), int(m["window_px"]), float(m["sigma_px"]), int(m["pairs"]),
                   int(s["kid_subset_size"]), int(s["kid_subsets"]), int(s["prdc_k"]),
                   float(s["copy_quantile"]), str(s["held_out_split"]), int(s["walk_steps"]),
                   int(s["seed"]), s.get("inception_weights"),
                   None if s.get("sample_size") is None else int(s["sample_size"]),
                   int(s.get("bootstrap", 200)))

    @property
    def floor_split(self) -> str:
        """The real split of the floor row: held out, but not the one compared against."""
        return "val" if self.held_out_split == "test" else "test"

    def msssim_kwargs(self) -> dict[str, Any]:
        return {"scales": self.msssim_scales, "window_px": self.msssim_window_px,
                "sigma_px": self.msssim_sigma_px}


def real_images(positron_h5: Path, split: str, acquisition: str | None) -> np.ndarray:
    """Images (N, H, W) of one split (and acquisition) of ``positron.h5``."""
    data = PositronImages(positron_h5, split, acquisition=acquisition)
    if len(data) == 0:
        raise ValueError(f"{positron_h5}: no {acquisition or ''} images in the {split} split")
    return data.batch(np.arange(len(data)))[:, 0].numpy().astype(np.float64)


def read_generated(path: Path, positron_attrs: dict[str, Any]) -> np.ndarray:
    """A generated set's images, checked against the real set: same size, same
    normalisation, finite values in [-1, 1]."""
    with open_image_set(path, "generated image set") as f:
        if "images" not in f:
            raise ValueError(f"{path}: missing dataset images (not a generated set)")
        images = f["images"][...]
        attrs = decoded_attrs(f)
    check_images(path, images)  # the image-set contract: float, finite, in [-1, 1]
    size = int(positron_attrs.get("size_px", images.shape[-1]))
    if images.shape[1:] != (size, size):
        raise ValueError(f"{path}: images of shape {images.shape[1:]}, but the real set's are "
                         f"{size} x {size} px")
    if attrs.get("normalisation") != positron_attrs.get("normalisation"):
        raise ValueError(f"{path}: attribute normalisation differs from the real set's "
                         "(generated from another positron.h5?)")
    images = images.astype(np.float64)
    return images


@dataclass(frozen=True)
class FeatureSpace:
    """One feature space's vectors: of the training images, of the held-out images (with
    their phantoms) and of every compared set, each divided by the training vectors' RMS
    (so the cubic kernel of KID sees vectors of unit size, as Inception's pool features
    roughly are, whatever the network)."""

    name: str
    train: np.ndarray
    held: FeatureSet
    sets: dict[str, FeatureSet]


def feature_space(name: str, net: FeatureCNN, train: np.ndarray, held: np.ndarray,
                  held_phantoms: np.ndarray,
                  images: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> FeatureSpace:
    """The vectors of ``net`` (the trained domain network, or the untrained one) for the
    training and held-out images and every set of ``images`` (name: images (N, H, W) and
    their phantoms, None for generated images)."""
    train_features = embed(net, train)
    scale = float(np.sqrt(np.mean(train_features**2))) or 1.0
    return FeatureSpace(name, train_features / scale,
                        FeatureSet(embed(net, held) / scale, held_phantoms),
                        {k: FeatureSet(embed(net, v) / scale, p) for k, (v, p) in images.items()})


def common_size(s: EvalSettings, sizes: dict[str, int]) -> int:
    """Images every row holds: ``evaluate.sample_size``, or the smallest set's size
    (``sizes``: images of each set by name)."""
    name = min(sizes, key=sizes.get)
    if s.sample_size is None:
        return sizes[name]
    if s.sample_size > sizes[name]:
        raise ValueError(f"config key evaluate.sample_size: {s.sample_size} exceeds the "
                         f"smallest set ({name}: {sizes[name]} images); lower it, or null for "
                         "the smallest set's size")
    return s.sample_size


def subsample_index(n: int, size: int, seed: int, name: str) -> np.ndarray:
    """Sorted indices of a seeded choice of ``size`` of ``n`` images (all when ``size`` >=
    ``n``), the same for the same set ``name`` (so its labels follow its images)."""
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return np.sort(rng.choice(n, size, replace=False))


def sanity_sets(train: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    """The ceiling rows: uniform noise, and the blurred mean training image repeated."""
    rng = np.random.default_rng(seed)
    blurred = gaussian_filter(train.mean(axis=0), BLUR_PX)
    return {"noise": rng.uniform(-1, 1, (n, *train.shape[1:])),
            "blurred mean": np.repeat(blurred[None], n, axis=0)}


def pairwise_l1(images: np.ndarray, pairs: int, seed: int) -> float:
    """Mean absolute pixel difference of ``pairs`` random pairs of distinct images of a set
    (N, H, W): its spread in pixels (0 for one image repeated)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(images), pairs)
    j = (i + rng.integers(1, len(images), pairs)) % len(images)  # never the image itself
    return float(np.abs(images[i] - images[j]).mean())


def set_metrics(images: np.ndarray, features: np.ndarray, held: np.ndarray,
                held_features: FeatureSet, train: np.ndarray, train_features: np.ndarray,
                held_out_nn: dict[str, np.ndarray], s: EvalSettings) -> dict[str, float]:
    """Every column of Table 1 but the throughput, for one set of images (N, H, W) and their
    features (N, d): MS-SSIM and the feature distances against the held-out images ``held``
    and their features, memorisation and the copy test against the training images."""
    kw = s.msssim_kwargs()
    diversity, diversity_se = mean_ms_ssim(images, None, s.msssim_pairs, s.seed, **kw)
    to_real, to_real_se = mean_ms_ssim(images, held, s.msssim_pairs, s.seed + 1, **kw)
    _, kid_std = kernel_distance(features, held_features.features, s.kid_subset_size,
                                 s.kid_subsets, s.seed)
    _, nn_pixels = nearest(images, train, "pixels")
    _, nn_features = nearest(features, train_features, "features")
    pixels = copy_statistics(nn_pixels, held_out_nn["pixels"], s.copy_quantile)
    return {"msssim_diversity": diversity, "msssim_diversity_se": diversity_se,
            "l1_diversity": pairwise_l1(images, s.msssim_pairs, s.seed),
            "msssim_to_real": to_real, "msssim_to_real_se": to_real_se,
            **feature_scores(FeatureSet(features), held_features, train_features, s.prdc_k),
            "kid_std_x1e3": 1e3 * kid_std,
            **copy_statistics(nn_features, held_out_nn["features"], s.copy_quantile),
            "copy_share_pixels": pixels["copy_share"], "copy_z_pixels": pixels["copy_z"],
            "nn_pixels_median": float(np.median(nn_pixels)),
            "nn_features_median": float(np.median(nn_features)), "n_images": len(images)}


def read_labels(path: Path) -> np.ndarray | None:
    """Class numbers (N,) of a generated set, or None for a set without labels."""
    with open_image_set(path, "generated image set") as f:
        return f["labels"][...].astype(np.int64) if "labels" in f else None


def per_class_rows(method: str, images: np.ndarray, labels: np.ndarray,
                   held_labels: np.ndarray, held_features: np.ndarray,
                   features: np.ndarray, agreement: dict[str, float] | None,
                   s: EvalSettings) -> list[dict[str, Any]]:
    """One row per class a conditional method generated: images, held-out images of the
    class, the domain-feature Fréchet distance between the two (NaN below 2 images on a
    side), MS-SSIM diversity within the class and the real-trained detector's class
    agreement."""
    from models.data.labels import DEFECT_CLASSES

    rows = []
    for k in np.unique(labels):
        mine, real = labels == k, held_labels == k
        frechet = (frechet_distance(features[mine], held_features[real])
                   if mine.sum() > 1 and real.sum() > 1 else float("nan"))
        diversity = (mean_ms_ssim(images[mine], None, min(s.msssim_pairs, 200), s.seed,
                                  **s.msssim_kwargs())[0] if mine.sum() > 1 else float("nan"))
        name = DEFECT_CLASSES[int(k)]
        rows.append({"method": method, "class": name, "n_generated": int(mine.sum()),
                     "n_held_out": int(real.sum()), "frechet": frechet,
                     "msssim_diversity": diversity,
                     "class_agreement": float("nan") if agreement is None else float(
                         agreement.get(name, float("nan")))})
    return rows


def per_class_markdown(rows: list[dict[str, Any]], call_rate: dict[str, float] | None) -> str:
    if not rows:
        return ""
    def f(v, d):
        return "n/a" if not np.isfinite(v) else f"{v:.{d}f}"

    lines = ["| method | class | generated | real (held-out) | Fréchet distance (class) | "
             "MS-SSIM diversity | class agreement | detector's rate on real |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = float("nan") if call_rate is None else call_rate.get(r["class"], float("nan"))
        lines.append(f"| {r['method']} | {r['class']} | {r['n_generated']} | {r['n_held_out']} | "
                     f"{f(r['frechet'], 3)} | {f(r['msssim_diversity'], 4)} | "
                     f"{f(r['class_agreement'], 2)} | {f(rate, 2)} |")
    return ("\n## Per class (conditional methods)\n\n" + "\n".join(lines) + "\n\nFréchet "
            "distance between the generated images of a class and the real held-out images of "
            "that class (domain features as above; n/a below 2 images on a side). Class "
            "agreement: the share of the images generated to a class that the detectors "
            "trained on real images only (downstream test) call that class; compare it with "
            "the rate at which those detectors call that class on real held-out images.\n")


def aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every number over training runs, with ``{key}_std`` (sample standard
    deviation; 0 for one run) and ``n_runs``."""
    out: dict[str, float] = {"n_runs": len(runs)}
    for key in runs[0]:
        values = np.asarray([r[key] for r in runs], np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def throughput(history_csv: Path | None) -> float:
    """Mean training images/s of a ``history.csv`` (NaN without one)."""
    if history_csv is None or not Path(history_csv).is_file():
        return float("nan")
    rows = read_history(history_csv)
    values = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return float(np.mean(values)) if values else float("nan")


def format_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """CSV and Markdown text of the rows: every number, its spread over seeds (``_std``) and
    its bootstrap interval (``_lo``, ``_hi``; Markdown ``[lo, hi]``) where it has one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    numeric = [key for key, _, digits in COLUMNS if digits is not None]
    bounds = [f"{k}_{end}" for k in (*INTERVAL_COLUMNS, "frechet_random")
              for end in ("lo", "hi")]
    writer.writerow(["method", "n_runs", "n_images", *numeric, *(f"{k}_std" for k in numeric),
                     *bounds])
    for row in rows:
        writer.writerow([row["method"], int(row.get("n_runs", 1)), int(row["n_images"]),
                         *(f"{row[k]:.{d + 2}g}" for k, _, d in COLUMNS if d is not None),
                         *(f"{row.get(k + '_std', 0.0):.3g}" for k in numeric),
                         *(f"{row.get(k, float('nan')):.4g}" for k in bounds)])
    md = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
          "|" + "---|" * len(COLUMNS)]
    def cell(row: dict[str, Any], key: str, digits: int | None) -> str:
        if digits is None:
            runs = int(row.get("n_runs", 1))
            return str(row[key]) + (f" ({runs} seeds)" if runs > 1 else "")
        if not np.isfinite(row[key]):
            return "n/a"
        text = f"{row[key]:.{digits}f}"
        spread = row.get(key + "_std", float("nan"))
        if row.get("n_runs", 1) > 1 and key != "kid_std_x1e3" and np.isfinite(spread):
            text += f" ± {spread:.{digits}f}"
        lo, hi = row.get(key + "_lo", float("nan")), row.get(key + "_hi", float("nan"))
        if np.isfinite(lo) and np.isfinite(hi):
            text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
        return text

    for row in rows:
        md.append("| " + " | ".join(cell(row, key, digits) for key, _, digits in COLUMNS)
                  + " |")
    return buffer.getvalue(), "\n".join(md) + "\n"


def rankings(rows: list[dict[str, Any]], ranked: list[str], presence_auc: float) -> str:
    """The sentences saying which of the ``ranked`` rows (the methods and the real floor
    row) the bootstrap intervals separate: Fréchet distance, KID and coverage on the domain
    features (only when their held-out defect-presence AUC reaches :data:`INFORMATIVE_AUC`),
    Fréchet distance on the untrained features, and the pairs whose order flips between the
    two spaces."""
    by = {r["method"]: r for r in rows if r["method"] in ranked}

    def points(key: str) -> dict[str, float]:
        return {n: r[key] for n, r in by.items()}

    def spans(key: str) -> dict[str, tuple[float, float]]:
        return {n: (r[key + "_lo"], r[key + "_hi"]) for n, r in by.items()}

    out = []
    if np.isfinite(presence_auc) and presence_auc >= INFORMATIVE_AUC:
        titles = {"frechet": "Fréchet distance to held-out", "kid_x1e3": "KID to held-out",
                  "coverage": "coverage of held-out"}
        out += [ranking_sentence(title, points(key), spans(key), INTERVAL_COLUMNS[key])
                for key, title in titles.items()]
    else:
        out.append(f"The domain features do not see defects (held-out defect-presence AUC "
                   f"{presence_auc:.3f}, below {INFORMATIVE_AUC}): no ranking on them.")
    out.append(ranking_sentence("Fréchet distance on untrained features",
                                points("frechet_random"), spans("frechet_random"), True))
    domain = set(separated_pairs(points("frechet"), spans("frechet"), True))
    untrained = set(separated_pairs(points("frechet_random"), spans("frechet_random"), True))
    flips = sorted((a, b) for a, b in domain if (b, a) in untrained)
    out.append("Fréchet orders that flip between the two feature spaces: " + (
        "; ".join(f"{a} before {b} on domain features, after on untrained ones"
                  for a, b in flips) if flips else "none") + ".")
    return " ".join(out)


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is one."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def caption(s: EvalSettings, size_px: int, n_train: int, held: tuple[int, int],
            floor: tuple[int, int], n_images: int, feature_report: dict,
            acquisition: str | None) -> str:
    """What the table's numbers are, in words (printed under it). ``held`` and ``floor``:
    (images, phantoms) of the held-out split and of the floor row's split."""
    weights = ", ".join(f"{w:.4f}" for w in scale_weights(s.msssim_scales))
    report = feature_report["held_out"]
    if s.bootstrap == 0:
        intervals = "No intervals: the bootstrap is off (evaluate.bootstrap 0); no ranking."
    elif held[1] < 2:
        intervals = (f"No intervals: the held-out split holds {held[1]} phantom, and the "
                     "spread between phantoms needs at least 2; no ranking.")
    else:
        intervals = (f"In brackets: 2.5-97.5 percentiles over {s.bootstrap} bootstrap "
                     f"resamples of the {held[1]} held-out phantoms (the real floor row's "
                     "phantoms resampled too, generated images by image; several seeds: the "
                     "interval of their mean).")
    return (
        f"Every row: {n_images} images (evaluate.sample_size, or the smallest set; a seeded "
        f"subsample). Compared against {held[0]} held-out ({s.held_out_split}) images of "
        f"{counted(held[1], 'phantom')}; " + (
            f"the real floor row: {floor[0]} of the {s.floor_split} images of "
            f"{counted(floor[1], 'phantom')}, subsampled to {n_images}; " if floor[0] else
            f"no real floor row: the {s.floor_split} split holds no image; ") +
        f"{n_train} training images. "
        f"{acquisition or 'all'} images of {size_px} px. " + intervals + " MS-SSIM: data range "
        f"2 (images in [-1, 1]), {s.msssim_scales} scales, {s.msssim_window_px} px Gaussian "
        f"window (sigma {s.msssim_sigma_px} px), weights {weights}, mean over {s.msssim_pairs} "
        "random pairs; diversity within the set (lower is more diverse), to held-out between "
        "the set and the held-out images. Fréchet and kernel distances are on the features of "
        f"the domain feature network trained here ({len(feature_report['classes'])} classes, "
        f"held-out accuracy {report['accuracy']:.3f} against a majority-class rate of "
        f"{report['majority_rate']:.3f}): domain-feature distances, not FID, not comparable "
        "with published FIDs. KID: unbiased squared MMD of the whole sets; its std over "
        f"{s.kid_subsets} subsets of {s.kid_subset_size}. Memorisation: Fréchet distance to the "
        "training images minus to the held-out ones (near 0 for new images; negative: nearer "
        "the training images; the real floor row gives its scale). Precision, recall, density, "
        f"coverage: Naeem et al. 2020, k = {s.prdc_k}, against the held-out vectors. Features "
        "are divided by the training features' RMS. Copy share: generated images nearer a "
        f"training image than {100 * s.copy_quantile:.0f} % of held-out images are, by mean "
        "absolute pixel difference and by feature distance (pixels favour blur: the blurred "
        "mean image is nearer every training image than any real image is); data-copying z: "
        "Mann-Whitney z of the feature distances against the held-out ones (below -3: "
        "copying; above 3: farther from the training images than new real images). "
        + ("Standard FID: torchmetrics with the Inception weights of evaluate."
           "inception_weights, against the held-out images." if s.inception_weights else
           "Standard FID (Inception) skipped: no Inception weights are downloaded here, and "
           "evaluate.inception_weights is not set."))


def inception_fid(weights: str, real: np.ndarray, fake: np.ndarray) -> float:
    """Standard FID through torchmetrics (Inception-v3 of torch-fidelity, local weights);
    images in [-1, 1] as three equal channels in [0, 1]."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, normalize=True,
                                   feature_extractor_weights_path=weights)
    for images, is_real in ((real, True), (fake, False)):
        x = torch.from_numpy((np.asarray(images, np.float32) + 1) / 2)[:, None].repeat(1, 3, 1, 1)
        fid.update(x, real=is_real)
    return float(fid.compute())


def check_inception(weights: str | None) -> None:
    """A set ``evaluate.inception_weights`` must name a file and find its libraries, checked
    before any work."""
    if not weights:
        return
    if not Path(weights).is_file():
        raise FileNotFoundError(f"config key evaluate.inception_weights: {weights} does not "
                                "exist")
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"config key evaluate.inception_weights is set, but the standard FID "
                         f"needs torchmetrics[image] and torch-fidelity ({exc}); unset it or "
                         "install them (torch-fidelity imports torchvision)") from None


def _read_downstream(path: str | Path | None) -> dict[str, Any] | None:
    """The downstream test's results (``downstream.json``), or None without one."""
    if path is None:
        return None
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a downstream.json of the downstream rule ({exc})"
                         ) from None
    fields = ("training_set", "auc", "delta_auc")
    if (not isinstance(data, dict) or not isinstance(data.get("rows"), list)
            or "class_agreement" not in data
            or any(not isinstance(r, dict) or not all(k in r for k in fields[:2])
                   for r in data["rows"])):
        raise ValueError(f"{path}: not a downstream.json of the downstream rule (needs rows "
                         "with training_set and auc, and class_agreement)")
    return data


def _downstream_columns(downstream: dict[str, Any] | None, method: str) -> dict[str, float]:
    """A method's Table 1 downstream columns (NaN when it was not in the test)."""
    out = dict.fromkeys(DOWNSTREAM_COLUMNS, float("nan"))
    if downstream is None:
        return out
    by_set = {r["training_set"]: r for r in downstream["rows"]}
    if f"real + {method}" in by_set:
        out["detector_auc_real_plus"] = by_set[f"real + {method}"]["auc"]
        out["detector_delta_auc"] = by_set[f"real + {method}"].get("delta_auc", float("nan"))
        out["detector_auc_only"] = by_set[f"{method} only"]["auc"]
    return out


def downstream_caption(downstream: dict[str, Any] | None) -> str:
    """The sentence under Table 1 about its detector columns."""
    if downstream is None:
        return (" Detector columns: n/a, the downstream test did not run (downstream.enabled "
                "or no labelled method).")
    real = next(r for r in downstream["rows"] if r["training_set"] == "real")
    return (f" Detector columns (train on synthetic, test on real; downstream.md): presence "
            f"AUC on the {downstream['n_test']} real held-out images of a defect detector "
            f"trained on the {downstream['n_train']} real training images plus the method's "
            f"labelled images, the change from the real-only detector (AUC {real['auc']:.3f}), "
            "and trained on the method's images alone; means over the detector seeds; n/a for "
            "methods without labels.")


def run_evaluate(spec: dict[str, Any], positron_h5: str | Path, feature_net: str | Path,
                 generated: dict[str, Path], histories: dict[str, Path], out_dir: str | Path,
                 models: dict[str, Path] | None = None, ct_h5: str | Path | None = None,
                 overwrite: bool = False, downstream_json: str | Path | None = None
                 ) -> list[dict[str, Any]]:
    """Compute Table 1 and write ``table1.csv``, ``table1.md``, ``metrics/*.json`` and the
    figures (:mod:`models.evaluate.figures`) into ``out_dir``; returns the rows."""
    from models.evaluate.figures import write_figures

    positron_h5, out_dir = Path(positron_h5), Path(out_dir)
    for name in ("table1.csv", "table1.md"):
        if (out_dir / name).exists() and not overwrite:
            raise FileExistsError(f"{out_dir / name} exists; pass --overwrite to replace it")
    s = EvalSettings.from_section(spec["evaluate"])
    check_inception(s.inception_weights)
    runs = {m: list(spec.get("runs", {}).get(m, [m])) for m in spec["methods"]}
    missing = [r for m in spec["methods"] for r in runs[m] if r not in generated]
    if missing:
        raise ValueError(f"no generated set given for method(s) {', '.join(missing)} "
                         "(train.methods, evaluate.seeds); pass --generated METHOD=PATH")
    with open_image_set(positron_h5, "positron image set") as f:
        positron_attrs = decoded_attrs(f)
    acquisition = spec["acquisition"]
    train = real_images(positron_h5, "train", acquisition)
    held = real_images(positron_h5, s.held_out_split, acquisition)
    # A small set may hold no image in the other held-out split: then there is no floor row.
    floor_phantoms = PositronImages(positron_h5, s.floor_split, acquisition).phantoms()
    floor = (real_images(positron_h5, s.floor_split, acquisition) if len(floor_phantoms)
             else np.empty((0, *train.shape[1:])))
    held_phantoms = PositronImages(positron_h5, s.held_out_split, acquisition).phantoms()
    check_scales(train.shape[-1], s.msssim_scales, s.msssim_window_px)
    sets = {r: read_generated(Path(generated[r]), positron_attrs)
            for m in spec["methods"] for r in runs[m]}
    n_images = common_size(s, {**({f"real ({s.floor_split})": len(floor)} if len(floor) else {}),
                               **{r: len(v) for r, v in sets.items()}})
    if s.kid_subset_size > min(n_images, len(held)):
        raise ValueError(f"config key evaluate.kid_subset_size: {s.kid_subset_size} exceeds the "
                         f"images a row holds ({n_images}) or the held-out set ({len(held)}); "
                         "lower it or add phantoms")
    if s.prdc_k >= min(n_images, len(held)):
        raise ValueError(f"config key evaluate.prdc_k: {s.prdc_k} needs more than {s.prdc_k} "
                         f"images in every row ({n_images}) and in the held-out set "
                         f"({len(held)}); lower it or add phantoms")
    floor_all = (len(floor), len(set(floor_phantoms)))
    sets = {r: v[subsample_index(len(v), n_images, s.seed, r)] for r, v in sets.items()}
    keep = subsample_index(len(floor), n_images, s.seed, s.floor_split)
    floor, floor_phantoms = floor[keep], floor_phantoms[keep]
    report_path = Path(feature_net).with_name("metrics.json")
    feature_report = json.loads(report_path.read_text()) if report_path.is_file() else {
        "classes": [], "held_out": {"accuracy": float("nan"), "majority_rate": float("nan"),
                                    "presence_auc": float("nan")}}
    floor_name = f"{SANITY_ROWS[0]} ({s.floor_split})"
    named = {**({floor_name: (floor, floor_phantoms)} if len(floor) else {}),
             **{k: (v, None) for k, v in sanity_sets(train, n_images, s.seed).items()}}
    row_runs = {**runs, **{name: [name] for name in named}}
    images = {**{r: (v, None) for r, v in sets.items()}, **named}
    net = load_feature_network(feature_net)
    domain = feature_space("domain", net, train, held, held_phantoms, images)
    random = feature_space("random", random_feature_network(net.embed_dim), train, held,
                           held_phantoms, images)
    train_features, held_features = domain.train, domain.held
    held_nn = {"pixels": nearest(held, train, "pixels")[1],
               "features": nearest(held_features.features, train_features, "features")[1]}

    def measure(images: np.ndarray, name: str, history: Path | None) -> dict[str, float]:
        metrics = set_metrics(images, domain.sets[name].features, held, held_features, train,
                              train_features, held_nn, s)
        metrics["frechet_random"] = frechet_distance(random.sets[name].features,
                                                     random.held.features)
        metrics["images_per_s"] = throughput(history)
        if s.inception_weights:
            metrics["fid_inception"] = inception_fid(s.inception_weights, held, images)
        return metrics

    downstream = _read_downstream(downstream_json)
    intervals = {space.name: bootstrap_intervals(
        {row: [space.sets[r] for r in names] for row, names in row_runs.items()}, space.held,
        space.train, s.prdc_k, s.bootstrap, s.seed + 2) for space in (domain, random)}
    rows, per_set, class_rows = [], {}, []
    held_labels = PositronImages(positron_h5, s.held_out_split, acquisition=acquisition
                                 ).labels(np.arange(len(held))).numpy()

    def bounds(name: str) -> dict[str, float]:
        out = {f"{c}_{end}": v for c, (lo, hi) in intervals["domain"][name].items()
               for end, v in (("lo", lo), ("hi", hi))}
        out["frechet_random_lo"], out["frechet_random_hi"] = intervals["random"][name]["frechet"]
        return out

    for method in spec["methods"]:
        per_run = {r: measure(sets[r], r, histories.get(r)) for r in runs[method]}
        rows.append({"method": method, **aggregate(list(per_run.values())), **bounds(method),
                     **_downstream_columns(downstream, method), "runs": per_run})
        first = runs[method][0]
        per_set[method] = sets[first]
        labels = read_labels(Path(generated[first]))
        if labels is not None and method_class(method).conditional:
            labels = labels[subsample_index(len(labels), n_images, s.seed, first)]
            class_rows += per_class_rows(
                method, per_set[method], labels, held_labels, held_features.features,
                domain.sets[first].features, None if downstream is None else
                downstream["class_agreement"].get(method), s)
    for name, (images_, _) in named.items():
        rows.append({"method": name, **aggregate([measure(images_, name, None)]),
                     **bounds(name), **_downstream_columns(None, name)})
        per_set[name] = images_
    for row in rows:
        log.info("%s: %s", row["method"], ", ".join(
            f"{k} {row[k]:.4g}" for k, _, d in COLUMNS if d is not None))
    def sources_for(cls) -> dict[str, Any]:
        return sampling_sources(cls, positron_h5, None if ct_h5 is None else Path(ct_h5),
                                acquisition)

    first = {m: runs[m][0] for m in spec["methods"]}
    first_models = {m: models[r] for m, r in first.items() if models and r in models}
    usage = attention_usage(first_models, n_images, s.seed, sources_for)
    for row in rows:
        if row["method"] in usage:
            row["attention"] = usage[row["method"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_text, md_text = format_table(rows)
    text = caption(s, train.shape[-1], len(train), (len(held), len(set(held_phantoms))),
                   floor_all, n_images, feature_report, acquisition)
    text += " " + rankings(rows, [*spec["methods"], floor_name],
                           feature_report["held_out"].get("presence_auc", float("nan")))
    text += usage_sentence(usage)
    with atomic_output(out_dir / "table1.csv", overwrite=True) as tmp:
        Path(tmp).write_text(csv_text)
    text += downstream_caption(downstream)
    class_md = per_class_markdown(class_rows, None if downstream is None else
                                  downstream.get("real_call_rate"))
    with atomic_output(out_dir / "table1.md", overwrite=True) as tmp:
        Path(tmp).write_text(f"# Table 1: {spec['dataset']}\n\n{md_text}\n{text}\n{class_md}")
    with atomic_output(out_dir / "table1_per_class.csv", overwrite=True) as tmp:
        keys = ["method", "class", "n_generated", "n_held_out", "frechet", "msssim_diversity",
                "class_agreement"]
        Path(tmp).write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(r[k]) if isinstance(r[k], str | int) else f"{r[k]:.6g}" for k in keys)
            + "\n" for r in class_rows))
    for row in rows:
        slug = row["method"].replace(" ", "_").replace("(", "").replace(")", "")
        with atomic_output(out_dir / "metrics" / f"{slug}.json", overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(row, indent=2))
    write_figures(out_dir, train, per_set, spec["methods"], first_models,
                  {m: histories[r] for m, r in first.items() if r in histories}, s, sources_for)
    return rows
