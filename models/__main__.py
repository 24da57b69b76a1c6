"""Command line of the datasets and generative-model stages: ``python -m models <command>``.

Commands
--------
positron-dataset  cut, resample and normalise the reconstructions of a dataset into
                  positron.h5 (``positron_dataset`` rule)
ct-dataset        read a CT source (DeepLesion, DICOM, NIfTI) or generate synthetic CT slices
                  into ct.h5 (``ct_dataset`` rule)
device            print the torch device the config's ``device`` switch resolves to

Each command takes its spec as JSON (``--spec``, what the Snakemake rules pass) or builds it
from config files (``--configfile``, and ``--dataset`` for positron-dataset).
"""

from __future__ import annotations

import argparse
import json
import sys

from recon.device import DEVICE_CHOICES, describe_device, resolve_device
from sim.cli import run_command
from sim.config import ConfigError, ct_dataset_spec, load_config, positron_dataset_spec


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


def _cmd_device(args: argparse.Namespace) -> None:
    print(describe_device(resolve_device(args.device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("device", help="resolve the device switch")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.set_defaults(func=_cmd_device)
    return run_command(parser, argv, "models")


if __name__ == "__main__":
    sys.exit(main())
