"""Scattered coincidences and randoms of the statistical simulation, from a short Monte
Carlo run of the same phantom.

A *background sample* is the embedded engine run on the phantom for ``decays`` decays
(seeded): its scattered prompts (a photon scattered in the phantom) and its singles. From
it, for an acquisition of ``D`` expected decays:

* **scattered**: a Poisson number with mean ``D x scattered per decay of the sample``;
  each is a scattered coincidence of the sample drawn at random, turned about the scanner
  axis by a random whole number of modules' worth of columns only when ``rotate`` is set
  (for phantoms symmetric about the axis), and each end moved by an independent random
  shift of up to ``jitter_columns`` columns and ``jitter_rings`` rings. The shifts smooth
  the sample's distribution (a kernel density estimate of it on the crystal grid) so that
  a sample event drawn many times does not stack on one line and the sample's own noise is
  not copied into every acquisition; scatter is spread over tens of millimetres, the
  shifts over a few (they widen the ring difference's spread by their own variance, a
  few rings squared). The sample should hold several times the scattered coincidences of
  the largest acquisition compared with it event by event. Energies, interaction depths
  within the crystal, the time difference and the scatter counts are the sample event's;
  its annihilation point is kept as truth though the shifted line no longer passes
  through it exactly.
* **randoms** (prompts and the delayed window alike, independent draws): each crystal's
  singles rate is the activity times its singles per decay in the sample; pairs of
  singles fall within the window ``tau`` at the rate ``2 tau S_i S_j`` (every single opens
  a window, as the sorter); a Poisson number with mean ``2 tau sum_ij s_i s_j int A(t)^2
  dt`` over the pairs the sorter records is drawn by picking two singles of the sample
  at random (crystal, energy and position with them) and keeping good pairs. The
  delayed window's pairs are drawn the same way, with the delay added to the second
  single's time.

This leaves out what a Monte Carlo at the acquisition's own rate has and this model does
not: dead time and pile-up (the embedded engine has neither), and multiple coincidences
other than pairs (with the sorter's ``TakeAllGoods`` policy the prompts hold every good pair
of a multiple, which these independent pairs reproduce in expectation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engines.embedded.engine import FastEngine
from sim.engines.embedded.source import Frame
from sim.engines.statistical.events import recorded_pairs
from sim.scanner.geometry import Scanner

KIND_SCATTERED, KIND_RANDOM = 1, 2


@dataclass(frozen=True)
class BackgroundSample:
    """What the statistical engine takes from a short Monte Carlo run of the phantom.

    Attributes
    ----------
    decays : int
        Decays simulated.
    scattered : dict of numpy.ndarray
        The scattered prompts (list-mode columns).
    singles_crystal : numpy.ndarray of int32
    singles_energy_kev : numpy.ndarray of float32
    singles_pos_mm : numpy.ndarray of float32, shape (n, 3)
    """

    decays: int
    scattered: dict
    singles_crystal: np.ndarray
    singles_energy_kev: np.ndarray
    singles_pos_mm: np.ndarray


def background_sample(engine: FastEngine, decays: float, seed: int,
                      workers: int = 1) -> BackgroundSample:
    """Run ``engine`` (the phantom's embedded Monte Carlo) for about ``decays`` decays.

    The frame is 1 s of a constant activity (no decay), so the sample's per-decay rates do
    not depend on any half-life.
    """
    singles = []
    result = engine.run(float(decays), 1.0, 1e30, seed, workers=workers, progress=False,
                        singles_sink=lambda s: singles.append(
                            {k: s[k] for k in ("crystal", "energy_kev", "pos_mm")}))
    prompts = result.prompts
    scattered = {k: v[prompts["kind"] == KIND_SCATTERED] for k, v in prompts.items()}
    return BackgroundSample(
        result.primaries, scattered,
        np.concatenate([s["crystal"] for s in singles]).astype(np.int32),
        np.concatenate([s["energy_kev"] for s in singles]).astype(np.float32),
        np.concatenate([s["pos_mm"] for s in singles]).astype(np.float32))


def _move_crystals(scanner: Scanner, crystal: np.ndarray, pos_mm: np.ndarray | None,
                   d_index: np.ndarray, d_ring: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Crystals moved by column and ring steps (rings clipped), with their interaction
    points carried along in the crystals' own frames (``None`` when ``pos_mm`` is)."""
    ring, index = scanner.ring_and_index(crystal)
    new = scanner.crystal_id(np.clip(ring + d_ring, 0, scanner.rings - 1),
                             np.mod(index + d_index, scanner.crystals_per_ring))
    if pos_mm is None:
        return new, None
    old_frames = scanner.crystal_frames(crystal)
    local = np.einsum("nij,nj->ni", old_frames,
                      pos_mm - scanner.crystal_position_mm(crystal, 0.0))
    moved = (scanner.crystal_position_mm(new, 0.0)
             + np.einsum("ni,nij->nj", local, scanner.crystal_frames(new)))
    return new, moved.astype(np.float32)


def draw_scattered(sample: BackgroundSample, scanner: Scanner, frame: Frame,
                   min_sector_difference: int, seed: int, jitter_columns: int = 2,
                   jitter_rings: int = 2, rotate: bool = False,
                   pairs_only: bool = False) -> dict:
    """The scattered coincidences of a frame (list-mode columns, time order); with
    ``pairs_only`` the same coincidences' ``crystal1``, ``crystal2`` and ``kind`` alone, in
    no particular order (what a coincidence histogram counts)."""
    rng = np.random.default_rng([seed, 1])
    per_decay = sample.scattered["kind"].size / sample.decays
    n = int(rng.poisson(frame.expected_decays * per_decay))
    if n and sample.scattered["kind"].size == 0:
        raise ValueError("the background sample holds no scattered coincidence")
    pick = rng.integers(sample.scattered["kind"].size, size=n) if n else np.zeros(0, int)
    keys = ("crystal1", "crystal2", "kind") if pairs_only else sample.scattered
    ev = {k: sample.scattered[k][pick] for k in keys}
    turn = (rng.integers(scanner.modules_per_ring, size=n) * scanner.crystals_per_module
            if rotate else np.zeros(n, np.int64))
    out = dict(ev)
    for end in ("1", "2"):
        d_index = turn + rng.integers(-jitter_columns, jitter_columns + 1, size=n)
        d_ring = rng.integers(-jitter_rings, jitter_rings + 1, size=n)
        pos = None if pairs_only else ev[f"pos{end}_mm"].astype(float)
        out[f"crystal{end}"], moved = _move_crystals(scanner, ev[f"crystal{end}"], pos,
                                                     d_index, d_ring)
        if not pairs_only:
            out[f"pos{end}_mm"] = moved
    good = recorded_pairs(scanner, out["crystal1"], out["crystal2"], min_sector_difference)
    if pairs_only:
        return {k: v[good] for k, v in out.items()}
    decay_ns = np.sort(frame.time_at_fraction_s(rng.random(n))) * 1e9
    mean_ns = (ev["time1_ns"] + ev["time2_ns"]) / 2
    out["time1_ns"] = decay_ns + (ev["time1_ns"] - mean_ns)
    out["time2_ns"] = decay_ns + (ev["time2_ns"] - mean_ns)
    order = np.argsort(out["time1_ns"][good], kind="stable")
    return {k: v[good][order] for k, v in out.items()}


def randoms_mean(sample: BackgroundSample, scanner: Scanner, frame: Frame, window_ns: float,
                 min_sector_difference: int) -> float:
    """Expected random pairs of a frame: ``2 tau int A^2 dt sum_good s_i s_j``."""
    singles = np.bincount(sample.singles_crystal, minlength=scanner.n_crystals) / sample.decays
    modules = (np.arange(scanner.n_crystals) % scanner.crystals_per_ring
               ) // scanner.crystals_per_module
    per_module = np.bincount(modules, weights=singles, minlength=scanner.modules_per_ring)
    # Sum over ordered pairs of crystals in modules at least min_sector_difference apart.
    m = np.arange(scanner.modules_per_ring)
    diff = np.abs(m[:, None] - m[None, :])
    diff = np.minimum(diff, scanner.modules_per_ring - diff)
    good = diff >= min_sector_difference
    pairs = float(per_module @ good @ per_module) / 2.0  # unordered
    return _window_a2(frame, window_ns) * pairs


def _window_a2(frame: Frame, window_ns: float) -> float:
    """``2 tau int_0^T A(t)^2 dt`` (s^-1 squared times s), the pair rate factor."""
    tau_s = frame.tau_s
    a2 = frame.activity_bq**2 * tau_s / 2.0 * -np.expm1(-2.0 * frame.duration_s / tau_s)
    return 2.0 * window_ns * 1e-9 * a2


def draw_randoms(sample: BackgroundSample, scanner: Scanner, frame: Frame, window_ns: float,
                 min_sector_difference: int, seed: int, delay_ns: float = 0.0,
                 first_event: int = 0) -> dict:
    """Random pairs of a frame (prompts, or with ``delay_ns`` the delayed window)."""
    rng = np.random.default_rng([seed, 2 if delay_ns == 0 else 3])
    mean = randoms_mean(sample, scanner, frame, window_ns, min_sector_difference)
    total = sample.singles_crystal.size
    # Pairs of singles drawn at random from all pairs, thinned to the good ones: the mean
    # over all unordered pairs is 2 tau int A^2 dt (sum_i s_i)^2 / 2.
    mean_all = _window_a2(frame, window_ns) * (total / sample.decays) ** 2 / 2.0
    n = int(rng.poisson(mean_all)) if mean > 0 else 0
    i = rng.integers(total, size=n)
    j = rng.integers(total, size=n)
    good = recorded_pairs(scanner, sample.singles_crystal[i], sample.singles_crystal[j],
                       min_sector_difference)
    i, j = i[good], j[good]
    n = i.size
    # Decay-weighted times: the pair rate follows A(t)^2, the square of the decaying activity.
    double = Frame(frame.activity_bq, frame.duration_s, frame.half_life_s / 2.0, 1)
    t1 = np.sort(double.time_at_fraction_s(rng.random(n))) * 1e9
    t2 = t1 + delay_ns + rng.random(n) * window_ns
    events = first_event + 2 * np.arange(n)
    nan3 = np.full((n, 3), np.nan, np.float32)
    zeros = np.zeros(n, np.uint8)
    return {
        "crystal1": sample.singles_crystal[i], "crystal2": sample.singles_crystal[j],
        "time1_ns": t1, "time2_ns": t2,
        "energy1_kev": sample.singles_energy_kev[i],
        "energy2_kev": sample.singles_energy_kev[j],
        "pos1_mm": sample.singles_pos_mm[i], "pos2_mm": sample.singles_pos_mm[j],
        "event1": events.astype(np.int64), "event2": (events + 1).astype(np.int64),
        "annihilation_mm": nan3,
        "compton_phantom1": zeros, "compton_phantom2": zeros,
        "rayleigh_phantom1": zeros, "rayleigh_phantom2": zeros,
        "kind": np.full(n, KIND_RANDOM, np.uint8),
    }
