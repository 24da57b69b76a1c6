"""Command line of the reconstruction stage: ``python -m recon <command>``.

Commands
--------
device   print the torch device the config's ``device`` switch resolves to on this machine
"""

from __future__ import annotations

import argparse
import sys

from recon.device import DEVICE_CHOICES, describe_device, resolve_device


def _cmd_device(args: argparse.Namespace) -> None:
    print(describe_device(resolve_device(args.device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("device", help="resolve the device switch")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.set_defaults(func=_cmd_device)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
