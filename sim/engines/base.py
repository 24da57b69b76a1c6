"""The engine interface: what a simulation engine is given, what it returns, and lookup by
name.

Every engine is an object with a ``name`` and a ``run(job)`` method (:class:`Engine`): given
one :class:`SimulationJob` (the phantom file, the scanner, the acquisition, the seed, the
output file and its writing options, parsed once from the job's simulate spec at the stage's
boundary), it writes the list-mode file and returns its counts (rows per kind; timings go
into the file's attributes). Engines are found by name the way pix2pix finds its models: the
name ``x`` of the config's ``engine`` key (the schema's enum is the list of names) is the
module or package ``sim.engines.x``, which holds ``ENGINE``. Adding an engine is one module
and one word in ``config/schema.yaml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import load_schema
from sim.scanner.geometry import Scanner

#: Keys of a simulation spec (:func:`pipeline.specs.simulate_spec`).
SPEC_KEYS = ("engine", "dataset", "phantom", "acquisition", "scanner", "simulation", "seed")


@dataclass(frozen=True)
class Acquisition:
    """One acquisition preset: ``activity_bq`` for ``duration_s`` of an emitter with
    ``half_life_s``."""

    name: str
    activity_bq: float
    duration_s: float
    half_life_s: float


@dataclass(frozen=True)
class SimulationJob:
    """Everything an engine needs for one list-mode file.

    ``response_h5`` is the detector response file the statistical engine needs (None for
    the others), ``prep_h5`` its phantom's preparation file (optional). ``spec`` is the
    job's simulate spec itself: engines read their own settings from it
    (the embedded engine's ``simulation`` section, GATE's macro values) and record it as
    provenance.
    """

    spec: dict[str, Any]
    phantom_h5: Path
    out_h5: Path
    scanner: Scanner
    acquisition: Acquisition
    seed: int
    workers: int = 1
    overwrite: bool = False
    response_h5: Path | None = None
    prep_h5: Path | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any], phantom_h5: str | Path, out_h5: str | Path,
                  workers: int = 1, overwrite: bool = False,
                  response_h5: str | Path | None = None,
                  prep_h5: str | Path | None = None) -> SimulationJob:
        """Parse a simulate spec (ValueError names what is missing or wrong)."""
        missing = [k for k in SPEC_KEYS if k not in spec]
        if missing:
            raise ValueError(f"simulation spec is missing key(s) {', '.join(missing)} "
                             "(build it with pipeline.specs.simulate_spec)")
        a = spec["acquisition"]
        return cls(spec, Path(phantom_h5), Path(out_h5), Scanner.from_config(spec["scanner"]),
                   Acquisition(a["name"], a["activity_bq"], a["duration_s"], a["half_life_s"]),
                   spec["seed"], workers, overwrite,
                   None if response_h5 is None else Path(response_h5),
                   None if prep_h5 is None else Path(prep_h5))


class Engine(Protocol):
    """A simulation engine."""

    name: str

    def run(self, job: SimulationJob) -> dict[str, int]:
        """Simulate ``job`` into ``job.out_h5``; returns the rows written per kind."""
        ...


@dataclass(frozen=True)
class SpecEngine:
    """An engine whose run function reads its settings from the simulate spec itself (the
    GATE engines: their macros and simulations are built from the spec's sections)."""

    name: str
    run_spec: Callable[..., dict[str, int]]

    def run(self, job: SimulationJob) -> dict[str, int]:
        return self.run_spec(job.spec, job.phantom_h5, job.out_h5, threads=job.workers,
                             overwrite=job.overwrite)


def engine_names() -> tuple[str, ...]:
    """The engines the config may name (the schema's ``engine`` enum)."""
    return tuple(load_schema()["properties"]["engine"]["enum"])


def engine_named(name: str) -> Engine:
    """The engine called ``name`` (its module is imported only now)."""
    names = engine_names()
    if name not in names:
        raise ValueError(f"spec key engine: {name!r} is not one of {names}")
    return importlib.import_module(f"sim.engines.{name}").ENGINE
