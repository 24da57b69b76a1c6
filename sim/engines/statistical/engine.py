"""Engine ``statistical``: list-mode files drawn from expected counts instead of tracked
photons, with the detector response and the background calibrated from the embedded Monte
Carlo (:mod:`sim.engines.statistical`).

Per phantom it computes the attenuation along every candidate line (:mod:`.trues`) and runs
the embedded engine for ``simulation.statistical.background_decays`` decays (the scattered
and random coincidences' sample, :mod:`.background`), or reads both from the phantom's
preparation file (``--prep``, :mod:`.preparation`); the detector response is the
calibration file the job is given (``--response``, made once per scanner by
``python -m sim calibrate-response``). The frame is then cut into time slices of about
``chunk_decays`` candidate trues; each slice's trues, scattered, randoms and delayed pairs
are drawn, merged in time order and appended to the file, so memory stays bounded whatever
the counts.

With ``simulation.statistical.output: histogram`` (the default) the engine writes the
counts of every crystal pair (:mod:`sim.listmode.histogram`, prompts by kind and delayed),
whose size is bounded by the number of pairs whatever the counts; with ``listmode`` it
writes the events, with all of the list-mode contract's columns. ``primaries`` is the
frame's expected number of decays (rounded): decays are not drawn one by one. Event ids number the
coincidences (a random pair's two singles get two ids); the truth columns are those of
:mod:`.events` (trues: the annihilation point, no scatter) and :mod:`.background` (scattered:
the sample event's scatter counts and annihilation point; randoms: no annihilation point).
``kind`` is 0 true, 1 scattered, 2 random.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.engines.base import SimulationJob
from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import EngineSettings
from sim.engines.embedded.source import Frame
from sim.engines.statistical.background import draw_randoms, draw_scattered
from sim.engines.statistical.events import ActivityLookup, draw_trues
from sim.engines.statistical.expectation import detected_per_decay
from sim.engines.statistical.line_trues import LineTrues, draw_line_trues
from sim.engines.statistical.preparation import prepare, read_preparation
from sim.engines.statistical.response_file import read_response
from sim.listmode.file import COLUMNS, ListModeWriter, acquisition_attrs
from sim.listmode.histogram import PairCounts, write_histogram
from sim.phantoms.file import read_phantom

log = logging.getLogger(__name__)

ENGINE_VERSION = "0.1"
#: What the engine writes: list-mode events, or counts per crystal pair
#: (:mod:`sim.listmode.histogram`, size bounded whatever the counts).
OUTPUTS = ("histogram", "listmode")
#: How trues are drawn: exact thinning (:mod:`.events`) or counted lines (:mod:`.line_trues`).
TRUES = ("thinning", "lines")


@dataclass(frozen=True)
class StatisticalSettings:
    """Options of the statistical engine (``simulation.statistical``).

    Attributes
    ----------
    background_decays : int
        Decays of the phantom's Monte Carlo sample for scatter and randoms.
    jitter_columns, jitter_rings : int
        Largest shift of each end of a resampled scattered coincidence.
    slice_candidates : int
        Candidate trues per time slice (memory: about 300 bytes each).
    output : str
        One of :data:`OUTPUTS`.
    trues : str
        One of :data:`TRUES`: exact thinning, or lines counted from their expected
        detected rates (:mod:`.line_trues`).
    """

    background_decays: int = 2_000_000
    jitter_columns: int = 2
    jitter_rings: int = 2
    slice_candidates: int = 2_000_000
    output: str = "histogram"
    trues: str = "thinning"

    def __post_init__(self) -> None:
        for key, allowed in (("output", OUTPUTS), ("trues", TRUES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"simulation.statistical.{key}: {getattr(self, key)!r} is "
                                 f"not one of {allowed}")

    @classmethod
    def from_config(cls, simulation_cfg: dict) -> StatisticalSettings:
        """From the ``simulation`` config section (its ``statistical`` part)."""
        section = simulation_cfg.get("statistical", {})
        return cls(**{k: (str if k in ("output", "trues") else int)(section[k])
                      for k in cls.__dataclass_fields__ if k in section})


def _seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class StatisticalEngine:
    """The statistical engine (needs the detector response file)."""

    name = "statistical"

    def run(self, job: SimulationJob) -> dict[str, int]:
        spec = job.spec
        if job.response_h5 is None:
            raise ValueError("engine statistical needs the detector response file "
                             "(--response; make it with `python -m sim calibrate-response`)")
        digitizer = DigitizerSettings.from_config(spec["scanner"])
        sorter = SorterSettings.from_config(spec["scanner"])
        engine_settings = EngineSettings.from_config(spec["simulation"])
        settings = StatisticalSettings.from_config(spec["simulation"])
        response = read_response(job.response_h5, job.scanner, digitizer)
        phantom = read_phantom(job.phantom_h5)
        start = time.perf_counter()
        if job.prep_h5 is not None:  # made once for the phantom's acquisitions
            prep = read_preparation(job.prep_h5, spec)
        else:
            prep = prepare(phantom, spec, settings.background_decays, _seed(job.seed, 1),
                           workers=job.workers)
        expected, sample = prep.expected, prep.sample
        prepared_s = time.perf_counter() - start
        activity = ActivityLookup(phantom.activity, phantom.voxel_size_mm, phantom.origin_mm)
        acq = job.acquisition
        frame = Frame(acq.activity_bq, acq.duration_s, acq.half_life_s, 1)
        candidates = frame.expected_decays * float(expected.envelope.sum())
        n_slices = max(1, int(np.ceil(candidates / settings.slice_candidates)))
        edges_s = Frame(acq.activity_bq, acq.duration_s, acq.half_life_s,
                        n_slices).slice_edges_s
        if settings.trues == "lines":  # the frame's detected trues, counted per line
            line_trues = LineTrues.draw(detected_per_decay(expected, response), frame,
                                        _seed(job.seed, 6))
        counts = dict.fromkeys(("prompts", "trues", "scattered", "randoms", "delayed"), 0)
        next_event = 0
        histogram = settings.output == "histogram"  # crystal pairs are all it keeps
        if histogram:
            out = _HistogramSink(job.out_h5, job.overwrite, job.scanner.n_crystals)
        else:
            out = ListModeWriter(job.out_h5, job.overwrite)
        with out:
            for k in range(n_slices):
                t0 = edges_s[k]
                part = Frame(acq.activity_bq * np.exp(-t0 / frame.tau_s), edges_s[k + 1] - t0,
                             acq.half_life_s, 1)
                if settings.trues == "lines":
                    trues = [draw_line_trues(
                        line_trues, line_trues.between(t0, edges_s[k + 1]), expected,
                        activity, response, engine_settings.acolinearity_fwhm_deg,
                        sorter.min_sector_difference, t0, 0, _seed(job.seed, 7, k),
                        pairs_only=histogram)]
                else:
                    trues = list(draw_trues(expected, activity, response, part,
                                            engine_settings.acolinearity_fwhm_deg,
                                            sorter.min_sector_difference,
                                            _seed(job.seed, 2, k), chunk_candidates=2**62,
                                            pairs_only=histogram))
                scattered = draw_scattered(sample, job.scanner, part,
                                           sorter.min_sector_difference, _seed(job.seed, 3, k),
                                           settings.jitter_columns, settings.jitter_rings,
                                           pairs_only=histogram)
                randoms = draw_randoms(sample, job.scanner, part, sorter.window_ns,
                                       sorter.min_sector_difference, _seed(job.seed, 4, k))
                delayed = draw_randoms(sample, job.scanner, part, sorter.window_ns,
                                       sorter.min_sector_difference, _seed(job.seed, 5, k),
                                       delay_ns=sorter.delay_ns)
                if histogram:  # pairs only: no time order, no ids
                    prompts = _pairs([*trues, scattered, randoms])
                    delayed = _pairs([delayed])
                else:
                    prompts = _merge([*trues, scattered, randoms], t0 * 1e9)
                    delayed = _merge([delayed], t0 * 1e9)
                    next_event = _number(prompts, next_event)
                    next_event = _number(delayed, next_event)
                out.append(prompts, delayed)
                kinds = np.bincount(prompts["kind"], minlength=3)
                for key, value in (("prompts", prompts["kind"].size), ("trues", kinds[0]),
                                   ("scattered", kinds[1]), ("randoms", kinds[2]),
                                   ("delayed", delayed["kind"].size)):
                    counts[key] += int(value)
            elapsed = time.perf_counter() - start
            log.info("%s/%s %s: %s in %.1f s (%.1f s for the phantom's lines and sample)",
                     spec["dataset"], spec["phantom"], acq.name, counts, elapsed, prepared_s)
            attrs = acquisition_attrs(spec, job.phantom_h5, params={
                "workers": job.workers, "response_file": str(job.response_h5),
                "prep_file": None if job.prep_h5 is None else str(job.prep_h5)})
            attrs.update(
                engine="statistical", engine_version=ENGINE_VERSION,
                primaries=int(round(frame.expected_decays)),
                counts=json.dumps({**counts, "primaries": int(round(frame.expected_decays))},
                                  sort_keys=True),
                timings_s=json.dumps({"phantom": round(prepared_s, 3),
                                      "total": round(elapsed, 3)}),
                background_decays=int(sample.decays), output=settings.output,
                trues_drawn_by=settings.trues,
            )
            out.attrs.update(attrs)
        return {**counts, "primaries": int(round(frame.expected_decays))}


class _HistogramSink:
    """Takes the list-mode writer's place: counts the chunks' pairs, writes the histogram
    file (atomically) when the block ends without error."""

    def __init__(self, path, overwrite: bool, n_crystals: int) -> None:
        self.path, self.overwrite = path, overwrite
        if Path(path).exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
        self.prompts = PairCounts(n_crystals, by_kind=True)
        self.delayed = PairCounts(n_crystals)
        self.attrs: dict = {}

    def __enter__(self) -> _HistogramSink:
        return self

    def append(self, prompts: dict, delayed: dict) -> None:
        self.prompts.add(prompts["crystal1"], prompts["crystal2"], prompts["kind"])
        self.delayed.add(delayed["crystal1"], delayed["crystal2"])

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            write_histogram(self.path, self.prompts, self.delayed, self.attrs, self.overwrite)


def _pairs(tables: list[dict]) -> dict:
    """The crystal pairs and kinds of list-mode tables, concatenated."""
    return {k: np.concatenate([np.asarray(t[k], COLUMNS[k][0]) for t in tables])
            for k in ("crystal1", "crystal2", "kind")}


def _merge(tables: list[dict], offset_ns: float) -> dict:
    """Tables of list-mode columns as one, in time order, times moved by ``offset_ns``."""
    tables = [t for t in tables if t["kind"].size] or tables[:1]
    merged = {k: np.concatenate([np.asarray(t[k], COLUMNS[k][0]) for t in tables])
              for k in COLUMNS}
    order = np.argsort(merged["time1_ns"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    merged["time1_ns"] = merged["time1_ns"] + offset_ns
    merged["time2_ns"] = merged["time2_ns"] + offset_ns
    return merged


def _number(table: dict, first: int) -> int:
    """Give the coincidences event ids from ``first`` on (two for a random pair); returns
    the next free id."""
    two = table["kind"] == 2
    step = np.where(two, 2, 1)
    ids = first + np.concatenate([[0], np.cumsum(step)[:-1]]) if step.size else step
    table["event1"] = ids.astype(np.int64)
    table["event2"] = (ids + two).astype(np.int64)
    return int(first + step.sum())


ENGINE = StatisticalEngine()

