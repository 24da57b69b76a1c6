"""The phantom job's spec: its dataset section, index and name, and the scanner bore (a phantom
is re-drawn when the bore it must fit changes). Built here rather than with the other specs in
:mod:`pipeline.specs` because the bore is scanner geometry, which the pipeline core does not
import."""

from __future__ import annotations

import copy
from typing import Any

from pipeline.specs import phantom_index
from sim.scanner.geometry import Scanner


def phantom_spec(config: dict, dataset: str, phantom: str) -> dict[str, Any]:
    """Everything a phantom job depends on: its dataset section (minus acquisitions), its
    index and name, and the scanner bore. Hashing this gives ``config_sha256``."""
    index = phantom_index(config, dataset, phantom)
    # Unset optional sections (`part: null` of the other families) stay out, so that adding
    # them to the schema left the existing phantoms' specs, hashes and files unchanged.
    section = {k: v for k, v in config["datasets"][dataset].items()
               if k != "acquisitions" and v is not None}
    return {
        "dataset": dataset,
        "phantom": phantom,
        "index": index,
        **copy.deepcopy(section),
        "scanner_inner_radius_mm": Scanner.from_config(config["scanner"]).inner_radius_mm,
    }
