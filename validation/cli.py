"""Command line of the engine validation: ``python -m validation <command>``.

Commands
--------
phantom    compare a candidate engine's realisations of one phantom with the reference
           engine's: list-mode rates and distributions, and their reconstructions
           (``validate_phantom`` rule; writes validation.csv, .md and .png into --out-dir)
summary    gather the per-phantom tables into one markdown page and CSV
           (``statistical_validation`` rule)
"""

from __future__ import annotations

import argparse

from pipeline.cli import command_parser, run_command


def _cmd_phantom(args: argparse.Namespace) -> None:
    from validation.report import validate_phantom

    rows = validate_phantom(args.phantom_file, args.reference_listmode,
                            args.candidate_listmode, args.reference_recon,
                            args.candidate_recon, args.out_dir, overwrite=args.overwrite)
    failed = sum(r["status"] == "fail" for r in rows)
    print(f"{args.out_dir}: {len(rows)} checks, {failed} failed")


def _cmd_summary(args: argparse.Namespace) -> None:
    from validation.report import summarise_tables

    total = summarise_tables(args.tables, args.out_md, args.out_csv, overwrite=args.overwrite)
    print(f"{args.out_md}: {total['pass']} pass, {total['fail']} fail, "
          f"{total['other']} not decided")


def main(argv: list[str] | None = None) -> int:
    parser, sub = command_parser("python -m validation", __doc__)

    p = sub.add_parser("phantom", help="validate one phantom's realisations")
    p.add_argument("--phantom-file", required=True, help="phantom .h5 the files came from")
    for role in ("reference", "candidate"):
        p.add_argument(f"--{role}-listmode", nargs="+", required=True,
                       help=f"list-mode files of the {role} engine, one per realisation")
        p.add_argument(f"--{role}-recon", nargs="+", required=True,
                       help="their reconstructions (.h5, _defects.json beside each), "
                            "in the same order")
    p.add_argument("--out-dir", required=True, help="folder of validation.csv, .md, .png")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("summary", help="gather the per-phantom tables")
    p.add_argument("--tables", nargs="+", required=True, help="per-phantom validation.csv")
    p.add_argument("--out-md", required=True, help="output summary .md")
    p.add_argument("--out-csv", required=True, help="output summary .csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_summary)

    return run_command(parser, argv, "validation")
