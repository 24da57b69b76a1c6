"""The engine interface: every engine of the schema is found by its name and implements the
interface; the stage runs whatever engine the spec names, so a new engine is one module (and
one word of the schema)."""

from __future__ import annotations

import sys
import types

import h5py
import numpy as np
import pytest

from sim.engines import base
from sim.engines.stage import run_simulation


def test_every_engine_of_the_schema_is_found_by_its_name():
    assert base.engine_names() == ("fast", "opengate", "gate9", "statistical")
    for name in base.engine_names():
        engine = base.engine_named(name)
        assert engine.name == name and callable(engine.run)
    with pytest.raises(ValueError, match="engine: 'geant3' is not one of"):
        base.engine_named("geant3")


def test_the_stage_runs_the_engine_the_spec_names(monkeypatch, tmp_path, make_spec,
                                                  default_config):
    from pipeline.specs import simulate_spec

    seen = []

    class Toy:
        name = "toy"

        def run(self, job):
            seen.append(job)
            job.out_h5.write_text("list-mode")
            return {"prompts": 3}

    module = types.ModuleType("sim.engines.toy")
    module.ENGINE = Toy()
    monkeypatch.setitem(sys.modules, "sim.engines.toy", module)
    monkeypatch.setattr(base, "engine_names", lambda: ("fast", "toy"))
    spec = {**simulate_spec(default_config, "tubes", "tube_0000", "short"), "engine": "toy"}
    with h5py.File(tmp_path / "p.h5", "w") as f:  # what the stage reads of the phantom file
        f["material"] = np.zeros((2, 2, 2), np.uint8)
        f.attrs.update(voxel_size_mm=[1.0] * 3, origin_mm=[0.0] * 3, phantom_name="tube_0000",
                       dataset="tubes")
    assert run_simulation(spec, tmp_path / "p.h5", tmp_path / "out.h5", workers=2) == \
        {"prompts": 3}
    (job,) = seen
    # The job is the spec parsed once: typed scanner and acquisition, seed, writing options.
    assert job.scanner.crystals_per_ring == default_config["scanner"]["crystals_per_ring"]
    assert job.acquisition.activity_bq == default_config["acquisitions"]["short"]["activity_bq"]
    assert job.seed == spec["seed"] and job.workers == 2 and not job.overwrite
    with pytest.raises(ValueError, match="missing key.s. seed"):
        base.SimulationJob.from_spec({k: v for k, v in spec.items() if k != "seed"},
                                     tmp_path / "p.h5", tmp_path / "x.h5")
