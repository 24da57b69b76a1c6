"""Coincidence sorting of time-ordered singles: prompts and a delayed window, streamed.

Window policy. Every single opens its own coincidence window ``(t, t + window]`` (GATE's
``allPulseOpenCoincGate true``; the "multiple window" method). Each window pairs its opener
with the singles inside it, so every pair of singles closer than the window appears in
exactly one window. A pair is *good* when the two crystals are in transaxial modules (GATE's
rsectors) at least ``min_sector_difference`` apart around the ring (GATE's
``minSectorDifference``, default 2); a crystal never pairs with itself.

Multiples policy (names of GATE 10 / opengate), applied per window:

``TakeAllGoods`` (default)
    keep every good pair;
``TakeWinnerOfGoods``
    keep the good pair whose partner has the highest energy;
``TakeIfOnlyOneGood``
    keep the window's pair when exactly one of its pairs is good;
``RemoveMultiples``
    keep the pair only when the window holds one partner (no multiple).

With ``TakeAllGoods`` the number of random pairs among the prompts has the same expectation
as the number of delayed coincidences (pairs separated by ``offset`` to ``offset + window``),
whatever the count rate: both count pairs of independent decays in an interval of equal
length. Other policies discard multiples, and randoms then differ from the delayed estimate
at high rates, as they do on real scanners.

Delayed window. The same policy applied to the windows ``[t + offset, t + offset + window]``
(GATE's delayed coincidence sorter with ``setOffset``). Its pairs estimate the randoms.

Streaming. The singles arrive in time-ordered batches; a window is only closed when every
single that could fall in it has arrived, so the result does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLICIES = ("TakeAllGoods", "TakeWinnerOfGoods", "TakeIfOnlyOneGood", "RemoveMultiples")

#: Truth classes of the ``kind`` column.
KIND_TRUE, KIND_SCATTERED, KIND_RANDOM = 0, 1, 2


@dataclass(frozen=True)
class SorterSettings:
    """Coincidence sorter parameters (ns).

    Attributes
    ----------
    window_ns : float
        Coincidence window.
    delay_ns : float
        Offset of the delayed window; must exceed the window.
    policy : str
        One of :data:`POLICIES`.
    min_sector_difference : int
        Minimum separation of the two transaxial modules.
    """

    window_ns: float = 10.0
    delay_ns: float = 500.0
    policy: str = "TakeAllGoods"
    min_sector_difference: int = 2

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"multiples policy {self.policy!r} is not one of {POLICIES}")
        if self.delay_ns <= self.window_ns:
            raise ValueError(f"delayed_window_offset_ns ({self.delay_ns} ns) must exceed the "
                             f"coincidence window ({self.window_ns} ns): a delayed window "
                             "inside the prompt one counts trues as randoms")

    @classmethod
    def from_config(cls, scanner_cfg: dict) -> SorterSettings:
        """From the ``scanner`` config section."""
        return cls(float(scanner_cfg["coincidence_window_ns"]),
                   float(scanner_cfg["delayed_window_offset_ns"]),
                   scanner_cfg["multiples_policy"], int(scanner_cfg["min_sector_difference"]))


def window_pairs(time_ns: np.ndarray, openers: np.ndarray, offset_ns: float,
                 window_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (opener, partner) pairs of the windows opened by ``openers``.

    Parameters
    ----------
    time_ns : numpy.ndarray
        Single times, sorted, shape (n,).
    openers : numpy.ndarray
        Indices of the singles whose windows are formed, shape (m,).
    offset_ns, window_ns : float
        The window of single i is ``(t_i, t_i + window]`` when the offset is 0 (partners after
        the opener in time order), else ``[t_i + offset, t_i + offset + window]``.

    Returns
    -------
    (i, j, window) : index arrays of the pairs (opener, partner, and the position of the
    window in ``openers``), in window order.
    """
    t = time_ns[openers]
    if offset_ns == 0:
        lo = openers + 1
    else:
        lo = np.searchsorted(time_ns, t + offset_ns, side="left")
    hi = np.maximum(np.searchsorted(time_ns, t + offset_ns + window_ns, side="right"), lo)
    counts = hi - lo
    window = np.repeat(np.arange(openers.size), counts)
    starts = np.cumsum(counts) - counts
    j = np.repeat(lo, counts) + (np.arange(window.size) - np.repeat(starts, counts))
    return openers[window], j, window


def select_pairs(window: np.ndarray, good: np.ndarray, partner_energy: np.ndarray,
                 n_windows: int, policy: str) -> np.ndarray:
    """Pairs a multiples policy keeps (boolean over pairs; see the module docstring)."""
    if policy == "TakeAllGoods":
        return good
    n_pairs = np.bincount(window, minlength=n_windows)
    n_good = np.bincount(window, good, minlength=n_windows).astype(np.int64)
    if policy == "RemoveMultiples":
        return good & (n_pairs[window] == 1)
    if policy == "TakeIfOnlyOneGood":
        return good & (n_good[window] == 1)
    # TakeWinnerOfGoods: the first good pair of each window in order of decreasing energy.
    keep = np.zeros(window.size, bool)
    g = np.flatnonzero(good)
    order = g[np.lexsort((-partner_energy[g], window[g]))]
    first = np.r_[True, window[order][1:] != window[order][:-1]] if order.size else order
    keep[order[first.astype(bool)]] = True
    return keep


def pair_columns(singles: dict, i: np.ndarray, j: np.ndarray) -> dict:
    """List-mode columns of the pairs (i, j) of a singles table (DESIGN.md contract)."""
    same_event = singles["event"][i] == singles["event"][j]
    scattered = ((singles["photon"][i] == singles["photon"][j])
                 | (singles["n_compton"][i] > 0) | (singles["n_compton"][j] > 0)
                 | (singles["n_rayleigh"][i] > 0) | (singles["n_rayleigh"][j] > 0))
    kind = np.where(same_event, np.where(scattered, KIND_SCATTERED, KIND_TRUE), KIND_RANDOM)
    annihilation = singles["annihilation_mm"][i].astype(np.float32)
    annihilation[~same_event] = np.nan
    return {
        "crystal1": singles["crystal"][i].astype(np.int32),
        "crystal2": singles["crystal"][j].astype(np.int32),
        "time1_ns": singles["time_ns"][i].astype(np.float64),
        "time2_ns": singles["time_ns"][j].astype(np.float64),
        "energy1_kev": singles["energy_kev"][i].astype(np.float32),
        "energy2_kev": singles["energy_kev"][j].astype(np.float32),
        "pos1_mm": singles["pos_mm"][i].astype(np.float32),
        "pos2_mm": singles["pos_mm"][j].astype(np.float32),
        "event1": singles["event"][i].astype(np.int64),
        "event2": singles["event"][j].astype(np.int64),
        "annihilation_mm": annihilation,
        "compton_phantom1": np.minimum(singles["n_compton"][i], 255).astype(np.uint8),
        "compton_phantom2": np.minimum(singles["n_compton"][j], 255).astype(np.uint8),
        "rayleigh_phantom1": np.minimum(singles["n_rayleigh"][i], 255).astype(np.uint8),
        "rayleigh_phantom2": np.minimum(singles["n_rayleigh"][j], 255).astype(np.uint8),
        "kind": kind.astype(np.uint8),
    }


def _take(table: dict, idx) -> dict:
    return {k: v[idx] for k, v in table.items()}


def _concat(tables: list[dict]) -> dict:
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


class StreamingSorter:
    """Prompt and delayed coincidences from singles that arrive in time-ordered batches.

    Parameters
    ----------
    settings : SorterSettings
    crystals_per_ring, crystals_per_module, modules_per_ring : int
        Scanner numbering, to find each crystal's transaxial module.
    """

    def __init__(self, settings: SorterSettings, crystals_per_ring: int,
                 crystals_per_module: int, modules_per_ring: int) -> None:
        self.settings = settings
        self._cpr = crystals_per_ring
        self._cpm = crystals_per_module
        self._modules = modules_per_ring
        self._pending: dict | None = None

    def _good(self, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
        s1 = (c1 % self._cpr) // self._cpm
        s2 = (c2 % self._cpr) // self._cpm
        diff = np.abs(s1 - s2)
        diff = np.minimum(diff, self._modules - diff)
        return (c1 != c2) & (diff >= self.settings.min_sector_difference)

    def _sort(self, singles: dict, openers: np.ndarray, offset_ns: float) -> dict:
        i, j, window = window_pairs(singles["time_ns"], openers, offset_ns,
                                    self.settings.window_ns)
        good = self._good(singles["crystal"][i], singles["crystal"][j])
        keep = select_pairs(window, good, singles["energy_kev"][j], openers.size,
                            self.settings.policy)
        return pair_columns(singles, i[keep], j[keep])

    def add(self, singles: dict, horizon_ns: float = np.inf) -> tuple[dict, dict]:
        """Add a batch of singles; return the prompts and delayed pairs now complete.

        Parameters
        ----------
        singles : dict
            Columns of :data:`sim.engines.embedded.digitizer.SINGLES_COLUMNS`, any order; every
            later batch must only hold singles at or after ``horizon_ns``.
        horizon_ns : float
            No single of a later batch is earlier than this (inf for the last batch).
        """
        table = singles if self._pending is None else _concat([self._pending, singles])
        table = _take(table, np.argsort(table["time_ns"], kind="stable"))
        t = table["time_ns"]
        reach = self.settings.delay_ns + self.settings.window_ns
        n_closed = int(np.searchsorted(t, horizon_ns - reach, side="left"))
        openers = np.arange(n_closed)
        prompts = self._sort(table, openers, 0.0)
        delayed = self._sort(table, openers, self.settings.delay_ns)
        self._pending = _take(table, slice(n_closed, None))
        return prompts, delayed

    def finish(self) -> tuple[dict, dict] | None:
        """Close every remaining window (end of the acquisition)."""
        if self._pending is None:
            return None
        pending, self._pending = self._pending, None
        return self.add(pending, np.inf)
