"""The embedded engine end to end, against references computed here: sensitivity bounds from
the ring's geometric acceptance and LYSO's stopping power (xraylib), the coincidence time
resolution, randoms against the delayed window, and reproducibility."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xraylib

from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import EngineSettings, FastEngine
from sim.engines.embedded.transport import C_MM_PER_NS
from sim.scanner.geometry import Scanner
from tests.sim.synthetic import point_in_air

DIGITIZER = DigitizerSettings(0.15, 511.0, 300.0, (350.0, 650.0))


def _engine(chunk_decays: int, acolinearity_deg: float = 0.5, sorter=None) -> FastEngine:
    return FastEngine(point_in_air(), Scanner(), DIGITIZER, sorter or SorterSettings(),
                      EngineSettings(chunk_decays=chunk_decays,
                                     acolinearity_fwhm_deg=acolinearity_deg))


def _lyso_per_mm(function) -> float:
    # Lu1.8Y0.2SiO5 at 7.1 g/cm3, from xraylib directly.
    return function("Lu1.8Y0.2SiO5", 511.0) * 7.1 / 10.0


def _sensitivity_bounds(scanner: Scanner) -> tuple[float, float]:
    """Coincidences per decay of a point at the centre, in air, bounded from both sides.

    Upper: the line must cross the ring within its axial extent (at the modules' front faces,
    radius >= the apothem), and both photons must interact in the annulus the crystals fill,
    whose radial thickness along the ray is at most (R_out - r_in) / sin(theta).
    Lower: lines whose photons both cross the full 20 mm of one module (axially inside the
    ring at the outer polygon's circumradius, tangentially in the central part of a module
    face) and are both absorbed by a photoelectric effect at their first interaction:
    (1 - exp(-mu 20 mm)) * photo / total each; 511 keV then lands in the 350-650 keV window.
    """
    mu = _lyso_per_mm(xraylib.CS_Total_CP)
    photo_fraction = _lyso_per_mm(xraylib.CS_Photo_CP) / mu
    half_length = scanner.axial_length_mm / 2
    r_in = scanner.inner_radius_mm
    half_angle = np.pi / scanner.modules_per_ring
    r_out = (r_in + scanner.crystal_depth_mm) / np.cos(half_angle)
    # Upper: integrate over cos(theta) uniform in [-1, 1].
    mu_max = half_length / np.hypot(r_in, half_length)
    c = np.linspace(-mu_max, mu_max, 20001)
    p_interact = 1 - np.exp(-mu * (r_out - r_in) / np.sqrt(1 - c * c))
    upper = np.trapezoid(p_interact**2, c) / 2
    # Lower.
    axial = half_length / np.hypot(r_out, half_length)
    face_half = scanner.module_width_mm / 2
    central = face_half * r_in / (r_in + scanner.crystal_depth_mm)
    good_angle = np.arctan(central / r_in) / half_angle  # fraction of in-plane angles
    both_good = 1 - 2 * (1 - good_angle)
    p_photo = (1 - np.exp(-mu * scanner.crystal_depth_mm)) * photo_fraction
    lower = axial * both_good * p_photo**2
    return lower, upper


def test_point_source_sensitivity_within_physical_bounds_and_stable_with_chunk_size():
    scanner = Scanner()
    lower, upper = _sensitivity_bounds(scanner)
    sens = {}
    for chunk in (4000, 40000):
        result = _engine(chunk, acolinearity_deg=0.0).run(4e5, 0.1, 6586.2, seed=3,
                                                         progress=False)
        trues = int(np.sum(result.prompts["kind"] == 0))
        sens[chunk] = (trues / result.primaries, result.primaries)
        assert lower < sens[chunk][0] < upper, (lower, sens[chunk][0], upper)
        assert np.sum(result.prompts["kind"] == 1) < 0.02 * trues  # no phantom, little scatter
    (s1, n1), (s2, n2) = sens[4000], sens[40000]
    sigma = np.sqrt(s1 * (1 - s1) / n1 + s2 * (1 - s2) / n2)
    assert abs(s1 - s2) < 4 * sigma


def test_coincidence_time_resolution_of_trues():
    result = _engine(50_000).run(5e5, 0.1, 6586.2, seed=5, progress=False)
    p = result.prompts
    true = p["kind"] == 0
    assert true.sum() > 5000
    a = p["annihilation_mm"][true].astype(float)
    d1 = np.linalg.norm(p["pos1_mm"][true] - a, axis=1)
    d2 = np.linalg.norm(p["pos2_mm"][true] - a, axis=1)
    dt_ps = ((p["time1_ns"][true] - p["time2_ns"][true]) - (d1 - d2) / C_MM_PER_NS) * 1e3
    # Pairs come time-ordered; orient them by crystal id instead so the difference is not
    # folded at zero.
    dt_ps *= np.where(p["crystal1"][true] < p["crystal2"][true], 1.0, -1.0)
    assert abs(dt_ps.mean()) < 3 * dt_ps.std() / np.sqrt(dt_ps.size)
    fwhm_ps = 2 * np.sqrt(2 * np.log(2)) * dt_ps.std()
    assert fwhm_ps == pytest.approx(np.sqrt(2) * 300.0, rel=0.05)


def test_randoms_in_prompts_match_the_delayed_window_at_high_activity():
    # 20 MBq in air: about 1.2e7 singles/s, so one window in ten holds another decay.
    result = _engine(20_000).run(2e7, 4e-3, 6586.2, seed=7, progress=False)
    counts = result.counts
    randoms, delayed = counts["randoms"], counts["delayed"]
    assert randoms > 0.2 * counts["prompts"]
    assert abs(randoms - delayed) < 4 * np.sqrt(randoms + delayed), counts


def test_same_seed_same_output_different_seed_different_output():
    engine = _engine(10_000)
    a = engine.run(3e5, 0.1, 6586.2, seed=1, progress=False)
    b = engine.run(3e5, 0.1, 6586.2, seed=1, workers=2, progress=False)
    c = engine.run(3e5, 0.1, 6586.2, seed=2, progress=False)
    for key in a.prompts:
        np.testing.assert_array_equal(a.prompts[key], b.prompts[key])
        np.testing.assert_array_equal(a.delayed[key], b.delayed[key])
    assert a.prompts["time1_ns"].size != c.prompts["time1_ns"].size or not np.array_equal(
        a.prompts["time1_ns"], c.prompts["time1_ns"])


def test_simulate_stage_writes_reproducible_listmode(tmp_path, make_spec, default_config):
    from pipeline.config import validate_config
    from pipeline.specs import simulate_spec
    from sim.engines.stage import run_simulation
    from sim.listmode.file import read_listmode
    from sim.phantoms.stage import build_phantom

    phantom_spec = make_spec({"family": "point", "grid": {"shape": [16, 32, 32],
                                                         "voxel_size_mm": [1.0, 1.0, 1.0]},
                              "acquisitions": ["paper", "short"]}, name="p")
    phantom = tmp_path / "point_0000.h5"
    build_phantom(phantom_spec, phantom)
    cfg = dict(default_config)
    cfg["datasets"] = {"p": {**default_config["datasets"]["tubes"], "family": "point",
                             "acquisitions": ["paper", "short"]}}
    cfg["acquisitions"] = {**cfg["acquisitions"], "short": {"activity_bq": 1e5, "duration_s": 0.1}}
    spec = simulate_spec(validate_config(cfg), "p", "point_0000", "short")
    counts = run_simulation(spec, phantom, tmp_path / "a.h5")
    run_simulation(spec, phantom, tmp_path / "b.h5", workers=2)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        run_simulation(spec, phantom, tmp_path / "a.h5")
    spec_other = {**spec, "seed": spec["seed"] + 1}
    run_simulation(spec_other, phantom, tmp_path / "c.h5")
    la, lb, lc = (read_listmode(tmp_path / f"{n}.h5") for n in "abc")
    assert len(la) == counts["prompts"] > 100
    assert la.attrs["engine"] == "fast" and la.attrs["primaries"] == counts["primaries"]
    for group in ("coincidences", "delayed"):
        with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
            for name in fa[group]:
                np.testing.assert_array_equal(fa[group][name][...], fb[group][name][...])
    with pytest.raises(ValueError, match="missing key.s. seed"):
        run_simulation({k: v for k, v in spec.items() if k != "seed"}, phantom, tmp_path / "d.h5")
    with pytest.raises(ValueError, match="engine: 'geant3' is not one of"):
        run_simulation({**spec, "engine": "geant3"}, phantom, tmp_path / "d.h5")
    assert not (tmp_path / "d.h5").exists()
    assert len(lc) != len(la) or not np.array_equal(lc.coincidences["time1_ns"],
                                                    la.coincidences["time1_ns"])


def test_a_frame_without_decays_gives_empty_tables():
    result = _engine(10_000).run(1e-3, 0.1, 6586.2, seed=1, progress=False)
    assert result.primaries == 0 and result.counts["prompts"] == 0
    assert result.prompts["pos1_mm"].shape == (0, 3)
