"""Engine ``fast``: the embedded Monte Carlo engine (:mod:`sim.engines.embedded`) behind the
engine interface; coincidences stream into the list-mode file chunk by chunk."""

from __future__ import annotations

import json
import logging
import time

from sim.engines.base import SimulationJob
from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import ENGINE_VERSION, EngineSettings, FastEngine
from sim.listmode.file import ListModeWriter, acquisition_attrs
from sim.phantoms.file import read_phantom

log = logging.getLogger(__name__)


class EmbeddedEngine:
    """The embedded engine (no external data)."""

    name = "fast"

    def run(self, job: SimulationJob) -> dict[str, int]:
        spec = job.spec
        digitizer = DigitizerSettings.from_config(spec["scanner"])
        sorter = SorterSettings.from_config(spec["scanner"])
        settings = EngineSettings.from_config(spec["simulation"])
        phantom = read_phantom(job.phantom_h5)  # checks the file before any work

        start = time.perf_counter()
        try:
            fast = FastEngine(phantom, job.scanner, digitizer, sorter, settings)
        except ValueError as exc:  # what the engine finds wrong is in this file
            raise ValueError(f"{job.phantom_h5}: {exc}") from None
        acquisition = job.acquisition
        with ListModeWriter(job.out_h5, job.overwrite) as out:
            result = fast.run(acquisition.activity_bq, acquisition.duration_s,
                              acquisition.half_life_s, job.seed, workers=job.workers,
                              sink=out.append)
            elapsed = time.perf_counter() - start
            counts = result.counts
            log.info("%s/%s %s: %s in %.1f s (%.3g decays/s)", spec["dataset"],
                     spec["phantom"], acquisition.name, counts, elapsed,
                     result.primaries / max(elapsed, 1e-9))
            attrs = acquisition_attrs(spec, job.phantom_h5, params={"workers": job.workers})
            attrs.update(
                engine="fast", engine_version=ENGINE_VERSION, primaries=result.primaries,
                counts=json.dumps(counts, sort_keys=True), singles=counts["singles"],
                timings_s=json.dumps({k: round(v, 3) for k, v in result.timings_s.items()}),
            )
            out.attrs.update(attrs)
        return counts


ENGINE = EmbeddedEngine()
