"""The statistical engine's per-phantom preparation, computed once and shared by the
phantom's acquisitions: the candidate lines of the trues with their envelopes
(:mod:`.trues`) and the background sample (:mod:`.background`).

At inspection counts the drawing is quick and this preparation is most of a simulate job's
time; a phantom's acquisitions differ only in their counts, so the workflow's
``statistical_prep`` rule makes it once (``python -m sim prepare-statistical``) and every
simulate job of the phantom reads it. The acquisitions then share the background sample: the
model of their scattered coincidences and randoms (a Monte Carlo estimate, like the detector
response) is the same for both, while their counts and every event are drawn independently
with the job's own seed. The engine validation does not share it: its noise realisations
each run their own sample, so that the spread between realisations holds the sample's noise.

``statistical/{phantom}.h5``: groups ``trues`` (the :class:`.trues.ExpectedTrues` arrays and
scalars, the tracks in ``trues/tracks``) and ``background`` (the sample's scattered
coincidences in ``background/scattered`` and its singles), attribute ``prep_spec`` (JSON:
what the preparation depends on, :func:`pipeline.specs.statistical_prep_spec`),
``prep_version`` (:data:`PREP_VERSION`; a file of another version is refused) and
provenance. A simulate job given the file checks that ``prep_spec`` is its own phantom's,
scanner's and simulation settings' before using it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py

from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5
from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.statistical.background import BackgroundSample, background_sample
from sim.engines.statistical.projection import Tracks
from sim.engines.statistical.trues import ExpectedTrues, expected_trues
from sim.phantoms.file import PhantomData
from sim.scanner.geometry import Scanner

#: How the preparation is computed; a file of another version is refused (version 2: the
#: lines' pairs are tube averages by a quadrature over the cells, :mod:`.trues`; version 3:
#: their axial blur no longer cut off at the grid's end planes).
PREP_VERSION = 3

#: The keys of a simulate spec the preparation depends on (and the prep spec's own seed).
PREP_KEYS = ("dataset", "phantom", "scanner", "simulation")


@dataclass(frozen=True)
class Preparation:
    """What every acquisition of one phantom shares."""

    expected: ExpectedTrues
    sample: BackgroundSample


#: Keys of the statistical section that change how a job draws and writes, not the
#: preparation it reads.
NOT_PREPARED = ("output", "trues", "slice_candidates")


def prep_key(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a simulate (or prep) spec a preparation depends on; the statistical
    section's :data:`NOT_PREPARED` keys are left out."""
    key = {k: spec[k] for k in PREP_KEYS}
    simulation = json.loads(json.dumps(key["simulation"]))
    for name in NOT_PREPARED:
        simulation.get("statistical", {}).pop(name, None)
    key["simulation"] = simulation
    return key


def prepare(phantom: PhantomData, spec: dict[str, Any], background_decays: int, seed: int,
            workers: int = 1) -> Preparation:
    """The lines and envelopes of ``phantom`` and its background sample of
    ``background_decays`` decays drawn with ``seed`` (``spec``: the scanner and simulation
    sections of a simulate or prep spec)."""
    scanner = Scanner.from_config(spec["scanner"])
    expected = expected_trues(phantom.activity, phantom.mu511_per_mm, phantom.voxel_size_mm,
                              phantom.origin_mm, scanner)
    engine = FastEngine(phantom, scanner, DigitizerSettings.from_config(spec["scanner"]),
                        SorterSettings.from_config(spec["scanner"]),
                        EngineSettings.from_config(spec["simulation"]))
    return Preparation(expected, background_sample(engine, background_decays, seed,
                                                   workers=workers))


def write_preparation(path: str | Path, prep: Preparation, prep_spec: dict[str, Any],
                      attrs: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``prep`` atomically with its spec (:func:`prep_key` of it is what readers
    check) and ``attrs`` (provenance)."""
    path = Path(path)
    e, s = prep.expected, prep.sample
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        trues = f.create_group("trues")
        tracks = trues.create_group("tracks")
        for field in fields(Tracks):
            tracks.create_dataset(field.name, data=getattr(e.tracks, field.name))
        for name in ("track", "ring1", "ring2", "envelope", "pairs", "track_lo", "track_hi"):
            trues.create_dataset(name, data=getattr(e, name))
        for name in ("density_max", "z_lo_mm", "z_hi_mm"):
            trues.attrs[name] = float(getattr(e, name))
        background = f.create_group("background")
        background.attrs["decays"] = int(s.decays)
        scattered = background.create_group("scattered")
        for name, array in s.scattered.items():
            scattered.create_dataset(name, data=array)
        for name in ("singles_crystal", "singles_energy_kev", "singles_pos_mm"):
            background.create_dataset(name, data=getattr(s, name))
        f.attrs.update(attrs)
        f.attrs["prep_spec"] = json.dumps(prep_spec, sort_keys=True)
        f.attrs["prep_version"] = PREP_VERSION
    return path


def read_preparation(path: str | Path, spec: dict[str, Any]) -> Preparation:
    """Read a preparation made for the phantom, scanner and simulation settings of the
    simulate ``spec``; a file made for others is refused naming it and what differs."""
    path = Path(path)
    with open_hdf5(path, "statistical preparation file") as f:
        attrs = decoded_attrs(f)
        if ("prep_spec" not in attrs or "trues" not in f or "background" not in f
                or "pairs" not in f["trues"]):
            raise ValueError(f"{path}: not a statistical preparation file (python -m sim "
                             "prepare-statistical writes them)")
        if attrs.get("prep_version") != PREP_VERSION:
            raise ValueError(f"{path}: made by another version of the statistical preparation "
                             f"({attrs.get('prep_version', 1)}; this one is {PREP_VERSION}): "
                             "delete it and run the statistical_prep job again")
        stored = prep_key(json.loads(attrs["prep_spec"]))
        wanted = prep_key(spec)
        differ = [k for k in PREP_KEYS if stored[k] != wanted[k]]
        if differ:
            raise ValueError(f"{path}: made for another {', '.join(differ)} than this job's "
                             f"({', '.join(f'{k}: file {stored[k]!r}' for k in differ[:1])}); "
                             "rebuild it with python -m sim prepare-statistical")
        t, b = f["trues"], f["background"]
        tracks = Tracks(**{field.name: t["tracks"][field.name][...] for field in fields(Tracks)})
        expected = ExpectedTrues(
            tracks, *(t[n][...] for n in ("track", "ring1", "ring2", "envelope", "pairs")),
            float(t.attrs["density_max"]), t["track_lo"][...], t["track_hi"][...],
            float(t.attrs["z_lo_mm"]), float(t.attrs["z_hi_mm"]))
        sample = BackgroundSample(int(b.attrs["decays"]),
                                  {n: d[...] for n, d in b["scattered"].items()},
                                  b["singles_crystal"][...], b["singles_energy_kev"][...],
                                  b["singles_pos_mm"][...])
    return Preparation(expected, sample)
