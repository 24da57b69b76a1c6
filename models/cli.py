"""Command line of the datasets and generative-model stages: ``python -m models <command>``.

Commands
--------
positron-dataset  cut, resample and normalise the reconstructions of a dataset into
                  positron.h5 (``positron_dataset`` rule)
ct-dataset        read a CT source (DeepLesion, DICOM, NIfTI) or generate synthetic CT slices
                  into ct.h5 (``ct_dataset`` rule)
pretrain-vae      train the CT VAE on ct.h5 (``pretrain_vae`` rule)
positron-features fit PCANet + PCA on the training positron images: features.h5
                  (``positron_features`` rule)
train             train a generative method (``train`` rule; resumes from checkpoint.pt)
generate          sample a trained method into generated/{method}.h5 (``generate`` rule)
feature-network   train the domain feature network of the metrics (``feature_network`` rule)
downstream        train defect detectors on real and generated images, score them on real
                  held-out images (``downstream`` rule)
scarcity          the detector against the number of real training phantoms, with and
                  without classical augmentation and generated images (``scarcity`` rule)
scarcity-subset   an image set whose training split holds a subset of its phantoms
                  (``scarcity_subset`` rule)
enhance           pix2pix against a post-filter on held-out low-count images (``enhance`` rule)
evaluate          Table 1, metrics and figures of every method (``evaluate`` rule)
device            print the torch device the config's ``device`` switch resolves to

Each command takes its spec as JSON (``--spec``, what the Snakemake rules pass) or builds it
from config files (``--configfile``, with ``--dataset`` and, for train and generate,
``--method``). ``--threads`` caps torch's CPU threads (the rules pass their ``threads``).
"""

from __future__ import annotations

import argparse
import json

from pipeline.cli import command_parser, run_command
from pipeline.config import ConfigError, load_config
from pipeline.specs import (
    ct_dataset_spec,
    downstream_spec,
    enhance_spec,
    evaluate_spec,
    feature_network_spec,
    generate_spec,
    positron_dataset_spec,
    positron_features_spec,
    pretrain_vae_spec,
    scarcity_spec,
    train_spec,
)
from recon.device import DEVICE_CHOICES, describe_device, resolve_device


def _spec(args: argparse.Namespace, build, *keys: str) -> dict:
    """The job's spec: ``--spec`` JSON, or built from ``--configfile`` and the named args."""
    if args.spec:
        try:
            spec = json.loads(args.spec)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--spec is not valid JSON ({exc})") from None
        if not isinstance(spec, dict):
            raise ConfigError("--spec must be a JSON object")
        return spec
    missing = [k for k in keys if not getattr(args, k)]
    if missing:
        raise ConfigError(f"give --spec, or --{' and --'.join(missing)} (with --configfile)")
    return build(load_config(*args.configfile), *(getattr(args, k) for k in keys))


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))


def _cmd_positron(args: argparse.Namespace) -> None:
    from models.data.positron_dataset import build_positron_dataset

    if args.spec:
        spec = json.loads(args.spec)
    elif args.dataset:
        spec = positron_dataset_spec(load_config(*args.configfile), args.dataset)
    else:
        raise ConfigError("give --spec, or --dataset (with --configfile)")
    build_positron_dataset(spec, args.results, args.out, overwrite=args.overwrite)


def _cmd_ct(args: argparse.Namespace) -> None:
    from models.data.ct_dataset import build_ct_dataset

    spec = json.loads(args.spec) if args.spec else ct_dataset_spec(load_config(*args.configfile))
    build_ct_dataset(spec, args.out, overwrite=args.overwrite)


def _cmd_pretrain_vae(args: argparse.Namespace) -> None:
    from models.training.stage import run_pretrain_vae

    spec = _spec(args, pretrain_vae_spec, "dataset")
    _threads(args)
    run_pretrain_vae(spec, args.ct, args.out_dir, overwrite=args.overwrite)


def _cmd_features(args: argparse.Namespace) -> None:
    from models.data.positron_features import build_positron_features

    spec = _spec(args, positron_features_spec, "dataset")
    _threads(args)
    build_positron_features(spec, args.positron, args.out, overwrite=args.overwrite)


def _cmd_train(args: argparse.Namespace) -> None:
    from models.training.stage import run_train

    spec = _spec(args, train_spec, "dataset", "method")
    _threads(args)
    files = {"positron": args.positron, "ct": args.ct, "features": args.features,
             "encoder": args.encoder}
    run_train(spec, files, args.out_dir, overwrite=args.overwrite)


def _cmd_generate(args: argparse.Namespace) -> None:
    from models.training.generate import run_generate

    spec = _spec(args, generate_spec, "dataset", "method")
    _threads(args)
    run_generate(spec, args.model, args.positron, args.ct, args.out, overwrite=args.overwrite)


def _cmd_feature_network(args: argparse.Namespace) -> None:
    from models.evaluate.feature_network import train_feature_network

    spec = _spec(args, feature_network_spec, "dataset")
    _threads(args)
    train_feature_network(spec, args.positron, args.out_dir, overwrite=args.overwrite)


def _by_method(values: list[str], option: str) -> dict[str, str]:
    """``METHOD=PATH`` arguments as a dict; a malformed one names the option."""
    out = {}
    for value in values:
        method, sep, path = value.partition("=")
        if not sep or not method or not path:
            raise ConfigError(f"{option} takes METHOD=PATH, got {value!r}")
        out[method] = path
    return out


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from models.evaluate.table1 import run_evaluate

    spec = _spec(args, evaluate_spec, "dataset")
    _threads(args)
    run_evaluate(spec, args.positron, args.feature_net,
                 _by_method(args.generated, "--generated"),
                 _by_method(args.history, "--history"), args.out_dir,
                 models=_by_method(args.model, "--model"), ct_h5=args.ct,
                 overwrite=args.overwrite, downstream_json=args.downstream)


def _cmd_downstream(args: argparse.Namespace) -> None:
    from models.evaluate.downstream import run_downstream

    spec = _spec(args, downstream_spec, "dataset")
    generated = _by_method(args.generated, "--generated")
    if not args.spec and generated:  # by hand: the methods whose sets are given
        spec["methods"] = list(generated)
    _threads(args)
    run_downstream(spec, args.positron, generated, args.out_dir, overwrite=args.overwrite)


def _cmd_scarcity(args: argparse.Namespace) -> None:
    from models.evaluate.scarcity import run_scarcity

    spec = _spec(args, scarcity_spec, "dataset")
    generated = _by_method(args.generated, "--generated")
    _threads(args)
    run_scarcity(spec, args.positron, args.out_dir, generated=generated,
                 overwrite=args.overwrite)


def _cmd_scarcity_subset(args: argparse.Namespace) -> None:
    from models.data.loaders import PositronImages
    from models.data.subset import write_train_subset
    from models.evaluate.scarcity import ScarcitySettings, subset_phantoms

    spec = _spec(args, scarcity_spec, "dataset")
    phantoms = PositronImages(args.positron, "train").phantoms()
    settings = ScarcitySettings.from_section(spec["scarcity"], len(set(phantoms)))
    write_train_subset(args.positron, subset_phantoms(phantoms, settings, args.subset),
                       args.out, overwrite=args.overwrite)


def _cmd_enhance(args: argparse.Namespace) -> None:
    from models.evaluate.enhance import run_enhance

    spec = _spec(args, enhance_spec, "dataset")
    _threads(args)
    run_enhance(spec, args.positron, args.model, args.out_dir, overwrite=args.overwrite)


def _common(p: argparse.ArgumentParser, method: bool = False) -> None:
    p.add_argument("--spec", help="job spec as JSON (what the Snakemake rule passes)")
    p.add_argument("--configfile", action="append", default=[], help="config YAML (repeatable)")
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    if method:
        p.add_argument("--method", help="generative method (with --configfile)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's own)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _stage(sub, name: str, help: str, func, *, method: bool = False,
           positron: str | None = None, out_dir: str | None = None
           ) -> argparse.ArgumentParser:
    """A stage's sub-command: the common options (:func:`_common`), ``--positron`` and
    ``--out-dir`` when the stage has them (their help texts given), and its function."""
    p = sub.add_parser(name, help=help)
    _common(p, method=method)
    if positron:
        p.add_argument("--positron", required=True, help=positron)
    if out_dir:
        p.add_argument("--out-dir", required=True, help=out_dir)
    p.set_defaults(func=func)
    return p


def _per_method(p: argparse.ArgumentParser, option: str, what: str) -> None:
    """A repeatable ``METHOD=PATH`` option (read by :func:`_by_method`)."""
    p.add_argument(option, action="append", default=[], metavar="METHOD=PATH",
                   help=f"{what} (repeat for every method)")


def _cmd_device(args: argparse.Namespace) -> None:
    print(describe_device(resolve_device(args.device)))


def main(argv: list[str] | None = None) -> int:
    parser, sub = command_parser("python -m models", __doc__)

    p = sub.add_parser("positron-dataset", help="build positron.h5 from reconstructions")
    p.add_argument("--spec", help="dataset spec as JSON (what the Snakemake rule passes)")
    p.add_argument("--configfile", action="append", default=[], help="config YAML (repeatable)")
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    p.add_argument("--results", required=True, help="results/{dataset} folder")
    p.add_argument("--out", required=True, help="output .h5 (contact sheet .png beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_positron)

    p = sub.add_parser("ct-dataset", help="build ct.h5 from a CT source")
    p.add_argument("--spec", help="CT spec as JSON (what the Snakemake rule passes)")
    p.add_argument("--configfile", action="append", default=[], help="config YAML (repeatable)")
    p.add_argument("--out", required=True, help="output .h5 (contact sheet .png beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_ct)

    p = _stage(sub, "pretrain-vae", "train the CT VAE on ct.h5", _cmd_pretrain_vae,
               out_dir="output folder (models/vae_ct)")
    p.add_argument("--ct", required=True, help="ct.h5")

    p = _stage(sub, "positron-features", "PCANet + PCA memory features: features.h5",
               _cmd_features, positron="positron.h5")
    p.add_argument("--out", required=True, help="output features.h5")

    p = _stage(sub, "train", "train a generative method", _cmd_train, method=True,
               positron="positron.h5", out_dir="output folder (models/{method})")
    p.add_argument("--ct", help="ct.h5 (methods that take CT images)")
    p.add_argument("--features", help="features.h5 (attention GAN)")
    p.add_argument("--encoder", help="the CT VAE's final.pt (attention GAN)")

    p = _stage(sub, "generate", "sample a trained method", _cmd_generate, method=True,
               positron="positron.h5 (normalisation, scales)")
    p.add_argument("--model", required=True, help="the method's final.pt")
    p.add_argument("--ct", help="ct.h5 (methods that take CT images)")
    p.add_argument("--out", required=True, help="output generated/{method}.h5")

    _stage(sub, "feature-network", "train the domain feature network", _cmd_feature_network,
           positron="positron.h5", out_dir="output folder (models/feature_net)")

    p = _stage(sub, "evaluate", "Table 1, metrics and figures", _cmd_evaluate,
               positron="positron.h5 (the real images)", out_dir="output folder (eval)")
    p.add_argument("--ct", help="ct.h5 (latent walks of methods that take CT images)")
    p.add_argument("--feature-net", required=True, help="the feature network's final.pt")
    _per_method(p, "--generated", "a method's generated set")
    _per_method(p, "--history", "a method's history.csv (training images/s)")
    _per_method(p, "--model", "a method's final.pt (latent walks)")
    p.add_argument("--downstream", help="downstream.json of the downstream rule (detector "
                   "columns and class agreement)")

    p = _stage(sub, "downstream", "train on synthetic, test on real", _cmd_downstream,
               positron="positron.h5 (the real images)", out_dir="output folder (eval)")
    _per_method(p, "--generated", "a labelled method's generated set")

    p = _stage(sub, "scarcity", "the data-scarcity curve of the defect detector",
               _cmd_scarcity, positron="positron.h5 (the real images)",
               out_dir="output folder (eval)")
    p.add_argument("--generated", action="append", default=[],
                   metavar="SUBSET/METHOD=PATH",
                   help="a labelled method's set generated by its training on a subset "
                        "(n{n}_d{draw}, or all for the whole split); repeat for each")

    p = _stage(sub, "scarcity-subset", "an image set with a subset of the training phantoms",
               _cmd_scarcity_subset, positron="positron.h5 (the whole set)")
    p.add_argument("--subset", required=True, help="the subset's name, n{n}_d{draw}")
    p.add_argument("--out", required=True, help="the subset's positron.h5")

    p = _stage(sub, "enhance", "pix2pix enhancement against a post-filter", _cmd_enhance,
               positron="positron.h5 (pairs, truth, masks)", out_dir="output folder (enhance)")
    p.add_argument("--model", required=True, help="pix2pix's final.pt")

    p = sub.add_parser("device", help="resolve the device switch")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.set_defaults(func=_cmd_device)
    return run_command(parser, argv, "models")

