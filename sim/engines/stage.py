"""The simulate stage: one phantom, one acquisition, one engine -> one list-mode file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.provenance import Origin, check_same_origin
from sim.engines.base import SimulationJob, engine_named
from sim.phantoms.file import read_origin

log = logging.getLogger(__name__)


def run_simulation(spec: dict[str, Any], phantom_h5: str | Path, out_h5: str | Path,
                   workers: int = 1, overwrite: bool = False,
                   response_h5: str | Path | None = None,
                   prep_h5: str | Path | None = None) -> dict:
    """Simulate ``spec`` (see :func:`pipeline.specs.simulate_spec`) on a phantom file with
    the engine it names (:func:`sim.engines.base.engine_named`).

    Returns the counts written (primaries, singles, prompts by kind, delayed).
    ``response_h5`` is the detector response file of engine ``statistical``, ``prep_h5``
    its phantom's preparation file (optional, :mod:`sim.engines.statistical.preparation`).

    A phantom file that records another phantom or dataset than the spec names is refused
    before any work (a file without those records, made outside the pipeline, is used; a
    missing one is left to the engine, which says what it needs: GATE 9 reads only the
    MetaImage copies beside it).
    """
    out_h5 = Path(out_h5)
    if out_h5.suffix != ".h5":
        raise ValueError(f"output {out_h5} must end in .h5")
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    job = SimulationJob.from_spec(spec, phantom_h5, out_h5, workers, overwrite, response_h5,
                                  prep_h5)
    # The list-mode file will record the spec's phantom: it must be the file's.
    if Path(phantom_h5).is_file():
        check_same_origin(
            Origin("the simulation spec (--spec, or --dataset and --phantom)",
                   {"dataset": spec["dataset"], "phantom": spec["phantom"]}),
            read_origin(phantom_h5), ["phantom", "dataset"],
            advice=f"give --phantom-file of phantom {spec['phantom']!r}")
    counts = engine_named(spec["engine"]).run(job)
    log.info("wrote %s", out_h5)
    return counts
