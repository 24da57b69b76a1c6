"""True coincidences drawn from the expected counts: which lines, where on them, and what
the detector makes of each photon.

The number of trues of a frame is Poisson with mean ``expected decays x trues per decay``
(:mod:`.trues`); each picks a line between two face cells with probability proportional to
its expected count. Then, per event:

* the photon axis crosses the two cells at points uniform on their faces, and the
  annihilation lies on that axis with probability proportional to the activity of the
  voxel it is in (the Monte Carlo's voxelised source: uniform within a voxel): axis and
  point are drawn together and kept with probability activity over the largest voxel
  activity (rejection in the tube, which weights each axis by the activity it crosses);
* photon 2 leaves at the acolinearity angle from the axis (a two-dimensional Gaussian
  angle, as the embedded engine's source), so it may enter a neighbouring cell;
* each photon's outcome (crystal, energy, interaction point, delay) is drawn from its
  cell's calibrated outcomes (:meth:`.response.DetectorResponse.draw`), and a pair the
  sorter would not record (crystals in modules closer than ``min_sector_difference``) is
  dropped;
* the decay time follows the frame's decaying exponential; each single's time adds the
  flight to its entry point and the drawn delay (time blurring included). Photon 1 is the
  earlier single, as the sorter orders a pair.

Events are drawn in chunks whose random numbers come from ``default_rng([seed, k])``, so the
result depends on the seed and the chunk size only.
"""

from __future__ import annotations

import numpy as np

from sim.engines.embedded.physics import rotate_directions
from sim.engines.embedded.source import FWHM_PER_SIGMA, Frame
from sim.engines.embedded.transport import C_MM_PER_NS
from sim.engines.statistical.entry import ring_entry, virtual_ring_z_mm
from sim.engines.statistical.projection import face_centres_xy
from sim.engines.statistical.response import DetectorResponse, fold
from sim.engines.statistical.trues import ExpectedTrues


class ActivityLookup:
    """Activity of the voxel holding a point (zero outside the grid), and its maximum."""

    def __init__(self, activity_zyx: np.ndarray, voxel_size_mm: np.ndarray,
                 origin_mm: np.ndarray) -> None:
        self.activity = np.asarray(activity_zyx, np.float64)
        self.voxel_xyz = np.asarray(voxel_size_mm, float)[::-1]
        self.lo_xyz = np.asarray(origin_mm, float)[::-1] - self.voxel_xyz / 2
        self.shape_xyz = np.array(self.activity.shape[::-1])
        self.maximum = float(self.activity.max())

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        ijk = np.floor((points_mm - self.lo_xyz) / self.voxel_xyz).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < self.shape_xyz), axis=1)
        ijk = np.where(inside[:, None], ijk, 0)
        return np.where(inside, self.activity[ijk[:, 2], ijk[:, 1], ijk[:, 0]], 0.0)


#: Candidates drawn at once per line still without an axis after the first rounds, in turn.
ESCALATION = (16, 64, 256, 1024, 4096, 16384)
#: Candidates per call of :func:`axis_points` in those rounds (memory: about 100 bytes each).
PROPOSALS_PER_CALL = 1_000_000


def draw_trues(expected: ExpectedTrues, activity: ActivityLookup, response: DetectorResponse,
               frame: Frame, acolinearity_fwhm_deg: float, min_sector_difference: int,
               seed: int, chunk_candidates: int = 2_000_000, pairs_only: bool = False):
    """Yield the trues of a frame chunk by chunk, in time order, as list-mode columns.

    The frame is cut into time slices of equal expected decays holding about
    ``chunk_candidates`` candidates each (as the embedded engine cuts it into chunks);
    slice k's number of candidates is Poisson with the envelopes' mean and its candidates
    are drawn from ``default_rng([seed, k])``. Event ids number the candidates in time
    order, unique within the frame; they are not decay numbers, since decays are not
    simulated one by one. With ``pairs_only`` each chunk holds the crystal pairs and kinds
    only (:func:`detect_pairs`).
    """
    mean = frame.expected_decays * float(expected.envelope.sum())
    n_slices = max(1, int(np.ceil(mean / chunk_candidates)))
    sliced = Frame(frame.activity_bq, frame.duration_s, frame.half_life_s, n_slices)
    cumulative = np.cumsum(expected.envelope)
    cumulative /= cumulative[-1]
    first_event = 0
    for k in range(n_slices):
        rng = np.random.default_rng([seed, k])
        n = int(rng.poisson(mean / n_slices))
        decay_ns = np.sort(sliced.time_at_fraction_s((k + rng.random(n)) / n_slices)) * 1e9
        yield _chunk(expected, cumulative, activity, response, decay_ns,
                     acolinearity_fwhm_deg, min_sector_difference, first_event, rng,
                     pairs_only)
        first_event += n


def candidates(expected: ExpectedTrues, cumulative: np.ndarray, activity: ActivityLookup,
               scanner, n: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` candidates: their cell points (n, 3) twice, annihilation points (n, 3), whether
    each is kept (density over the largest density) and its line (index into
    ``expected``'s lines)."""
    line = np.minimum(np.searchsorted(cumulative, np.sort(rng.random(n)), side="right"),
                      cumulative.size - 1)
    rng.shuffle(line)
    return (*axis_points(expected, activity, scanner, line, rng), line)


def axis_points(expected: ExpectedTrues, activity: ActivityLookup, scanner,
                line: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A candidate on each of lines ``line`` (n,): its axis through points uniform on the
    two face cells (n, 3) twice, its point uniform on the line's stretch (n, 3), and
    whether it is kept (with probability density over the largest density, bool (n,))."""
    n = line.size
    tracks = expected.tracks
    track = expected.track[line]
    centres = face_centres_xy(scanner)
    phi = scanner.module_angles_rad[np.arange(scanner.crystals_per_ring)
                                    // scanner.crystals_per_module]
    tangents = np.stack([-np.sin(phi), np.cos(phi)], axis=1)
    ends = []
    for column, ring in ((tracks.i[track], expected.ring1[line]),
                         (tracks.j[track], expected.ring2[line])):
        # A point uniform on the face cell: its centre, moved along the face and the axis.
        along = (rng.random(n) - 0.5) * scanner.crystal_pitch_mm
        z = virtual_ring_z_mm(scanner, ring) + (rng.random(n) - 0.5) * scanner.axial_pitch_mm
        xy = centres[column] + along[:, None] * tangents[column]
        ends.append(np.concatenate([xy, z[:, None]], axis=1))
    u_lo, u_hi = expected.stretch(line, scanner)
    u = u_lo + (u_hi - u_lo) * rng.random(n)
    point = ends[0] + u[:, None] * (ends[1] - ends[0])
    kept = rng.random(n) * activity.maximum < activity(point)
    return ends[0], ends[1], point, kept


def axes_of_lines(expected: ExpectedTrues, activity: ActivityLookup, scanner,
                  line: np.ndarray, rng: np.random.Generator, max_rounds: int = 100
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An axis and annihilation point on each of lines ``line`` (n,), distributed as the
    activity in the line's tube: :func:`axis_points` drawn again for the candidates not
    kept, up to ``max_rounds`` times (the rejection sampling the thinning does, here
    conditioned on the line). Returns the two cell points and the point, (n, 3) each, and
    whether each line found one (bool (n,)). The lines not found after ``max_rounds`` get
    :data:`ESCALATION` candidates at once, in turn (about 22,000 per line in all): a line
    whose tube holds less than about 1/5,000 of the largest activity on average (a tube
    the activity only grazes) can still exhaust them, and its coincidence is dropped."""
    e1 = np.zeros((line.size, 3))
    e2, x = np.zeros_like(e1), np.zeros_like(e1)
    todo = np.arange(line.size)
    for _ in range(max_rounds):
        a, b, p, kept = axis_points(expected, activity, scanner, line[todo], rng)
        done = todo[kept]
        e1[done], e2[done], x[done] = a[kept], b[kept], p[kept]
        todo = todo[~kept]
        if todo.size == 0:
            break
    # Lines whose tube holds little activity next to the phantom's hottest voxel (a warm
    # background beside a hot thin source: 1.8 % of a NEMA-like cylinder's counted trues
    # were lost after 100 rounds, with acceptances of 0.1 to 0.5 %) get many candidates at once;
    # the first kept of a line's i.i.d. candidates is distributed as the rejection's.
    for batch in ESCALATION:
        if todo.size == 0:
            break
        per_call = max(1, PROPOSALS_PER_CALL // batch)
        left = []
        for first in range(0, todo.size, per_call):
            part = todo[first:first + per_call]
            a, b, p, kept = axis_points(expected, activity, scanner,
                                        np.repeat(line[part], batch), rng)
            kept = kept.reshape(part.size, batch)
            hit = kept.any(axis=1)
            pick = np.flatnonzero(hit) * batch + kept.argmax(axis=1)[hit]
            e1[part[hit]], e2[part[hit]], x[part[hit]] = a[pick], b[pick], p[pick]
            left.append(part[~hit])
        todo = np.concatenate(left)
    found = np.ones(line.size, bool)
    found[todo] = False
    return e1, e2, x, found


def _chunk(expected, cumulative, activity, response, decay_ns, acolinearity_fwhm_deg,
           min_sector_difference, first_event, rng, pairs_only=False) -> dict:
    e1, e2, x, kept, _ = candidates(expected, cumulative, activity, response.scanner,
                                    decay_ns.size, rng)
    return detect_pairs(response, e1[kept], e2[kept], x[kept], decay_ns[kept],
                        first_event + np.flatnonzero(kept), acolinearity_fwhm_deg,
                        min_sector_difference, rng, pairs_only=pairs_only)


def detect_pairs(response: DetectorResponse, e1: np.ndarray, e2: np.ndarray, x: np.ndarray,
                 decay_ns: np.ndarray, ids: np.ndarray, acolinearity_fwhm_deg: float,
                 min_sector_difference: int, rng: np.random.Generator,
                 detection: bool = True, pairs_only: bool = False) -> dict:
    """List-mode columns of the photon pairs from points ``x`` along the axes through
    ``e1`` and ``e2`` (n, 3 each), decaying at ``decay_ns`` with event ids ``ids`` (n,):
    acolinearity, each photon's detection (skipped with ``detection=False``, for pairs
    already known to be detected), outcomes and the sorter's sector cut. With
    ``pairs_only`` only ``crystal1``, ``crystal2`` and ``kind`` (what a coincidence
    histogram counts; the crystals are drawn as for list-mode, energies and times are not,
    and the pair is not ordered in time)."""
    scanner = response.scanner
    n = decay_ns.size
    d1 = e1 - x
    d1 /= np.linalg.norm(d1, axis=1)[:, None]
    d2 = e2 - x
    d2 /= np.linalg.norm(d2, axis=1)[:, None]
    if acolinearity_fwhm_deg > 0:
        sigma = np.radians(acolinearity_fwhm_deg) / FWHM_PER_SIGMA
        dx, dy = rng.normal(0.0, sigma, (2, n))
        d2 = rotate_directions(d2, np.cos(np.hypot(dx, dy)), np.arctan2(dy, dx))
    singles = []
    keep = np.ones(n, bool)
    for d in (d1, d2):
        entry = ring_entry(scanner, x, d)
        folded = fold(scanner, response.bins, entry)
        neighbours = response.neighbour_weights(folded)
        probability = neighbours[2].sum(axis=1)
        if detection:  # with its cell's probability (the envelope left it out)
            keep &= rng.random(n) < probability
        else:  # known to be detected where its cells can detect
            keep &= probability > 0
        singles.append((entry, folded, neighbours, d))
    columns = []
    # Energies and times from their own stream: the crystals are the same with pairs_only.
    blur_rng = np.random.default_rng(rng.integers(2**63))
    for entry, folded, neighbours, d in singles:
        sub_entry = entry.subset(keep)
        out = response.draw(folded.subset(keep), sub_entry, rng,
                            tuple(a[keep] for a in neighbours), crystals_only=pairs_only,
                            blur_rng=blur_rng, direction=d[keep])
        if not pairs_only:
            out["time_ns"] = (decay_ns[keep] + sub_entry.distance_mm / C_MM_PER_NS
                              + out.pop("delay_ns"))
        columns.append(out)
    good = recorded_pairs(scanner, columns[0]["crystal"], columns[1]["crystal"],
                          min_sector_difference)
    first, second = ({k: v[good] for k, v in c.items()} for c in columns)
    if pairs_only:
        return {"crystal1": first["crystal"].astype(np.int32),
                "crystal2": second["crystal"].astype(np.int32),
                "kind": np.zeros(first["crystal"].size, np.uint8)}
    swap = second["time_ns"] < first["time_ns"]
    one = {k: np.where(swap[:, None] if v.ndim == 2 else swap, second[k], v)
           for k, v in first.items()}
    two = {k: np.where(swap[:, None] if v.ndim == 2 else swap, first[k], v)
           for k, v in second.items()}
    events = ids[keep][good]
    n_out = events.size
    zeros = np.zeros(n_out, np.uint8)
    return {
        "crystal1": one["crystal"].astype(np.int32),
        "crystal2": two["crystal"].astype(np.int32),
        "time1_ns": one["time_ns"].astype(np.float64),
        "time2_ns": two["time_ns"].astype(np.float64),
        "energy1_kev": one["energy_kev"].astype(np.float32),
        "energy2_kev": two["energy_kev"].astype(np.float32),
        "pos1_mm": one["pos_mm"].astype(np.float32), "pos2_mm": two["pos_mm"].astype(np.float32),
        "event1": events.astype(np.int64), "event2": events.astype(np.int64),
        "annihilation_mm": x[keep][good].astype(np.float32),
        "compton_phantom1": zeros, "compton_phantom2": zeros,
        "rayleigh_phantom1": zeros, "rayleigh_phantom2": zeros,
        "kind": zeros.copy(),
    }


def recorded_pairs(scanner, crystal1: np.ndarray, crystal2: np.ndarray,
                   min_sector_difference: int) -> np.ndarray:
    """Pairs the coincidence sorter records (modules far enough apart, two crystals)."""
    cpr, cpm, modules = (scanner.crystals_per_ring, scanner.crystals_per_module,
                         scanner.modules_per_ring)
    diff = np.abs((crystal1 % cpr) // cpm - (crystal2 % cpr) // cpm)
    diff = np.minimum(diff, modules - diff)
    return (crystal1 != crystal2) & (diff >= min_sector_difference)
