"""``python -m validation <command>`` (:mod:`validation.cli`), with the stop-signal handlers
in place before the heavy imports (:mod:`pipeline.interrupts`)."""

from __future__ import annotations

import sys

from pipeline.interrupts import run_cli


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    return run_cli("validation.cli", argv)


if __name__ == "__main__":
    sys.exit(run_cli("validation.cli", None, exiting=True))
