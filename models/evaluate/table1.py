"""Table 1 of the seed paper as a product of the DAG (``evaluate`` rule, ``results/{dataset}/
eval/``): every trained method's generated set against the real training images, next to
sanity rows computed the same way.

Rows: each method of ``train.methods`` (its ``generated/{method}.h5``), then
``real (held-out)``: the held-out split's real images (the floor: what a perfect generator
could reach with as many images), ``noise`` (uniform pixels in [-1, 1]) and ``blurred mean``
(the mean training image, Gaussian-blurred by 2 px, repeated): the ceiling of bad generators.
Real images are those of ``train.acquisition`` (the images the methods learned).

Columns (:mod:`models.metrics`): MS-SSIM diversity (mean over random pairs within the set;
lower is more diverse; compare with the real rows), MS-SSIM to real (random pairs of one
image of the set and one training image), the domain-feature Fréchet distance and kernel
distance (KID, x 10^3, mean and standard deviation over subsets) on the feature network's
vectors (divided by the training vectors' RMS), precision, recall, density and coverage on
the same vectors, the copy share by pixel and by feature nearest neighbours and the
data-copying z-score by features (against the held-out images' nearest-training distances),
and the training throughput (mean images/s of ``history.csv``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from models.data.image_set import check_images, open_image_set
from models.data.loaders import PositronImages
from models.evaluate.feature_network import embed, load_feature_network
from models.methods import method_class
from models.metrics.distances import frechet_distance, kernel_distance
from models.metrics.memorisation import copy_statistics, nearest
from models.metrics.msssim import check_scales, mean_ms_ssim, scale_weights
from models.metrics.prdc import prdc
from models.training.history import read_history
from models.training.stage import sampling_sources
from pipeline.fileio import atomic_output, decoded_attrs

log = logging.getLogger(__name__)

SANITY_ROWS = ("real (held-out)", "noise", "blurred mean")
BLUR_PX = 2.0

COLUMNS = [
    ("method", "method", None),
    ("msssim_diversity", "MS-SSIM diversity", 4),
    ("msssim_to_real", "MS-SSIM to real", 4),
    ("frechet", "Fréchet distance (domain features)", 3),
    ("kid_x1e3", "KID x 10^3 (domain features)", 2),
    ("kid_std_x1e3", "KID std x 10^3", 2),
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

    @classmethod
    def from_section(cls, s: dict[str, Any]) -> EvalSettings:
        m = s["msssim"]
        return cls(int(m["scales"]), int(m["window_px"]), float(m["sigma_px"]), int(m["pairs"]),
                   int(s["kid_subset_size"]), int(s["kid_subsets"]), int(s["prdc_k"]),
                   float(s["copy_quantile"]), str(s["held_out_split"]), int(s["walk_steps"]),
                   int(s["seed"]), s.get("inception_weights"))

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


def sanity_sets(train: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    """The ceiling rows: uniform noise, and the blurred mean training image repeated."""
    rng = np.random.default_rng(seed)
    blurred = gaussian_filter(train.mean(axis=0), BLUR_PX)
    return {"noise": rng.uniform(-1, 1, (n, *train.shape[1:])),
            "blurred mean": np.repeat(blurred[None], n, axis=0)}


def set_metrics(images: np.ndarray, train: np.ndarray, train_features: np.ndarray,
                features: np.ndarray, held_out_nn: dict[str, np.ndarray], s: EvalSettings
                ) -> dict[str, float]:
    """Every column of Table 1 but the throughput, for one set of images."""
    kw = s.msssim_kwargs()
    diversity, diversity_se = mean_ms_ssim(images, None, s.msssim_pairs, s.seed, **kw)
    to_real, to_real_se = mean_ms_ssim(images, train, s.msssim_pairs, s.seed + 1, **kw)
    kid, kid_std = kernel_distance(features, train_features, s.kid_subset_size, s.kid_subsets,
                                   s.seed)
    _, nn_pixels = nearest(images, train, "pixels")
    _, nn_features = nearest(features, train_features, "features")
    pixels = copy_statistics(nn_pixels, held_out_nn["pixels"], s.copy_quantile)
    out = {"msssim_diversity": diversity, "msssim_diversity_se": diversity_se,
           "msssim_to_real": to_real, "msssim_to_real_se": to_real_se,
           "frechet": frechet_distance(features, train_features),
           "kid_x1e3": 1e3 * kid, "kid_std_x1e3": 1e3 * kid_std,
           **prdc(train_features, features, s.prdc_k),
           **copy_statistics(nn_features, held_out_nn["features"], s.copy_quantile),
           "copy_share_pixels": pixels["copy_share"], "copy_z_pixels": pixels["copy_z"],
           "nn_pixels_median": float(np.median(nn_pixels)),
           "nn_features_median": float(np.median(nn_features)), "n_images": len(images)}
    return out


def read_labels(path: Path) -> np.ndarray | None:
    """Class numbers (N,) of a generated set, or None for a set without labels."""
    with open_image_set(path, "generated image set") as f:
        return f["labels"][...].astype(np.int64) if "labels" in f else None


def per_class_rows(method: str, images: np.ndarray, labels: np.ndarray, train: np.ndarray,
                   train_labels: np.ndarray, train_features: np.ndarray,
                   features: np.ndarray, agreement: dict[str, float] | None,
                   s: EvalSettings) -> list[dict[str, Any]]:
    """One row per class a conditional method generated: images, training images of the
    class, the domain-feature Fréchet distance between the two (NaN below 2 images on a
    side), MS-SSIM diversity within the class and the real-trained detector's class
    agreement."""
    from models.data.labels import DEFECT_CLASSES

    rows = []
    for k in np.unique(labels):
        mine, real = labels == k, train_labels == k
        frechet = (frechet_distance(features[mine], train_features[real])
                   if mine.sum() > 1 and real.sum() > 1 else float("nan"))
        diversity = (mean_ms_ssim(images[mine], None, min(s.msssim_pairs, 200), s.seed,
                                  **s.msssim_kwargs())[0] if mine.sum() > 1 else float("nan"))
        name = DEFECT_CLASSES[int(k)]
        rows.append({"method": method, "class": name, "n_generated": int(mine.sum()),
                     "n_train": int(real.sum()), "frechet": frechet,
                     "msssim_diversity": diversity,
                     "class_agreement": float("nan") if agreement is None else float(
                         agreement.get(name, float("nan")))})
    return rows


def per_class_markdown(rows: list[dict[str, Any]], call_rate: dict[str, float] | None) -> str:
    if not rows:
        return ""
    def f(v, d):
        return "n/a" if not np.isfinite(v) else f"{v:.{d}f}"

    lines = ["| method | class | generated | real (train) | Fréchet distance (class) | "
             "MS-SSIM diversity | class agreement | detector's rate on real |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = float("nan") if call_rate is None else call_rate.get(r["class"], float("nan"))
        lines.append(f"| {r['method']} | {r['class']} | {r['n_generated']} | {r['n_train']} | "
                     f"{f(r['frechet'], 3)} | {f(r['msssim_diversity'], 4)} | "
                     f"{f(r['class_agreement'], 2)} | {f(rate, 2)} |")
    return ("\n## Per class (conditional methods)\n\n" + "\n".join(lines) + "\n\nFréchet "
            "distance between the generated images of a class and the real training images of "
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
    """CSV and Markdown text of the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    numeric = [key for key, _, digits in COLUMNS if digits is not None]
    writer.writerow(["method", "n_runs", *numeric, *(f"{k}_std" for k in numeric)])
    for row in rows:
        writer.writerow([row["method"], int(row.get("n_runs", 1)),
                         *(f"{row[k]:.{d + 2}g}" for k, _, d in COLUMNS if d is not None),
                         *(f"{row.get(k + '_std', 0.0):.3g}" for k in numeric)])
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
        return text

    for row in rows:
        md.append("| " + " | ".join(cell(row, key, digits) for key, _, digits in COLUMNS)
                  + " |")
    return buffer.getvalue(), "\n".join(md) + "\n"


def caption(s: EvalSettings, size_px: int, n_train: int, n_held: int, feature_report: dict,
            acquisition: str | None) -> str:
    """What the table's numbers are, in words (printed under it)."""
    weights = ", ".join(f"{w:.4f}" for w in scale_weights(s.msssim_scales))
    held = feature_report["held_out"]
    return (
        f"Real images: {n_train} training and {n_held} held-out ({s.held_out_split}) "
        f"{acquisition or 'all'} images of {size_px} px. MS-SSIM: data range 2 (images in "
        f"[-1, 1]), {s.msssim_scales} scales, {s.msssim_window_px} px Gaussian window "
        f"(sigma {s.msssim_sigma_px} px), weights {weights}, mean over {s.msssim_pairs} random "
        "pairs; diversity within the set (lower is more diverse), to real between the set and "
        "the training images. Fréchet and kernel distances are on the features of the domain "
        f"feature network trained here ({len(feature_report['classes'])} classes, held-out "
        f"accuracy {held['accuracy']:.3f} against a majority-class rate of "
        f"{held['majority_rate']:.3f}): domain-feature distances, not FID, not comparable with "
        f"published FIDs. KID: unbiased, {s.kid_subsets} subsets of {s.kid_subset_size}. "
        f"Precision, recall, density, coverage: Naeem et al. 2020, k = {s.prdc_k}. Features are "
        "divided by the training features' RMS. Copy share: generated images nearer a "
        f"training image than {100 * s.copy_quantile:.0f} % of held-out images are, by mean "
        "absolute pixel difference and by feature distance (pixels favour blur: the blurred "
        "mean image is nearer every training image than any real image is); data-copying z: "
        "Mann-Whitney z of the feature distances against the held-out ones (below -3: "
        "copying; above 3: farther from the training images than new real images). "
        + ("Standard FID: torchmetrics with the Inception weights of evaluate."
           "inception_weights." if s.inception_weights else
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
    check_scales(train.shape[-1], s.msssim_scales, s.msssim_window_px)
    sets = {r: read_generated(Path(generated[r]), positron_attrs)
            for m in spec["methods"] for r in runs[m]}
    n_min = min([len(train), len(held), *(len(v) for v in sets.values())])
    if s.kid_subset_size > n_min:
        raise ValueError(f"config key evaluate.kid_subset_size: {s.kid_subset_size} exceeds the "
                         f"smallest image set ({n_min} images; training {len(train)}, held-out "
                         f"{len(held)}); lower it or add phantoms")
    report_path = Path(feature_net).with_name("metrics.json")
    feature_report = json.loads(report_path.read_text()) if report_path.is_file() else {
        "classes": [], "held_out": {"accuracy": float("nan"), "majority_rate": float("nan")}}
    net = load_feature_network(feature_net)
    train_features = embed(net, train)
    # One scale for every set: the training features' RMS, so the cubic kernel of KID sees
    # vectors of unit size (as Inception's pool features roughly are), whatever the network.
    feature_scale = float(np.sqrt(np.mean(train_features**2))) or 1.0
    train_features = train_features / feature_scale
    held_nn = {"pixels": nearest(held, train, "pixels")[1],
               "features": nearest(embed(net, held) / feature_scale, train_features,
                                   "features")[1]}

    def measure(images: np.ndarray, history: Path | None) -> dict[str, float]:
        metrics = set_metrics(images, train, train_features, embed(net, images) / feature_scale,
                              held_nn, s)
        metrics["images_per_s"] = throughput(history)
        if s.inception_weights:
            metrics["fid_inception"] = inception_fid(s.inception_weights, train, images)
        return metrics

    downstream = _read_downstream(downstream_json)
    n_sanity = max(len(v) for v in sets.values())
    rows, per_set, class_rows = [], {}, []
    train_labels = PositronImages(positron_h5, "train", acquisition=acquisition).labels(
        np.arange(len(train))).numpy()
    for method in spec["methods"]:
        per_run = {r: measure(sets[r], histories.get(r)) for r in runs[method]}
        rows.append({"method": method, **aggregate(list(per_run.values())),
                     **_downstream_columns(downstream, method), "runs": per_run})
        per_set[method] = sets[runs[method][0]]
        labels = read_labels(Path(generated[runs[method][0]]))
        if labels is not None and method_class(method).conditional:
            class_rows += per_class_rows(
                method, per_set[method], labels, train, train_labels, train_features,
                embed(net, per_set[method]) / feature_scale, None if downstream is None else
                downstream["class_agreement"].get(method), s)
    for name, images in [(SANITY_ROWS[0], held), *sanity_sets(train, n_sanity, s.seed).items()]:
        rows.append({"method": name, **aggregate([measure(images, None)]),
                     **_downstream_columns(None, name)})
        per_set[name] = images
    for row in rows:
        log.info("%s: %s", row["method"], ", ".join(
            f"{k} {row[k]:.4g}" for k, _, d in COLUMNS if d is not None))
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_text, md_text = format_table(rows)
    text = caption(s, train.shape[-1], len(train), len(held), feature_report, acquisition)
    with atomic_output(out_dir / "table1.csv", overwrite=True) as tmp:
        Path(tmp).write_text(csv_text)
    text += downstream_caption(downstream)
    class_md = per_class_markdown(class_rows, None if downstream is None else
                                  downstream.get("real_call_rate"))
    with atomic_output(out_dir / "table1.md", overwrite=True) as tmp:
        Path(tmp).write_text(f"# Table 1: {spec['dataset']}\n\n{md_text}\n{text}\n{class_md}")
    with atomic_output(out_dir / "table1_per_class.csv", overwrite=True) as tmp:
        keys = ["method", "class", "n_generated", "n_train", "frechet", "msssim_diversity",
                "class_agreement"]
        Path(tmp).write_text(",".join(keys) + "\n" + "".join(
            ",".join(str(r[k]) if isinstance(r[k], str | int) else f"{r[k]:.6g}" for k in keys)
            + "\n" for r in class_rows))
    for row in rows:
        slug = row["method"].replace(" ", "_").replace("(", "").replace(")", "")
        with atomic_output(out_dir / "metrics" / f"{slug}.json", overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps(row, indent=2))
    def sources_for(cls) -> dict[str, Any]:
        return sampling_sources(cls, positron_h5, None if ct_h5 is None else Path(ct_h5),
                                acquisition)

    first = {m: runs[m][0] for m in spec["methods"]}
    write_figures(out_dir, train, per_set, spec["methods"],
                  {m: models[r] for m, r in first.items() if models and r in models},
                  {m: histories[r] for m, r in first.items() if r in histories}, s, sources_for)
    return rows
