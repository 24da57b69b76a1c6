"""The embedded engine (``engine: fast``): source -> transport -> digitizer -> sorter.

Decays are simulated in chunks (time slices of the frame with about ``chunk_decays`` decays
each, :class:`sim.engines.embedded.source.Frame`), which bounds memory. Chunk k draws all its
random numbers from ``numpy.random.default_rng([seed, k])``, so the output is bit-identical for a
given seed and chunk size whatever the number of worker processes. Chunks run in a process pool;
their singles are fed in time order to one
:class:`sim.engines.embedded.coincidences.StreamingSorter`, which closes a window only when no
later chunk can add to it, so coincidences across chunk boundaries are found exactly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from pipeline.interrupts import STOP_SIGNALS, raise_if_stopped
from sim.engines.embedded.coincidences import SorterSettings, StreamingSorter
from sim.engines.embedded.digitizer import DigitizerSettings, adder_readout, blur_and_window
from sim.engines.embedded.source import (
    ANNIHILATION_KEV,
    FWHM_PER_SIGMA,
    Frame,
    VoxelSource,
    back_to_back,
    positron_range_mm,
)
from sim.engines.embedded.transport import (
    DetectorRing,
    MaterialTables,
    PhantomMedium,
    Photons,
    Transport,
)
from sim.phantoms.file import PhantomData
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

ENGINE_VERSION = "1.0"


@dataclass(frozen=True)
class EngineSettings:
    """Options of the embedded engine (the ``simulation`` config section).

    Attributes
    ----------
    chunk_decays : int
        Decays per chunk (memory: about 1 kB per decay).
    acolinearity_fwhm_deg : float
        Annihilation photon acolinearity, FWHM in degrees; 0 for exactly back to back.
    positron_range : bool
        Displace annihilations from decays by the F-18 positron range in water.
    energy_cut_kev : float
        Photons below this energy deposit it locally.
    skip_useless : bool
        Stop photons outside the crystals whose energy is too low to make a single inside the
        energy window (see :func:`useless_below_kev`); False tracks every photon to the end.
    """

    chunk_decays: int = 200_000
    acolinearity_fwhm_deg: float = 0.5
    positron_range: bool = False
    energy_cut_kev: float = 1.0
    skip_useless: bool = True

    @classmethod
    def from_config(cls, simulation_cfg: dict) -> EngineSettings:
        """From the ``simulation`` config section."""
        return cls(int(simulation_cfg["chunk_decays"]),
                   float(simulation_cfg["acolinearity_fwhm_deg"]),
                   bool(simulation_cfg["positron_range"]),
                   float(simulation_cfg["energy_cut_kev"]),
                   bool(simulation_cfg["skip_useless_photons"]))


def useless_below_kev(digitizer: DigitizerSettings) -> float:
    """Energy below which a photon cannot make an in-window single, keV.

    The lower window edge minus 6 standard deviations of the energy blurring there: a photon
    of this energy depositing all of it is blurred into the window with probability < 1e-9.
    """
    low = digitizer.energy_window_kev[0]
    sigma = (digitizer.energy_resolution * np.sqrt(digitizer.energy_reference_kev * low)
             / FWHM_PER_SIGMA)
    return max(0.0, low - 6.0 * sigma)


@dataclass
class SimulationResult:
    """Output of a run: prompt and delayed coincidences (unless a sink took them) and counts.

    ``counts`` has primaries, singles, prompts, trues, scattered, randoms and delayed.
    ``timings_s`` splits the work into source, phantom (and bore) transport, detector
    transport, digitizer and sorting (summed over workers, so it can exceed wall time).
    """

    prompts: dict | None
    delayed: dict | None
    counts: dict
    timings_s: dict = field(default_factory=dict)

    @property
    def primaries(self) -> int:
        """Decays simulated."""
        return self.counts["primaries"]


class FastEngine:
    """Embedded Monte Carlo for one phantom and scanner.

    Parameters
    ----------
    phantom : PhantomData
    scanner : Scanner
    digitizer : DigitizerSettings
    sorter : SorterSettings
    settings : EngineSettings
    """

    def __init__(self, phantom: PhantomData, scanner: Scanner, digitizer: DigitizerSettings,
                 sorter: SorterSettings, settings: EngineSettings) -> None:
        names = {int(k): v["name"] for k, v in phantom.materials.items()}
        unknown = sorted(set(np.unique(phantom.material).tolist()) - set(names))
        if unknown:
            raise ValueError(f"phantom voxels use material id(s) {unknown} missing from its "
                             "materials table")
        needed = sorted({names[int(m)] for m in np.unique(phantom.material)}
                        | {scanner.crystal_material})
        self.tables = MaterialTables.build(needed, e_min_kev=min(1.0, settings.energy_cut_kev))
        lookup = np.array([names.get(i, "air") for i in range(256)], dtype=object)
        medium = PhantomMedium.build(lookup[phantom.material], phantom.mu511_per_mm,
                                     phantom.voxel_size_mm, phantom.origin_mm, self.tables)
        self.transport = Transport(self.tables, medium, DetectorRing.build(scanner, self.tables),
                                   settings.energy_cut_kev,
                                   useless_below_kev(digitizer) if settings.skip_useless else 0.0)
        self.source = VoxelSource.from_activity(phantom.activity, phantom.voxel_size_mm,
                                                phantom.origin_mm)
        self.scanner = scanner
        self.digitizer = digitizer
        self.sorter = sorter
        self.settings = settings

    def simulate_chunk(self, frame: Frame, k: int, seed: int) -> tuple[dict, int, dict]:
        """Singles of chunk ``k`` (batch-local event ids), its decay count and timings."""
        rng = np.random.default_rng([seed, k])
        timings = {}
        t0 = time.perf_counter()
        decay_ns = frame.sample_slice_times_ns(k, rng)
        n = decay_ns.size
        points = self.source.sample_points_mm(n, rng)
        if self.settings.positron_range:
            points += positron_range_mm(n, rng)
        d1, d2 = back_to_back(n, self.settings.acolinearity_fwhm_deg, rng)
        photon_ids = np.arange(2 * n)
        photons = Photons.start(np.repeat(points, 2, axis=0),
                                np.stack([d1, d2], axis=1).reshape(-1, 3), ANNIHILATION_KEV,
                                photon_ids, self.transport.phantom)
        timings["source"] = time.perf_counter() - t0
        hits = self.transport.run(photons, rng, timings)
        t0 = time.perf_counter()
        singles = adder_readout(hits, self.scanner, decay_ns)
        singles = blur_and_window(singles, self.digitizer, rng)
        singles["annihilation_mm"] = points[singles["event"]]
        timings["digitizer"] = time.perf_counter() - t0
        return singles, n, timings

    def run(self, activity_bq: float, duration_s: float, half_life_s: float, seed: int,
            workers: int = 1, progress: bool | None = None,
            sink: Callable[[dict, dict], None] | None = None,
            singles_sink: Callable[[dict], None] | None = None) -> SimulationResult:
        """Simulate a frame; ``workers`` > 1 runs chunks in that many processes.

        With ``sink``, each chunk's (prompts, delayed) go to ``sink`` as soon as they are
        sorted (memory stays bounded) and the result holds the counts only. With
        ``singles_sink``, each chunk's singles (frame-wide event ids) go to it before
        sorting.
        """
        frame = Frame.for_chunks(activity_bq, duration_s, half_life_s,
                                 self.settings.chunk_decays)
        edges_ns = frame.slice_edges_s * 1e9
        # Later chunks' singles are never earlier than their slice start minus the time blur.
        margin_ns = 10.0 * self.digitizer.time_resolution_ps * 1e-3 / FWHM_PER_SIGMA + 1.0
        sorter = StreamingSorter(self.sorter, self.scanner.crystals_per_ring,
                                 self.scanner.crystals_per_module, self.scanner.modules_per_ring)
        prompts, delayed = [], []
        timings = {"source": 0.0, "phantom": 0.0, "detector": 0.0, "digitizer": 0.0,
                   "sorting": 0.0}
        counts = dict.fromkeys(("primaries", "singles", "prompts", "trues", "scattered",
                                "randoms", "delayed"), 0)
        primaries = 0
        log.info("%.4g expected decays in %d chunk(s), %d worker(s)", frame.expected_decays,
                 frame.n_slices, workers)
        chunks = self._chunk_results(frame, seed, workers)
        # Closed explicitly whatever happens to the loop (an error in the sink, Ctrl-C):
        # that stops the pool's workers now, not at garbage collection or exit.
        try:
            bar = tqdm(chunks, total=frame.n_slices, unit="chunk", desc="simulate",
                       disable=(not sys.stderr.isatty()) if progress is None else not progress)
            for k, (singles, n, chunk_timings) in enumerate(bar):
                raise_if_stopped()  # a stop whose exception was swallowed (pipeline.interrupts)
                for key, value in chunk_timings.items():
                    timings[key] += value
                singles["event"] = singles["event"] + primaries
                singles["photon"] = singles["photon"] + 2 * primaries
                primaries += n
                if singles_sink is not None:
                    singles_sink(singles)
                t0 = time.perf_counter()
                horizon = edges_ns[k + 1] - margin_ns if k + 1 < frame.n_slices else np.inf
                p, d = sorter.add(singles, horizon)
                timings["sorting"] += time.perf_counter() - t0
                kinds = np.bincount(p["kind"], minlength=3)
                for key, value in (("primaries", n), ("singles", singles["time_ns"].size),
                                   ("prompts", p["kind"].size), ("trues", kinds[0]),
                                   ("scattered", kinds[1]), ("randoms", kinds[2]),
                                   ("delayed", d["kind"].size)):
                    counts[key] += int(value)
                if sink is None:
                    prompts.append(p)
                    delayed.append(d)
                else:
                    sink(p, d)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if sink is not None:
            return SimulationResult(None, None, counts, timings)
        return SimulationResult(_concat(prompts), _concat(delayed), counts, timings)

    def _chunk_results(self, frame: Frame, seed: int, workers: int):
        if workers <= 1 or frame.n_slices == 1:
            return (self.simulate_chunk(frame, k, seed) for k in range(frame.n_slices))
        return _pool_results(self, frame, seed, workers)


def _pool_results(engine: FastEngine, frame: Frame, seed: int, workers: int):
    # The engine (phantom tables, a few MB) goes to each worker once, through the initializer,
    # instead of being pickled with every chunk.
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                               initargs=(engine, os.getpid()))
    try:
        futures = [pool.submit(_worker_chunk, frame, k, seed) for k in range(frame.n_slices)]
        for future in futures:
            yield future.result()
    except BaseException:
        # Ctrl-C, SIGTERM, an error or the consumer stopping: the queued chunks are dropped
        # and the workers stopped now, instead of the pool's exit running every chunk left.
        # Workers ignore the stop signals (below), so they are killed: they hold no files.
        processes = list((pool._processes or {}).values())  # no public terminate() here
        for process in processes:
            process.kill()
        for process in processes:
            process.join(timeout=5)
        # A worker killed while sending its chunk leaves the pool's manager thread waiting
        # for the rest of the message, for ever (and the interpreter's exit waits for that
        # thread): with the parent's end of the result pipe closed too, no writer is left,
        # the read ends and the thread shuts the broken pool down. It is then joined: left
        # running, it can close its wake-up pipe while the exit hook writes to it (CPython
        # 3.11: "Exception ignored ... Bad file descriptor" after the stop line).
        results = getattr(pool, "_result_queue", None)
        if results is not None:
            results._writer.close()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


_WORKER_ENGINE: list[FastEngine] = []  # one per worker process, set by _init_worker


def _init_worker(engine: FastEngine, parent_pid: int) -> None:
    # Ctrl-C, and a SIGTERM sent to the process group (Snakemake, a cluster), reach every
    # worker: only the parent handles them (one message, and it kills the workers). If the
    # parent dies without stopping them (SIGKILL), the kernel kills them too (Linux's
    # parent-death signal); the check after it closes the race with a parent that died first.
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:
            os._exit(1)
    _WORKER_ENGINE[:] = [engine]


def _worker_chunk(frame: Frame, k: int, seed: int):
    return _WORKER_ENGINE[0].simulate_chunk(frame, k, seed)


def _concat(tables: list[dict]) -> dict:
    return {key: np.concatenate([t[key] for t in tables]) for key in tables[0]}
