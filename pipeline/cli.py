"""What every stage's command line shares: logging set-up and one-line user errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from pipeline.config import ConfigError
from pipeline.fileio import check_writable

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
        check_outputs(args)
        args.func(args)
    except (*USER_ERRORS, OSError, MemoryError) as exc:
        logging.getLogger(package).debug("details", exc_info=True)
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Temporary files are gone by now (every writer unwinds); one line, no traceback.
        print("error: interrupted; no output was written", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def check_outputs(args: argparse.Namespace) -> None:
    """Every stage names its outputs ``--out`` (a file), ``--out-csv``/``--out-png`` (files)
    or ``--out-dir`` (a folder): each is checked writable, and not already there unless
    ``--overwrite``, before the stage does any work."""
    overwrite = bool(getattr(args, "overwrite", False))
    for name, value in sorted(vars(args).items()):
        if name == "out" or name.startswith("out_") and isinstance(value, str):
            if value:
                check_writable(value, overwrite, folder=name == "out_dir")


def describe(exc: BaseException) -> str:
    """One line for a user error; for an operating-system failure (a read-only folder, a
    full disk, a path through a file) the path and the cause, not the call that hit it."""
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'no detail'}); use a smaller grid or more memory"
    if isinstance(exc, OSError) and exc.strerror:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p]
        return f"{' -> '.join(paths)}: {exc.strerror}" if paths else exc.strerror
    return " ".join(str(exc).split("\n"))


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)
