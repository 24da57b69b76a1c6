"""Coincidence sorter against a brute-force reference written here (every pair of singles
compared, windows and policies applied with plain Python), fed in one batch and in many
batches; the truth classes of pairs."""

from __future__ import annotations

import numpy as np
import pytest

from sim.engines.embedded.coincidences import (
    KIND_RANDOM,
    KIND_SCATTERED,
    KIND_TRUE,
    POLICIES,
    SorterSettings,
    StreamingSorter,
)

CPR, CPM, MODULES = 184, 8, 23


def _random_singles(n: int, rate_per_ns: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate_per_ns, n))
    event = np.arange(n) // 2  # pairs of singles share an event
    return {
        "time_ns": t, "crystal": rng.integers(0, CPR * 4, n).astype(np.int32),
        "energy_kev": rng.uniform(350, 650, n), "pos_mm": rng.normal(size=(n, 3)),
        "event": event, "photon": np.arange(n), "n_compton": rng.integers(0, 2, n),
        "n_rayleigh": np.zeros(n, int), "annihilation_mm": rng.normal(size=(n, 3)),
    }


def _good(c1: int, c2: int, min_sector_difference: int) -> bool:
    s1, s2 = (c1 % CPR) // CPM, (c2 % CPR) // CPM
    diff = min(abs(s1 - s2), MODULES - abs(s1 - s2))
    return c1 != c2 and diff >= min_sector_difference


def _reference(singles: dict, settings: SorterSettings, offset_ns: float) -> set:
    """Pairs (opener, partner) by brute force: every single opens a window."""
    t, c, e = singles["time_ns"], singles["crystal"], singles["energy_kev"]
    pairs = set()
    for i in range(t.size):
        if offset_ns == 0:
            partners = [j for j in range(i + 1, t.size) if t[j] - t[i] <= settings.window_ns]
        else:
            partners = [j for j in range(t.size)
                        if offset_ns <= t[j] - t[i] <= offset_ns + settings.window_ns]
        goods = [j for j in partners if _good(c[i], c[j], settings.min_sector_difference)]
        if settings.policy == "TakeAllGoods":
            chosen = goods
        elif settings.policy == "RemoveMultiples":
            chosen = goods if len(partners) == 1 else []
        elif settings.policy == "TakeIfOnlyOneGood":
            chosen = goods if len(goods) == 1 else []
        else:
            chosen = [max(goods, key=lambda j: e[j])] if goods else []
        pairs.update((i, j) for j in chosen)
    return pairs


def _as_pairs(columns: dict, singles: dict) -> set:
    index = {float(t): k for k, t in enumerate(singles["time_ns"])}
    return {(index[float(a)], index[float(b)])
            for a, b in zip(columns["time1_ns"], columns["time2_ns"], strict=True)}


@pytest.mark.parametrize("policy", POLICIES)
def test_sorter_matches_brute_force_in_one_and_many_batches(policy):
    settings = SorterSettings(window_ns=10.0, delay_ns=40.0, policy=policy,
                              min_sector_difference=2)
    singles = _random_singles(700, rate_per_ns=0.15, seed=3)  # multiples are frequent
    want_prompts = _reference(singles, settings, 0.0)
    want_delayed = _reference(singles, settings, settings.delay_ns)
    assert len(want_prompts) > 50 and len(want_delayed) > 50

    one = StreamingSorter(settings, CPR, CPM, MODULES)
    prompts, delayed = one.add(singles)
    assert _as_pairs(prompts, singles) == want_prompts
    assert _as_pairs(delayed, singles) == want_delayed

    # Batches cut at arbitrary times, shuffled inside, horizons at the cuts.
    many = StreamingSorter(settings, CPR, CPM, MODULES)
    cuts = [0, 100, 101, 350, 600, 700]
    got_p, got_d = set(), set()
    rng = np.random.default_rng(0)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        batch = {k: v[a:b] for k, v in singles.items()}
        perm = rng.permutation(b - a)
        batch = {k: v[perm] for k, v in batch.items()}
        horizon = singles["time_ns"][b] if b < 700 else np.inf
        p, d = many.add(batch, horizon)
        got_p |= _as_pairs(p, singles)
        got_d |= _as_pairs(d, singles)
    assert got_p == want_prompts
    assert got_d == want_delayed


def test_truth_kind_of_pairs():
    settings = SorterSettings(window_ns=10.0, delay_ns=100.0)
    base = {
        "time_ns": np.array([0.0, 1.0, 50.0, 51.0, 300.0, 301.0]),
        "crystal": np.array([0, 92, 0, 92, 0, 92], np.int32),
        "energy_kev": np.full(6, 511.0), "pos_mm": np.zeros((6, 3)),
        "event": np.array([0, 0, 1, 1, 2, 3]), "photon": np.array([0, 1, 2, 3, 4, 6]),
        "n_compton": np.array([0, 0, 1, 0, 0, 0]), "n_rayleigh": np.zeros(6, int),
        "annihilation_mm": np.ones((6, 3)),
    }
    prompts, _ = StreamingSorter(settings, CPR, CPM, MODULES).add(base)
    assert prompts["kind"].tolist() == [KIND_TRUE, KIND_SCATTERED, KIND_RANDOM]
    assert np.isnan(prompts["annihilation_mm"][2]).all()
    assert np.isfinite(prompts["annihilation_mm"][:2]).all()


def test_bad_sorter_settings():
    with pytest.raises(ValueError, match="multiples policy 'keepAll'"):
        SorterSettings(policy="keepAll")
    with pytest.raises(ValueError, match="must exceed the coincidence window"):
        SorterSettings(window_ns=10.0, delay_ns=5.0)
