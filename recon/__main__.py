"""Command line of the reconstruction stage: ``python -m recon <command>``.

Commands
--------
device   print the torch device the config's ``device`` switch resolves to on this machine
"""

from __future__ import annotations

import sys

from recon.device import device_cli


def main(argv: list[str] | None = None) -> int:
    return device_cli("python -m recon", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
