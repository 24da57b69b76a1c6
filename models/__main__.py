"""Command line of the generative-model stage: ``python -m models <command>``.

Commands
--------
device   print the torch device the config's ``device`` switch resolves to on this machine
"""

from __future__ import annotations

import sys

from recon.device import device_cli


def main(argv: list[str] | None = None) -> int:
    return device_cli("python -m models", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
