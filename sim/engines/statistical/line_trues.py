"""Trues drawn line by line from their expected detected counts
(``simulation.statistical.trues: lines``).

The thinning of :mod:`.events` draws candidates from the lines' envelopes and keeps a
candidate with its density over the largest density and then each photon with its
detection probability: of about four candidates, one becomes a detected coincidence, and
each costs two ring entries and two response look-ups. Here the expected *detected* trues
of every line between two face cells are computed once per job
(:func:`.expectation.detected_per_decay`: the line's tube-averaged photon pairs times the
calibrated detection probability of each photon at the central line's entry), each line's
count over the frame is Poisson with the frame's expected decays times that rate, and only
the coincidences that are detected are followed:

* the axis and the annihilation point on each counted line are drawn as the thinning draws
  them (points uniform on the two face cells and on the line's stretch, kept with density
  over the largest density), repeated until kept: the activity's distribution in the
  line's tube, so the photons' entries within their cells follow the activity (an
  activity edge that cuts a tube puts the entries on its side, which decides the crystal
  an oblique photon reaches);
* acolinearity, outcomes (crystal, energy, interaction point, delay) and the sorter's
  sector cut as in :mod:`.events` (:func:`.events.detect_pairs`), without the detection
  draw;
* the decay times are uniform over the frame's decaying exponential, so the time slices
  the engine writes take the events of their interval.

Against the thinning, what is approximated: the detection probability of a line is its
central line's (the photons of a line differ in angle by about a cell's width over its
length; the trues per decay are within 2 % of the Monte Carlo's in the tests), and the
line's tube average comes from the density blurred by the tube's cross-section
(:mod:`.trues`), which spreads a structure thinner than a crystal cell over neighbouring
lines. Its time still grows with the counts, by the detected coincidences only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engines.embedded.source import Frame
from sim.engines.statistical.events import ActivityLookup, axes_of_lines, detect_pairs
from sim.engines.statistical.response import DetectorResponse
from sim.engines.statistical.trues import ExpectedTrues


@dataclass(frozen=True)
class LineTrues:
    """The frame's trues as counted lines and decay times, in time order.

    Attributes
    ----------
    line : numpy.ndarray of int64, shape (n,)
        Line of each coincidence (index into the lines of ``ExpectedTrues``).
    time_s : numpy.ndarray of float64, shape (n,)
        Its decay time from the frame's start, s, ascending.
    """

    line: np.ndarray
    time_s: np.ndarray

    @classmethod
    def draw(cls, rates: np.ndarray, frame: Frame, seed: int) -> LineTrues:
        """Poisson counts of every line with mean ``frame.expected_decays * rates``
        (``rates``: detected trues per decay, float (n_lines,)) and uniform decay times."""
        if not np.all(np.isfinite(rates)) or np.any(rates < 0):
            raise ValueError("line rates must be finite and non-negative")
        rng = np.random.default_rng([seed, 0])
        counts = rng.poisson(frame.expected_decays * rates)
        line = np.repeat(np.arange(counts.size), counts)
        time_s = frame.time_at_fraction_s(rng.random(line.size))
        order = np.argsort(time_s, kind="stable")
        return cls(line[order], time_s[order])

    def between(self, t0_s: float, t1_s: float) -> slice:
        """The coincidences decaying in ``[t0_s, t1_s)``."""
        lo, hi = np.searchsorted(self.time_s, [t0_s, t1_s], side="left")
        return slice(int(lo), int(hi))


def draw_line_trues(trues: LineTrues, part: slice, expected: ExpectedTrues,
                    activity: ActivityLookup, response: DetectorResponse,
                    acolinearity_fwhm_deg: float, min_sector_difference: int,
                    t0_s: float, first_event: int, seed: int, pairs_only: bool = False
                    ) -> dict:
    """List-mode columns of the coincidences ``part`` of ``trues`` (times from ``t0_s``,
    ns; event ids from ``first_event``), random numbers from ``default_rng(seed)``; the
    crystal pairs and kinds only with ``pairs_only`` (:func:`.events.detect_pairs`)."""
    rng = np.random.default_rng(seed)
    line = trues.line[part]
    e1, e2, x, found = axes_of_lines(expected, activity, response.scanner, line, rng)
    decay_ns = (trues.time_s[part] - t0_s) * 1e9
    ids = first_event + np.arange(line.size)
    return detect_pairs(response, e1[found], e2[found], x[found], decay_ns[found], ids[found],
                        acolinearity_fwhm_deg, min_sector_difference, rng, detection=False,
                        pairs_only=pairs_only)
