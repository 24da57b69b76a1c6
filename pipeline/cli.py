"""What every stage's command line shares: logging set-up and one-line user errors."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from pipeline.config import ConfigError
from pipeline.fileio import check_writable
from pipeline.interrupts import (
    GRACE_S,
    raise_if_stopped,
    stop_message,
    stop_on_signals,
    stop_requested,
)

#: Failures that are the user's to fix (bad input, missing data or executables): reported
#: as one ``error:`` line with exit code 2 instead of a traceback.
USER_ERRORS = (ConfigError, FileExistsError, FileNotFoundError, ValueError, RuntimeError)


class UsageError(ValueError):
    """A command line argparse refuses (a missing or unknown option, a bad value)."""


class CommandParser(argparse.ArgumentParser):
    """The stages' argument parser: a bad command line is one ``error:`` line naming the
    command and what is wrong (argparse prints its usage first, two lines or more), exit
    code 2 through :func:`run_command`. Sub-command parsers are of the same class."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def command_parser(prog: str, description: str | None
                   ) -> tuple[CommandParser, argparse._SubParsersAction]:
    """A stage's parser (``-v`` for debug logging, the module docstring as its help) and
    the action its sub-commands are added to (one is required)."""
    parser = CommandParser(prog=prog, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser, parser.add_subparsers(dest="command", required=True)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None, package: str) -> int:
    """Parse ``argv``, set up logging (``-v`` for debug) and run ``args.func(args)``.

    Returns the exit code: what ``args.func`` returns when it is an integer (the launcher's
    Snakemake), else 0; 2 after printing a user error on one line (the traceback goes to
    the ``package`` logger at debug level); 128 + the signal's number after SIGINT, SIGTERM
    or SIGHUP, with one line (:mod:`pipeline.interrupts`: workers stopped, temporary files
    removed on the way out). ``args.grace_s``, when the sub-command sets it, is how long a
    stop may take before the process is ended outright.
    """
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    with stop_on_signals(getattr(args, "grace_s", GRACE_S)):
        try:
            check_outputs(args)
            code = args.func(args)
            raise_if_stopped()  # a signal whose exception was swallowed on the way
        except KeyboardInterrupt as exc:
            signum = stop_requested() or getattr(exc, "signum", signal.SIGINT)
            print(stop_message(signum), file=sys.stderr)
            return 128 + signum
        except (*USER_ERRORS, OSError, MemoryError) as exc:
            if stop_requested() is not None:  # the failure is the stop's doing
                print(stop_message(stop_requested()), file=sys.stderr)
                return 128 + stop_requested()
            logging.getLogger(package).debug("details", exc_info=True)
            print(f"error: {describe(exc)}", file=sys.stderr)
            return 2
        except Exception:
            if stop_requested() is None:
                raise  # a bug: its traceback
            print(stop_message(stop_requested()), file=sys.stderr)
            return 128 + stop_requested()
    return code if isinstance(code, int) else 0


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
