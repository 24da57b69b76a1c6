"""The corrections on data of the embedded engine, against the engine's own truth: a uniform
water cylinder in an aluminium tube reconstructs flat with every correction on, and the scatter
estimate (computed without the truth labels) matches the engine's scattered coincidences
histogrammed the same way."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.ndimage

from pipeline.config import load_config, validate_config
from pipeline.specs import recon_spec, simulate_spec
from recon.attenuation import attenuation_map, rebinned_attenuation
from recon.image_io import read_recon
from recon.oblique import ObliqueGeometry
from recon.recon2d import plane_indices, rebinned_weights, sinogram_stack, uniform_randoms
from recon.stage import (
    _read_mu,
    estimate_scatter,
    geometry_of,
    image_grid_of,
    max_ring_difference,
    reconstruct,
)
from recon.system_matrix import build_system_matrix
from recon.truth import activity_concentration
from sim.engines.stage import run_simulation
from sim.listmode.file import read_listmode
from sim.phantoms.spec import phantom_spec
from sim.phantoms.stage import build_phantom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uniform_tube(tmp_path_factory):
    """A 40 mm tube with a 5 mm aluminium wall full of solution, no defect, 5 s at 600 kBq."""
    folder = tmp_path_factory.mktemp("uniform")
    cfg = copy.deepcopy(load_config())
    cfg["acquisitions"]["reference"]["duration_s"] = 5.0  # half the default, for time
    cfg["datasets"] = {"uniform": {
        "family": "tube", "n_phantoms": 1, "seed": 7, "acquisitions": ["reference"],
        "grid": {"shape": [56, 96, 96], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "tube": {"outer_radius_mm": [40.0, 40.0], "wall_thickness_mm": [5.0, 5.0],
                 "length_mm": [100.0, 100.0], "end_cap_mm": 5.0,
                 "anisotropic_probability": 0.0},
        "defects": {"count": [0, 0]}}}
    cfg = validate_config(cfg)
    phantom_h5 = folder / "tube_0000.h5"
    build_phantom(phantom_spec(cfg, "uniform", "tube_0000"), phantom_h5)
    listmode_h5 = folder / "reference.h5"
    run_simulation(simulate_spec(cfg, "uniform", "tube_0000", "reference"), phantom_h5,
                   listmode_h5, workers=2)
    return cfg, phantom_h5, listmode_h5


def test_a_uniform_cylinder_in_a_metal_tube_reconstructs_flat(uniform_tube, tmp_path):
    cfg, phantom_h5, listmode_h5 = uniform_tube
    spec = recon_spec(cfg, "uniform")
    profiles = {}
    for name, scatter, kernel in (("corrected", "sss", "none"),
                                  ("no scatter correction", "none", "none"),
                                  ("kernel method", "sss", "mu")):
        spec["recon"].update(scatter=scatter, kernel=kernel)
        out = tmp_path / f"{scatter}_{kernel}.h5"
        reconstruct(spec, listmode_h5, phantom_h5, out)
        rec = read_recon(out)
        truth = activity_concentration(*_phantom_and_grid(phantom_h5, spec))
        full = scipy.ndimage.binary_erosion(truth >= 0.99 * truth.max(), iterations=2)
        z, y, x = np.meshgrid(*(rec.grid.centres_mm(a) for a in range(3)), indexing="ij")
        central = full & (np.abs(z) < 30)
        radius = np.hypot(x, y)
        mean = rec.image[central].mean()
        radial = [rec.image[central & (radius >= r) & (radius < r + 10)].mean() / mean
                  for r in (0, 10, 20)]
        axial = [rec.image[central & (np.abs(z - c) < 7)].mean() / mean for c in (-20, 0, 20)]
        profiles[name] = np.array(radial + axial)
    # Every correction on: flat within 5 % over 10 mm annuli and 14 mm slabs; the kernel
    # method (pooling the solution's voxels by their mu) keeps it flat.
    np.testing.assert_allclose(profiles["corrected"], 1.0, atol=0.05)
    np.testing.assert_allclose(profiles["kernel method"], 1.0, atol=0.05)
    # Without scatter correction the centre stands above the rim (scatter peaks inside).
    corrected, uncorrected = profiles["corrected"], profiles["no scatter correction"]
    assert uncorrected[0] - uncorrected[2] > corrected[0] - corrected[2]


def _phantom_and_grid(phantom_h5, spec):
    grid = image_grid_of(spec)
    phantom, _ = _read_mu(phantom_h5, spec, grid)
    return phantom, grid


def test_scatter_estimate_matches_the_engines_scattered_coincidences(uniform_tube):
    cfg, phantom_h5, listmode_h5 = uniform_tube
    spec = recon_spec(cfg, "uniform")
    geometry, grid = geometry_of(spec), image_grid_of(spec)
    phantom, mu_grid = _read_mu(phantom_h5, spec, grid)
    d_max = max_ring_difference(spec)
    data = read_listmode(listmode_h5)
    c = data.coincidences
    counts = sinogram_stack(c["crystal1"], c["crystal2"], geometry, grid, d_max)
    scattered = c["kind"] == 1
    truth = sinogram_stack(c["crystal1"][scattered], c["crystal2"][scattered], geometry, grid,
                           d_max)
    randoms = uniform_randoms(sinogram_stack(data.delayed["crystal1"], data.delayed["crystal2"],
                                             geometry, grid, d_max), geometry)
    system = build_system_matrix(geometry, grid)
    oblique = ObliqueGeometry.build(geometry, system, grid, plane_indices(geometry, grid))
    mu = attenuation_map(phantom, mu_grid, grid, float(spec["recon"]["attenuation_fwhm_mm"]))
    weights = rebinned_weights(geometry, rebinned_attenuation(oblique, mu, d_max))
    estimate = estimate_scatter(spec, counts, randoms, geometry, grid, system, oblique, weights,
                                phantom, mu_grid, mu)
    est = estimate.rebinned
    assert est.sum() == pytest.approx(truth.sum(), rel=0.10)
    valid = geometry.valid().ravel()
    # Sinogram profiles: summed over planes (every bin) and over views and planes (radial).
    assert np.corrcoef(est.sum(axis=1)[valid], truth.sum(axis=1)[valid])[0, 1] > 0.9
    radial_est = est.reshape(*geometry.shape, -1).sum(axis=(0, 2))
    radial_true = truth.reshape(*geometry.shape, -1).sum(axis=(0, 2))
    assert np.corrcoef(radial_est, radial_true)[0, 1] > 0.99
