"""``python -m sim <command>``: the simulation stage's command line (:mod:`sim.cli`), and
the launcher of the whole pipeline (``python -m sim run``).

The stop-signal handlers go in before the stage's modules are imported, so Ctrl-C or SIGTERM
at any moment gives the one stop line (:mod:`pipeline.interrupts`).
"""

from __future__ import annotations

import sys

from pipeline.interrupts import run_cli


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    return run_cli("sim.cli", argv)


if __name__ == "__main__":
    sys.exit(run_cli("sim.cli", None, exiting=True))
