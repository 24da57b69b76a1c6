"""``python -m recon <command>``: the reconstruction stage' command line (:mod:`recon.cli`).

The stop-signal handlers go in before the stage's modules are imported (torch takes seconds
to load), so Ctrl-C or SIGTERM at any moment gives the one stop line
(:mod:`pipeline.interrupts`).
"""

from __future__ import annotations

import sys

from pipeline.interrupts import run_cli


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    return run_cli("recon.cli", argv)


if __name__ == "__main__":
    sys.exit(run_cli("recon.cli", None, exiting=True))
