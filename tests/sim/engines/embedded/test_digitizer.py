"""Digitizer: adder and readout against a plain-Python reference; the singles energy spectrum
of a point source (photopeak position and resolution) against the configured blurring."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from scipy.optimize import curve_fit

from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import (
    DigitizerSettings,
    adder_readout,
    blur_and_window,
    blur_within_window,
)
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.embedded.source import Frame
from sim.engines.embedded.transport import C_MM_PER_NS, Hits
from sim.scanner.geometry import Scanner
from tests.sim.synthetic import point_in_air


def test_adder_and_readout_match_a_python_reference():
    scanner = Scanner()
    rng = np.random.default_rng(4)
    m = 3000
    photon = rng.integers(0, 400, m)
    # Crystals clustered in a few blocks so that groups have several hits.
    block_crystals = scanner.crystal_id(rng.integers(0, 16, m), rng.integers(0, 24, m))
    hits = Hits(photon, block_crystals, rng.uniform(1, 300, m), rng.normal(size=(m, 3)),
                rng.uniform(100, 200, m), rng.integers(0, 3, m).astype(np.int16),
                np.zeros(m, np.int16))
    decay_ns = rng.uniform(0, 1e6, 200)
    singles = adder_readout(hits, scanner, decay_ns)

    pulses = defaultdict(list)
    for k in range(m):
        pulses[(photon[k] // 2, int(block_crystals[k]))].append(k)
    per_block = defaultdict(list)
    for (event, crystal), ks in pulses.items():
        e = hits.energy_kev[ks].sum()
        centroid = (hits.energy_kev[ks, None] * hits.pos_mm[ks]).sum(0) / e
        times = decay_ns[event] + hits.path_mm[ks] / C_MM_PER_NS
        ring, index = divmod(crystal, 184)
        block = (ring // 8, index // 8)
        per_block[(event, block)].append((e, crystal, centroid, times.min()))
    expected = {}
    for key, group in per_block.items():
        winner = max(group, key=lambda g: g[0])
        expected[(key[0], winner[1])] = (sum(g[0] for g in group), winner[2], winner[3])
    assert len(singles["event"]) == len(expected)
    for k in range(len(singles["event"])):
        e, centroid, t = expected[(int(singles["event"][k]), int(singles["crystal"][k]))]
        assert singles["energy_kev"][k] == pytest.approx(e)
        np.testing.assert_allclose(singles["pos_mm"][k], centroid, atol=1e-9)
        assert singles["time_ns"][k] == pytest.approx(t)


def test_blurring_and_window():
    rng = np.random.default_rng(0)
    n = 400_000
    settings = DigitizerSettings(0.15, 511.0, 300.0, (350.0, 650.0))
    singles = {"energy_kev": np.full(n, 300.0), "time_ns": np.zeros(n), "crystal": np.zeros(n)}
    out = blur_and_window(singles, settings, rng)
    # 300 keV: FWHM 0.15 sqrt(511 * 300); the window keeps the part above 350 keV only.
    sigma = 0.15 * np.sqrt(511 * 300) / 2.3548
    from scipy.stats import norm
    assert out["energy_kev"].size / n == pytest.approx(norm.sf(50 / sigma), rel=0.03)
    assert out["energy_kev"].min() >= 350
    # Time: FWHM 300 ps per single.
    wide = DigitizerSettings(0.15, 511.0, 300.0, (1.0, 2000.0))
    out = blur_and_window({**singles, "energy_kev": np.full(n, 511.0)}, wide, rng)
    assert out["time_ns"].std() * 2.3548 == pytest.approx(0.300, rel=0.01)


@pytest.mark.parametrize("deposited_kev", [120.0, 300.0, 511.0, 640.0, 900.0])
def test_energies_blurred_within_the_window_are_the_windowed_blurring(deposited_kev):
    """Against scipy's truncated normal with the blurring's sigma at the deposit (a deposit
    far below, just below, at, inside and above the window): Kolmogorov-Smirnov p > 0.01
    on 50,000 draws, all inside the window, and against blurring then windowing."""
    import scipy.stats
    settings = DigitizerSettings(0.15, 511.0, 300.0, (350.0, 650.0))
    rng = np.random.default_rng(3)
    n = 50_000
    energy = blur_within_window(np.full(n, deposited_kev), settings, rng)
    assert energy.min() >= 350.0 and energy.max() <= 650.0
    sigma = 0.15 * np.sqrt(511 * deposited_kev) / 2.3548
    reference = scipy.stats.truncnorm((350.0 - deposited_kev) / sigma,
                                      (650.0 - deposited_kev) / sigma,
                                      loc=deposited_kev, scale=sigma)
    assert scipy.stats.kstest(energy, reference.cdf).pvalue > 0.01
    if deposited_kev in (300.0, 511.0, 640.0):  # enough kept to compare with the chain
        big = 2_000_000
        kept = blur_and_window({"energy_kev": np.full(big, deposited_kev),
                                "time_ns": np.zeros(big)}, settings, rng)["energy_kev"]
        assert scipy.stats.ks_2samp(energy, kept).pvalue > 0.01


def test_singles_photopeak_of_a_point_source():
    """Window opened wide: the photopeak is at 511 keV with 15 % FWHM (+- 1 point)."""
    digitizer = DigitizerSettings(0.15, 511.0, 300.0, (1.0, 2000.0))
    engine = FastEngine(point_in_air(), Scanner(), digitizer, SorterSettings(),
                        EngineSettings(chunk_decays=40_000))
    singles, _, _ = engine.simulate_chunk(Frame(4e5, 0.1, 6586.2, 1), 0, seed=11)
    energy = singles["energy_kev"]
    counts, edges = np.histogram(energy, np.arange(380, 700, 4.0))
    centres = (edges[1:] + edges[:-1]) / 2

    def peak(e, a, mu, sigma, b):
        return a * np.exp(-0.5 * ((e - mu) / sigma) ** 2) + b

    (a, mu, sigma, b), _ = curve_fit(peak, centres, counts, p0=(counts.max(), 511, 30, 0))
    fwhm_fraction = 2.3548 * abs(sigma) / mu
    assert mu == pytest.approx(511, abs=3)
    assert abs(fwhm_fraction - 0.15) < 0.01, fwhm_fraction
