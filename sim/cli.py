"""What every stage's command line shares: logging set-up and one-line user errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from sim.config import ConfigError

#: Failures that are the user's to fix (bad input, missing data or executables): reported
#: as one ``error:`` line with exit code 2 instead of a traceback.
USER_ERRORS = (ConfigError, FileExistsError, FileNotFoundError, ValueError, RuntimeError)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None, package: str) -> int:
    """Parse ``argv``, set up logging (``-v`` for debug) and run ``args.func(args)``.

    Returns the exit code: 0, or 2 after printing a user error on one line (the traceback
    goes to the ``package`` logger at debug level).
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    # SIGTERM (Snakemake stopping a job, a cluster's time limit) unwinds like Ctrl-C, so
    # every temporary file is removed on the way out; the exit code stays 128 + 15.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        logging.getLogger(package).debug("details", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)
