"""Command line of the reconstruction stage: ``python -m recon <command>``.

Commands
--------
system-matrix  compute the 2D sparse system matrix of a dataset's image grid (cached file)
sensitivity    compute a 3D sensitivity image (geometric, or attenuated with --phantom-file)
reconstruct    reconstruct one list-mode file into .h5 + .nii.gz + .png + _defects.json
               (``reconstruct`` rule)
detectability  gather the _defects.json of a dataset into one CSV and the defect figure
               (``detectability`` rule)
detectability-study  the smallest detected defect per type against counts
               (``detectability_study`` rule)
device         print the torch device the config's ``device`` switch resolves to

Each command takes the reconstruction spec as JSON (``--spec``, what the Snakemake rules
pass) or builds it from config files (``--configfile`` and ``--dataset``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.cli import command_parser, run_command
from pipeline.config import ConfigError, load_config
from pipeline.specs import recon_spec
from recon.device import DEVICE_CHOICES, describe_device, resolve_device


def _spec(args: argparse.Namespace) -> dict:
    if args.spec:
        return json.loads(args.spec)
    if not args.dataset:
        raise ConfigError("give --spec, or --dataset (with --configfile)")
    return recon_spec(load_config(*args.configfile), args.dataset)


def _cmd_system_matrix(args: argparse.Namespace) -> None:
    _limit_threads(args)
    from recon.stage import build_system_matrix_file

    build_system_matrix_file(_spec(args), args.out, overwrite=args.overwrite)


def _cmd_sensitivity(args: argparse.Namespace) -> None:
    _limit_threads(args)
    from recon.stage import build_sensitivity_file

    build_sensitivity_file(_spec(args), args.out, args.phantom_file, overwrite=args.overwrite)


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    _limit_threads(args)
    from recon.stage import reconstruct

    reconstruct(_spec(args), args.listmode, args.phantom_file, args.out,
                system_h5=args.system_matrix, sensitivity_h5=args.sensitivity,
                overwrite=args.overwrite)


def _cmd_detectability(args: argparse.Namespace) -> None:
    from pipeline.fileio import atomic_output
    from recon.defect_figure import write_defect_figure
    from recon.detectability import read_json, write_csv

    docs = [read_json(p) for p in args.defects]
    for path in (args.out_csv, args.out_png):
        if Path(path).exists() and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    with atomic_output(Path(args.out_png), args.overwrite) as tmp:
        write_defect_figure(tmp, docs)
    with atomic_output(Path(args.out_csv), args.overwrite) as tmp:
        n = write_csv(tmp, docs)
    print(f"{args.out_csv}: {n} defect measures from {len(docs)} reconstructions")


def _cmd_detectability_study(args: argparse.Namespace) -> None:
    from recon.detectability_study import StudySettings, run_study

    section = json.loads(args.spec)
    settings = StudySettings.from_config(section)
    summary = run_study(args.recon, args.levels, settings, args.out_dir, args.overwrite)
    print(f"{args.out_dir}: {len(summary)} rows of smallest detected sizes from "
          f"{len(args.recon)} reconstructions")


def _cmd_device(args: argparse.Namespace) -> None:
    print(describe_device(resolve_device(args.device)))


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", help="reconstruction spec as JSON (what the Snakemake rules pass)")
    p.add_argument("--configfile", action="append", default=[],
                   help="config YAML; repeat to overlay (default: config/config.yaml)")
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's own choice, all cores)")


def _limit_threads(args: argparse.Namespace) -> None:
    """Honour the scheduler's CPU allocation (Snakemake ``threads``, SLURM cpus-per-task)."""
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)


def main(argv: list[str] | None = None) -> int:
    parser, sub = command_parser("python -m recon", __doc__)

    p = sub.add_parser("system-matrix", help="compute the 2D system matrix")
    _spec_args(p)
    p.add_argument("--out", required=True, help="output .h5 path")
    p.set_defaults(func=_cmd_system_matrix)

    p = sub.add_parser("sensitivity", help="compute a 3D sensitivity image")
    _spec_args(p)
    p.add_argument("--phantom-file", help="phantom .h5: attenuated sensitivity through its mu511")
    p.add_argument("--out", required=True, help="output .h5 path")
    p.set_defaults(func=_cmd_sensitivity)

    p = sub.add_parser("reconstruct", help="reconstruct one list-mode file")
    _spec_args(p)
    p.add_argument("--listmode", required=True, help="list-mode .h5 from the simulate stage")
    p.add_argument("--phantom-file", help="phantom .h5 (mu511 for attenuation correction)")
    p.add_argument("--system-matrix", help="cached 2D system matrix .h5 (mode 2d)")
    p.add_argument("--sensitivity", help="cached 3D sensitivity .h5 (mode 3d)")
    p.add_argument("--out", required=True, help="output image .h5 (.nii.gz and .png beside it)")
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("detectability", help="gather defect measures: CSV and figure")
    p.add_argument("--defects", nargs="+", required=True,
                   help="the _defects.json of every reconstruction of the dataset")
    p.add_argument("--out-csv", required=True, help="output detectability.csv")
    p.add_argument("--out-png", required=True, help="output defect figure .png")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_detectability)

    p = sub.add_parser("detectability-study", help="smallest detected defect per type against "
                       "counts, from the study's reconstructions")
    p.add_argument("--spec", required=True,
                   help="the detectability_study config section as JSON")
    p.add_argument("--recon", nargs="+", required=True,
                   help="every level's reconstruction .h5 (its _defects.json beside it)")
    p.add_argument("--levels", nargs="+", type=int, required=True,
                   help="count level of each --recon (index into the fractions)")
    p.add_argument("--out-dir", required=True, help="folder of study.{csv,md,png}, smallest.csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_detectability_study)

    p = sub.add_parser("device", help="resolve the device switch")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.set_defaults(func=_cmd_device)

    return run_command(parser, argv, "recon")

