"""Scattered coincidences and randoms of the statistical engine against the embedded
Monte Carlo at a rate where randoms are a third of the prompts: counts within their
Poisson errors (the sample's included) and distributions consistent (seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.embedded.source import Frame
from sim.engines.statistical.background import (
    background_sample,
    draw_randoms,
    draw_scattered,
    randoms_mean,
)
from tests.sim.engines.statistical.helpers import DIGITIZER, SCANNER, features, sphere


def _chi2(a: np.ndarray, b: np.ndarray) -> float:
    lo = min(a.min(), b.min())
    ha = np.bincount(a - lo)
    hb = np.bincount(b - lo, minlength=ha.size)
    ha = np.pad(ha, (0, hb.size - ha.size))
    used = (ha + hb) >= 20
    return scipy.stats.chi2_contingency(np.stack([ha[used], hb[used]]))[1]


@pytest.mark.slow
def test_scattered_and_randoms_match_the_monte_carlo():
    phantom = sphere(15.0, material="water")
    engine = FastEngine(phantom, SCANNER, DIGITIZER, SorterSettings(),
                        EngineSettings(chunk_decays=200_000))
    sample = background_sample(engine, 2e6, seed=11, workers=2)
    frame = Frame(1e7, 0.2, 6586.2, 1)
    scattered = draw_scattered(sample, SCANNER, frame, 2, seed=5)
    randoms = draw_randoms(sample, SCANNER, frame, 10.0, 2, seed=5)
    delayed = draw_randoms(sample, SCANNER, frame, 10.0, 2, seed=5, delay_ns=500.0)
    mc = engine.run(frame.activity_bq, frame.duration_s, frame.half_life_s, seed=7, workers=2)
    counts = mc.counts
    # Scattered per decay: the sample's estimate has its own Poisson error.
    expected = sample.scattered["kind"].size / sample.decays * frame.expected_decays
    sigma = np.sqrt(counts["scattered"] + expected**2 / sample.scattered["kind"].size)
    assert abs(scattered["kind"].size - counts["scattered"]) < 3 * sigma + 3 * np.sqrt(expected)
    # Randoms: the closed-form mean against the Monte Carlo's randoms and delayed window.
    mean = randoms_mean(sample, SCANNER, frame, 10.0, 2)
    singles_error = mean * 2 / np.sqrt(sample.singles_crystal.size)
    for measured in (counts["randoms"], counts["delayed"]):
        assert abs(mean - measured) < 3 * np.sqrt(measured) + 3 * singles_error
    for drawn in (randoms["kind"].size, delayed["kind"].size):
        assert abs(drawn - mean) < 4 * np.sqrt(mean)
    assert np.all((randoms["time2_ns"] - randoms["time1_ns"] >= 0)
                  & (randoms["time2_ns"] - randoms["time1_ns"] <= 10.0))
    assert np.all(delayed["time2_ns"] - delayed["time1_ns"] >= 500.0)
    prompts = mc.prompts
    for kind, drawn in ((1, scattered), (2, randoms)):
        a = features(drawn)
        b = features({k: v[prompts["kind"] == kind] for k, v in prompts.items()})
        for name in ("ring_sum", "separation", "view"):
            assert _chi2(a[name], b[name]) > 1e-3, (kind, name)
        assert scipy.stats.ks_2samp(a["radius"], b["radius"]).pvalue > 1e-3, kind
    a = features(scattered)
    b = features({k: v[prompts["kind"] == 1] for k, v in prompts.items()})
    assert _chi2(a["ring_difference"], b["ring_difference"]) > 1e-3
    assert scipy.stats.ks_2samp(a["energy"], b["energy"]).pvalue > 1e-3
