"""Command line of the simulation stage: ``python -m sim <command> ...`` (:mod:`sim.__main__`).

Commands
--------
phantom          draw, voxelise and write one phantom (what the ``phantom`` rule runs)
simulate         simulate one acquisition of a phantom into a list-mode file (``simulate`` rule)
prepare-statistical  the statistical engine's per-phantom preparation (``statistical_prep``)
thin             keep a fraction of an acquisition's coincidences (binomial thinning)
import-root      convert a GATE 9 or opengate coincidence ROOT file into a list-mode file
export-petsird   write a list-mode file as PETSIRD (the PET raw-data standard)
crosscheck       compare two list-mode files of one phantom simulated by two engines
scanner          print the scanner geometry derived from a config
validate-config  validate config files and print the resolved config (defaults filled in)
run              check the config a Snakemake command line gives, then run that Snakemake
                 (``python -m sim run --cores 2 --configfile my.yaml``; sim/launch.py)
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import yaml

from pipeline.cli import command_parser, run_command
from pipeline.config import ConfigError, load_config
from pipeline.specs import simulate_spec
from sim.launch import KILL_AFTER_S, SNAKEMAKE_STOP_S
from sim.phantoms.spec import phantom_spec
from sim.scanner.geometry import Scanner


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", action="append", default=[],
                        help="config YAML; repeat to overlay (default: config/config.yaml)")


def _spec(args: argparse.Namespace, build, *keys: str) -> dict:
    """The job's spec: ``--spec`` JSON, else ``build(config, *values of --keys)`` from the
    config files (every one of ``keys`` then required)."""
    if args.spec:
        return json.loads(args.spec)
    values = [getattr(args, key) for key in keys]
    if not all(values):
        options = ", ".join(f"--{key}" for key in keys)
        raise ConfigError(f"give --spec, or {options} (with --configfile)")
    return build(load_config(*args.configfile), *values)


def _cmd_phantom(args: argparse.Namespace) -> None:
    from sim.phantoms.stage import build_phantom  # heavy imports only when needed

    spec = _spec(args, phantom_spec, "dataset", "phantom")
    build_phantom(spec, args.out, overwrite=args.overwrite)


def _cmd_simulate(args: argparse.Namespace) -> None:
    from sim.engines.stage import run_simulation

    spec = _spec(args, simulate_spec, "dataset", "phantom", "acquisition")
    run_simulation(spec, args.phantom_file, args.out, workers=args.threads,
                   overwrite=args.overwrite, response_h5=args.response, prep_h5=args.prep)


def _cmd_prepare_statistical(args: argparse.Namespace) -> None:
    from pipeline.fileio import provenance_attrs
    from pipeline.specs import statistical_prep_spec
    from sim.engines.statistical.engine import StatisticalSettings
    from sim.engines.statistical.preparation import prepare, write_preparation
    from sim.phantoms.file import read_phantom

    spec = _spec(args, statistical_prep_spec, "dataset", "phantom")
    settings = StatisticalSettings.from_config(spec["simulation"])
    prep = prepare(read_phantom(args.phantom_file), spec, settings.background_decays,
                   int(spec["seed"]), workers=args.threads)
    write_preparation(args.out, prep, spec,
                      provenance_attrs(spec, params={"threads": args.threads},
                                       seed=int(spec["seed"])), overwrite=args.overwrite)


def _cmd_calibrate_response(args: argparse.Namespace) -> None:
    from pipeline.fileio import provenance_attrs
    from pipeline.specs import response_spec
    from sim.engines.embedded.digitizer import DigitizerSettings
    from sim.engines.statistical.response import calibrate
    from sim.engines.statistical.response_file import write_response
    from sim.scanner.geometry import Scanner

    spec = json.loads(args.spec) if args.spec else response_spec(load_config(*args.configfile))
    scanner = Scanner.from_config(spec["scanner"])
    digitizer = DigitizerSettings.from_config(spec["scanner"])
    photons = int(spec["photons_per_cell"])
    response = calibrate(scanner, digitizer, photons, int(spec["seed"]),
                         energy_cut_kev=float(spec["energy_cut_kev"]))
    write_response(args.out, response, {
        **provenance_attrs(spec, params={"photons_per_cell": photons}, seed=int(spec["seed"])),
        "photons_per_cell": photons}, overwrite=args.overwrite)


def _positive_option(option: str, value: float, unit: str) -> float:
    """``value`` of a command-line option, refused naming the option unless positive and
    finite (argparse's ``float`` takes ``nan``, ``inf`` and negatives)."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be a positive, finite number of {unit}, got {value!r}")
    return value


def _cmd_thin(args: argparse.Namespace) -> None:
    from sim.listmode.thinning import check_fraction, thin_file

    try:
        check_fraction(args.fraction)
    except ValueError as exc:
        raise ValueError(f"--fraction: {exc}") from None
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    counts = thin_file(args.input, args.out, args.fraction, args.seed, args.overwrite)
    print(f"{args.out}: {counts['prompts']} prompts, {counts['delayed']} delayed kept "
          f"(fraction {args.fraction:g} of {args.input})")


def _cmd_import_root(args: argparse.Namespace) -> None:
    from sim.listmode.root_import import detect_schema, gate9_primaries, import_root

    # The options first, before the ROOT file is opened: their refusals name the option.
    _positive_option("--activity-bq", args.activity_bq, "Bq")
    _positive_option("--duration-s", args.duration_s, "seconds")
    if args.primaries is not None and args.primaries < 1:
        raise ValueError(f"--primaries must be the number of decays simulated (1 or more), "
                         f"got {args.primaries}")
    config = load_config(*args.configfile)
    scanner = Scanner.from_config(config["scanner"])
    schema = detect_schema(args.root).name if args.schema == "auto" else args.schema
    primaries = args.primaries
    if primaries is None and schema == "gate9":
        primaries = gate9_primaries(args.root)
    if primaries is None:
        raise ValueError(f"{args.root}: the number of decays simulated is not in the file; "
                         "give --primaries")
    attrs = {"engine": schema, "engine_version": args.engine_version, "primaries": primaries,
             "activity_bq": args.activity_bq, "duration_s": args.duration_s}
    min_sector = (config["scanner"]["min_sector_difference"] if schema == "opengate"
                  else None)
    counts = import_root(args.root, args.out, scanner, attrs, schema=schema,
                         prompts_tree=args.prompts_tree, delayed_tree=args.delayed_tree,
                         min_sector_difference=min_sector, overwrite=args.overwrite)
    print(f"{args.out}: {counts['coincidences']} prompts, {counts['delayed']} delayed "
          f"({schema} schema, {primaries} decays)")


def _cmd_export_petsird(args: argparse.Namespace) -> None:
    from sim.listmode.petsird_export import export_petsird

    scanner_cfg = load_config(*args.configfile)["scanner"] if args.configfile else None
    summary = export_petsird(args.listmode, args.out, overwrite=args.overwrite,
                             tof_bin_ps=args.tof_bin_ps, energy_bin_kev=args.energy_bin_kev,
                             time_block_ms=args.time_block_ms, scanner_cfg=scanner_cfg)
    print(f"{args.out}: {summary['prompts']} prompts, {summary['delayed']} delayed in "
          f"{summary['time_blocks']} time blocks")


def _cmd_crosscheck(args: argparse.Namespace) -> None:
    from sim.listmode.crosscheck import write_crosscheck

    rows = write_crosscheck(args.a, args.b, args.out_dir, overwrite=args.overwrite)
    print(f"{args.out_dir}: {len(rows)} metrics compared (crosscheck.md, .csv, .png)")


def _cmd_scanner(args: argparse.Namespace) -> None:
    scanner = Scanner.from_config(load_config(*args.configfile)["scanner"])
    summary = {
        **scanner.to_dict(),
        "n_crystals": scanner.n_crystals,
        "crystals_per_module": scanner.crystals_per_module,
        "inner_radius_mm": round(float(scanner.inner_radius_mm), 4),
        "axial_length_mm": float(scanner.axial_length_mm),
        "first_module_angle_deg": round(math.degrees(scanner.first_module_angle_rad), 6),
    }
    print(yaml.safe_dump(summary, sort_keys=False), end="")


def _cmd_validate(args: argparse.Namespace) -> None:
    print(yaml.safe_dump(load_config(*args.configfile), sort_keys=False), end="")


def _cmd_run(args: argparse.Namespace) -> int:
    from sim.launch import run_snakemake

    rest = args.snakemake_args
    return run_snakemake(rest[1:] if rest[:1] == ["--"] else rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "run" in argv and all(a in ("-v", "--verbose") for a in argv[:argv.index("run")]):
        # Everything after `run` is Snakemake's, options included.
        at = argv.index("run") + 1
        argv[at:at] = ["--"]
    parser, sub = command_parser("python -m sim", __doc__)

    p = sub.add_parser("phantom", help="build one phantom")
    p.add_argument("--spec", help="phantom spec as JSON (what the Snakemake rule passes)")
    _config_args(p)
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    p.add_argument("--phantom", help="phantom name, e.g. tube_0003 (with --configfile)")
    p.add_argument("--out", required=True, help="output .h5 path")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("simulate", help="simulate one acquisition of one phantom")
    p.add_argument("--spec", help="simulation spec as JSON (what the Snakemake rule passes)")
    _config_args(p)
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    p.add_argument("--phantom", help="phantom name, e.g. tube_0003 (with --configfile)")
    p.add_argument("--acquisition", help="acquisition preset, e.g. short (with --configfile)")
    p.add_argument("--phantom-file", required=True, help="phantom .h5 from the phantom stage")
    p.add_argument("--out", required=True, help="output list-mode .h5 path")
    p.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--response", help="detector response file (engine statistical; from "
                   "calibrate-response)")
    p.add_argument("--prep", help="the phantom's preparation file (engine statistical, "
                   "optional; from prepare-statistical)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("prepare-statistical", help="the statistical engine's per-phantom "
                       "preparation (lines and background sample), shared by its acquisitions")
    p.add_argument("--spec", help="prep spec as JSON (what the Snakemake rule passes)")
    _config_args(p)
    p.add_argument("--dataset", help="dataset name (with --configfile)")
    p.add_argument("--phantom", help="phantom name, e.g. tube_0003 (with --configfile)")
    p.add_argument("--phantom-file", required=True, help="phantom .h5 from the phantom stage")
    p.add_argument("--out", required=True, help="output .h5 path")
    p.add_argument("--threads", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_prepare_statistical)

    p = sub.add_parser("calibrate-response", help="calibrate the detector response of the "
                       "statistical engine with the embedded Monte Carlo (once per scanner)")
    p.add_argument("--spec", help="response spec as JSON (what the Snakemake rule passes)")
    _config_args(p)
    p.add_argument("--out", required=True, help="output response .h5 path")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_calibrate_response)

    p = sub.add_parser("thin", help="keep each coincidence with probability --fraction: the "
                       "same acquisition at fewer counts (list-mode or histogram file)")
    p.add_argument("--in", dest="input", required=True,
                   help="list-mode or coincidence histogram .h5")
    p.add_argument("--fraction", type=float, required=True,
                   help="share of the counts kept, in (0, 1]")
    p.add_argument("--seed", type=int, required=True, help="seed of the draws")
    p.add_argument("--out", required=True, help="output .h5 path (same format as --in)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_thin)

    p = sub.add_parser("import-root", help="convert a GATE ROOT coincidence file")
    p.add_argument("--root", required=True, help="GATE 9 or opengate ROOT file")
    p.add_argument("--out", required=True, help="output list-mode .h5 path")
    _config_args(p)
    p.add_argument("--schema", choices=["auto", "gate9", "opengate"], default="auto",
                   help="tree layout (default: detected from the tree names)")
    p.add_argument("--activity-bq", type=float, required=True, help="simulated activity, Bq")
    p.add_argument("--duration-s", type=float, required=True, help="acquisition length, s")
    p.add_argument("--primaries", type=int,
                   help="decays simulated (GATE 9: read from total_nb_primaries by default)")
    p.add_argument("--engine-version", default="unknown", help="GATE version, for the record")
    p.add_argument("--prompts-tree", help="prompts tree (default Coincidences / coincidences)")
    p.add_argument("--delayed-tree", help="delayed tree (default delay / delayed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_import_root)

    p = sub.add_parser("export-petsird", help="write a list-mode file as PETSIRD")
    p.add_argument("--listmode", required=True, help="list-mode .h5 file")
    p.add_argument("--out", required=True, help="output PETSIRD (binary) path")
    p.add_argument("--configfile", action="append", default=[],
                   help="config giving the digitizer settings (default: the file's own)")
    p.add_argument("--tof-bin-ps", type=float, default=25.0,
                   help="TOF bin width in time difference, ps (default 25)")
    p.add_argument("--energy-bin-kev", type=float, default=10.0,
                   help="energy bin width, keV (default 10)")
    p.add_argument("--time-block-ms", type=int, default=1, help="time block length, ms")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_export_petsird)

    p = sub.add_parser("crosscheck", help="compare two engines' list-mode files")
    p.add_argument("--a", required=True, help="reference list-mode file (e.g. opengate)")
    p.add_argument("--b", required=True, help="list-mode file to compare (e.g. fast)")
    p.add_argument("--out-dir", required=True, help="directory for crosscheck.csv/.md/.png")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=_cmd_crosscheck)

    p = sub.add_parser("scanner", help="print the scanner geometry")
    _config_args(p)
    p.set_defaults(func=_cmd_scanner)

    p = sub.add_parser("validate-config", help="validate and print the resolved config")
    _config_args(p)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("run", help="check the config of a Snakemake command line, then run it")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                   help="Snakemake's arguments, unchanged (e.g. --cores 2 --configfile my.yaml)")
    # A stop waits for Snakemake to stop its jobs (sim/launch.py) before the watchdog acts.
    p.set_defaults(func=_cmd_run, grace_s=SNAKEMAKE_STOP_S + 4 * KILL_AFTER_S)

    return run_command(parser, argv, "sim")

