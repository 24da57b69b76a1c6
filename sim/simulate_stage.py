"""The simulate stage: one phantom, one acquisition, one engine -> one list-mode file."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from sim.coincidences import SorterSettings
from sim.digitizer import DigitizerSettings
from sim.engine_fast import ENGINE_VERSION, EngineSettings, FastEngine
from sim.listmode import ListModeWriter, acquisition_attrs
from sim.phantom_file import read_phantom
from sim.scanner import Scanner

log = logging.getLogger(__name__)

#: Engines this stage can run; the GATE engines are selected in the config too.
ENGINES = ("fast", "opengate", "gate9")
#: Keys of a simulation spec (:func:`sim.config.simulate_spec`).
SPEC_KEYS = ("engine", "dataset", "phantom", "acquisition", "scanner", "simulation", "seed")


def run_simulation(spec: dict[str, Any], phantom_h5: str | Path, out_h5: str | Path,
                   workers: int = 1, overwrite: bool = False) -> dict:
    """Simulate ``spec`` (see :func:`sim.config.simulate_spec`) on a phantom file.

    Returns the counts written (primaries, singles, prompts by kind, delayed).
    """
    out_h5 = Path(out_h5)
    if out_h5.suffix != ".h5":
        raise ValueError(f"output {out_h5} must end in .h5")
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"simulation spec is missing key(s) {', '.join(missing)} "
                         "(build it with sim.config.simulate_spec)")
    engine = spec["engine"]
    if engine not in ENGINES:
        raise ValueError(f"spec key engine: {engine!r} is not one of {ENGINES}")
    if engine == "opengate":
        from sim.engine_opengate import run_opengate

        return run_opengate(spec, phantom_h5, out_h5, threads=workers, overwrite=overwrite)
    if engine == "gate9":
        from sim.engine_gate9 import run_gate9

        return run_gate9(spec, phantom_h5, out_h5, threads=workers, overwrite=overwrite)
    scanner_cfg = spec["scanner"]
    scanner = Scanner.from_config(scanner_cfg)
    digitizer = DigitizerSettings.from_config(scanner_cfg)
    sorter = SorterSettings.from_config(scanner_cfg)
    settings = EngineSettings.from_config(spec["simulation"])
    acquisition = spec["acquisition"]
    phantom = read_phantom(phantom_h5)  # checks the file before any work

    start = time.perf_counter()
    try:
        fast = FastEngine(phantom, scanner, digitizer, sorter, settings)
    except ValueError as exc:  # what the engine finds wrong is in this file
        raise ValueError(f"{phantom_h5}: {exc}") from None
    # Coincidences stream into the (temporary) output file chunk by chunk.
    with ListModeWriter(out_h5, overwrite) as out:
        result = fast.run(acquisition["activity_bq"], acquisition["duration_s"],
                          acquisition["half_life_s"], spec["seed"], workers=workers,
                          sink=out.append)
        elapsed = time.perf_counter() - start
        counts = result.counts
        log.info("%s/%s %s: %s in %.1f s (%.3g decays/s)", spec["dataset"], spec["phantom"],
                 acquisition["name"], counts, elapsed, result.primaries / max(elapsed, 1e-9))
        out.attrs.update(_attrs(spec, workers, result, acquisition, scanner, phantom_h5))
    log.info("wrote %s", out_h5)
    return counts


def _attrs(spec, workers, result, acquisition, scanner, phantom_h5) -> dict:
    attrs = acquisition_attrs(spec, phantom_h5, params={"workers": workers})
    counts = result.counts
    attrs.update(
        engine="fast", engine_version=ENGINE_VERSION, primaries=result.primaries,
        counts=json.dumps(counts, sort_keys=True), singles=counts["singles"],
        timings_s=json.dumps({k: round(v, 3) for k, v in result.timings_s.items()}),
    )
    return attrs
