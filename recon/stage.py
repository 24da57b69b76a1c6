"""The reconstruct stage: one list-mode file -> one image file (+ NIfTI and PNG), and the
per-geometry files it reuses (2D system matrix, 3D sensitivity images).

A reconstruction spec (:func:`pipeline.specs.recon_spec`) holds the ``recon`` config section,
the scanner, the dataset's phantom grid and the device. Every input is checked before any
projection: the list-mode file must come from the configured scanner geometry, the phantom
file must be the phantom the list-mode file records (name, dataset, grid and config,
:mod:`pipeline.provenance`; fields a file does not record are not compared), the attenuation
map must cover the image, the image must fit in the ring, and cached geometry files must
match what they are used for (a sensitivity image the phantom it was attenuated through).

Over 400 lines: the stage's one job (inputs checked, then 2D or 3D with every correction) reads
best in one place; the algorithms are in the modules it calls.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline.fileio import (
    atomic_output,
    atomic_output_set,
    decoded_attrs,
    open_hdf5,
    provenance_attrs,
)
from pipeline.provenance import PHANTOM_FIELDS, Origin, check_same_origin
from recon.attenuation import (
    attenuation_map,
    check_coverage,
    mu_on_grid,
    phantom_grid,
    rebinned_attenuation,
)
from recon.detectability import DetectabilitySettings, measure_defects
from recon.detectability import write_json as write_detectability_json
from recon.device import resolve_device
from recon.filters import gaussian_fwhm
from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid, check_grid_in_ring, recon_grid
from recon.image_io import write_nifti, write_preview, write_recon
from recon.kernel import GaussianPSF, ImageKernel, ImageModel, KernelSettings
from recon.mlem import EMResult
from recon.oblique import ObliqueGeometry
from recon.projector import Projector, TOFKernel
from recon.recon2d import (
    EMSettings,
    plane_indices,
    plane_weights,
    rebinned_weights,
    reconstruct_2d,
    reconstruct_oblique,
    sinogram_stack,
    uniform_randoms,
)
from recon.recon3d import (
    ListModeEvents,
    event_background,
    lor_count,
    reconstruct_3d,
    select_events,
)
from recon.scatter import (
    ScatterEstimate,
    ScatterSettings,
    coarse_detectors,
    coarse_single_scatter,
    fit_tail_scale,
    tail_mask,
    to_rebinned,
)
from recon.sensitivity import attenuated_sensitivity, geometric_sensitivity
from recon.sinogram import SinogramGeometry
from recon.system_matrix import (
    SystemMatrix2D,
    build_system_matrix,
    check_key,
    read_system_matrix,
    write_system_matrix,
)
from sim.listmode.file import ListMode, read_listmode
from sim.listmode.histogram import is_histogram, read_histogram
from sim.phantoms.file import PhantomData, read_phantom
from sim.phantoms.voxelise import Grid
from sim.scanner.geometry import GEOMETRY_KEYS, Scanner

log = logging.getLogger(__name__)

#: Sampling of the single scatter simulation (:mod:`recon.scatter`).
SCATTER = ScatterSettings()

#: Regions of the defect measures (:mod:`recon.detectability`).
DETECTABILITY = DetectabilitySettings()

#: Keys of a reconstruction spec.
SPEC_KEYS = ("dataset", "recon", "scanner", "grid", "device")


def check_spec(spec: dict[str, Any]) -> None:
    """Refuse a spec that is not a :func:`pipeline.specs.recon_spec` (missing keys)."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"reconstruction spec is missing key(s) {', '.join(missing)} "
                         "(build it with pipeline.specs.recon_spec)")


def geometry_of(spec: dict[str, Any]) -> SinogramGeometry:
    """Sinogram geometry: scanner, LOR depth and the sorter's sector rule."""
    scanner = Scanner.from_config(spec["scanner"])
    doi = spec["recon"]["doi_mm"]
    return SinogramGeometry(scanner, scanner_doi_mm(scanner) if doi is None else float(doi),
                            int(spec["scanner"].get("min_sector_difference", 2)))


def phantom_grid_of(spec: dict[str, Any]) -> ImageGrid:
    """The dataset's phantom grid (centred on the scanner, as the phantom stage draws it)."""
    g = Grid(tuple(spec["grid"]["shape"]), tuple(spec["grid"]["voxel_size_mm"]))
    return ImageGrid(g.shape, g.voxel_size_mm, tuple(g.origin_mm))


def image_grid_of(spec: dict[str, Any]) -> ImageGrid:
    """The reconstruction grid (:func:`recon.grid.recon_grid`), checked to fit the ring."""
    scanner = Scanner.from_config(spec["scanner"])
    r = spec["recon"]
    grid = recon_grid(phantom_grid_of(spec), scanner, r["voxel_size_xy_mm"], r["fov_xy_mm"])
    check_grid_in_ring(grid, scanner, "image grid (recon.fov_xy_mm / the phantom grid)")
    return grid


def max_ring_difference(spec: dict[str, Any]) -> int:
    """``recon.max_ring_difference`` limited to the scanner's rings."""
    rings = int(spec["scanner"]["rings"]) if "rings" in spec["scanner"] else Scanner().rings
    return min(int(spec["recon"]["max_ring_difference"]), rings - 1)


def tof_kernel(spec: dict[str, Any]) -> TOFKernel | None:
    """The TOF kernel of the spec, or None without TOF."""
    r = spec["recon"]
    if not r["tof"]:
        return None
    fwhm_ps = r["tof_fwhm_ps"]
    if fwhm_ps is None:
        fwhm_ps = math.sqrt(2.0) * float(spec["scanner"].get("time_resolution_ps", 300.0))
    return TOFKernel.from_fwhm_ps(float(fwhm_ps), float(r["tof_bin_mm"]))


def _check_outputs(paths: list[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")


def _check_scanner(listmode_path: Path, file_scanner: Scanner, scanner: Scanner) -> None:
    ours, theirs = scanner.to_dict(), file_scanner.to_dict()
    for key in GEOMETRY_KEYS:
        a, b = ours[key], theirs[key]
        same = a == b if isinstance(a, str) else bool(np.isclose(float(a), float(b)))
        if not same:
            raise ValueError(f"{listmode_path}: recorded with another scanner geometry: {key} is "
                             f"{b!r} in the file, {a!r} in the config")


def smoothed_mu(phantom: PhantomData, spec: dict[str, Any]) -> np.ndarray:
    """The phantom's mu map on its own grid smoothed by ``recon.attenuation_fwhm_mm`` (the
    data's resolution, :func:`recon.attenuation.attenuation_map`), float32 (z, y, x)."""
    return gaussian_fwhm(phantom.mu511_per_mm, phantom.voxel_size_mm,
                         float(spec["recon"]["attenuation_fwhm_mm"]))


def _mu_grid(phantom: PhantomData, phantom_h5: Path, grid: ImageGrid) -> ImageGrid:
    """The grid of the phantom's mu map, checked to cover the image ``grid``."""
    mu_grid = phantom_grid(phantom.mu511_per_mm.shape, phantom.voxel_size_mm, phantom.origin_mm)
    check_coverage(mu_grid, grid, phantom_h5)
    return mu_grid


def _read_mu(phantom_h5: Path, spec: dict[str, Any], grid: ImageGrid
             ) -> tuple[PhantomData, ImageGrid]:
    phantom = read_phantom(phantom_h5)
    return phantom, _mu_grid(phantom, phantom_h5, grid)


# ---------------------------------------------------------------------- cached geometry files
def build_system_matrix_file(spec: dict[str, Any], out: str | Path,
                             overwrite: bool = False) -> Path:
    """Compute and write the 2D system matrix of a spec's scanner and image grid."""
    check_spec(spec)
    out = Path(out)
    _check_outputs([out], overwrite)
    start = time.perf_counter()
    system = build_system_matrix(geometry_of(spec), image_grid_of(spec))
    write_system_matrix(out, system, overwrite)
    log.info("system matrix %s: %d non-zeros in %.1f s", system.matrix.shape,
             system.matrix.nnz, time.perf_counter() - start)
    return out


def sensitivity_key(spec: dict[str, Any], phantom: PhantomData | None) -> dict[str, Any]:
    """What a 3D sensitivity image depends on (JSON-able)."""
    geometry = geometry_of(spec)
    grid = image_grid_of(spec)
    return {"scanner": geometry.scanner.to_dict(), "doi_mm": round(geometry.doi_mm, 9),
            "min_sector_difference": geometry.min_sector_difference,
            "max_ring_difference": max_ring_difference(spec),
            "grid": {"shape": list(grid.shape), "voxel_size_mm": list(grid.voxel_size_mm),
                     "origin_mm": list(grid.origin_mm)},
            "attenuation": None if phantom is None else phantom.attrs.get("config_sha256",
                                                                           "unknown"),
            "attenuation_fwhm_mm": None if phantom is None else float(
                spec["recon"]["attenuation_fwhm_mm"])}


def build_sensitivity_file(spec: dict[str, Any], out: str | Path,
                           phantom_h5: str | Path | None = None,
                           overwrite: bool = False) -> Path:
    """Compute and write a 3D sensitivity image: attenuated through the phantom's mu map
    when ``phantom_h5`` is given, else geometric (shift-invariant, per scanner and grid)."""
    check_spec(spec)
    out = Path(out)
    _check_outputs([out], overwrite)
    geometry, grid = geometry_of(spec), image_grid_of(spec)
    device = resolve_device(spec["device"])
    chunk = int(spec["recon"]["chunk_lors"])
    phantom = None
    start = time.perf_counter()
    if phantom_h5 is not None:
        phantom, mu_grid = _read_mu(Path(phantom_h5), spec, grid)
        image = attenuated_sensitivity(
            geometry, grid, max_ring_difference(spec), mu_grid,
            torch.as_tensor(smoothed_mu(phantom, spec), dtype=torch.float32, device=device),
            device, chunk)
    else:
        image = geometric_sensitivity(geometry, grid, max_ring_difference(spec), device, chunk)
    with atomic_output(out, overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("sensitivity", data=image.cpu().numpy(), compression="gzip",
                         compression_opts=4, shuffle=True)
        f.attrs["key"] = json.dumps(sensitivity_key(spec, phantom), sort_keys=True)
        f.attrs["units"] = "mm (sum of LOR intersection lengths, attenuation-weighted)"
        for key, value in grid.to_attrs().items():
            f.attrs[key] = value
        if phantom is not None:
            f.attrs["phantom_file"] = str(phantom_h5)
            for key, value in _phantom_attrs(phantom.origin(phantom_h5)).items():
                f.attrs[key] = value
    log.info("sensitivity %s in %.1f s", grid.shape, time.perf_counter() - start)
    return out


#: Provenance fields (:mod:`pipeline.provenance`) -> the attribute a reconstruction or a
#: sensitivity image records them in (the list-mode file's names).
PHANTOM_ATTRS = {"phantom": "phantom_name", "dataset": "dataset",
                 "phantom_grid": "phantom_grid",
                 "phantom_config_sha256": "phantom_config_sha256"}


def _phantom_attrs(*origins: Origin) -> dict[str, Any]:
    """Attributes recording the phantom: each field from the first origin that records it
    (the grid as JSON)."""
    attrs = {}
    for field, key in PHANTOM_ATTRS.items():
        value = next((o.fields[field] for o in origins if o.fields.get(field) is not None),
                     None)
        if value is not None:
            attrs[key] = json.dumps(value, sort_keys=True) if field == "phantom_grid" else value
    return attrs


def sensitivity_origin(path: str | Path) -> Origin:
    """What a sensitivity file records of the phantom it was attenuated through (nothing for
    a geometric one or one written before these records)."""
    path = Path(path)
    with open_hdf5(path, "sensitivity file") as f:
        attrs = decoded_attrs(f)
    return Origin(f"sensitivity file {path}",
                  {"phantom": attrs.get("phantom_name"), "dataset": attrs.get("dataset"),
                   "phantom_config_sha256": attrs.get("phantom_config_sha256")})


def read_sensitivity(path: str | Path, expected_key: dict[str, Any]) -> torch.Tensor:
    """Read a sensitivity image and check it was made for this geometry (and phantom)."""
    path = Path(path)
    with open_hdf5(path, "sensitivity file") as f:
        if "sensitivity" not in f:
            raise ValueError(f"{path}: not a sensitivity file (no sensitivity dataset)")
        check_key(path, decoded_attrs(f), expected_key, "sensitivity")
        return torch.as_tensor(f["sensitivity"][...])


# ---------------------------------------------------------------------- reconstruction
def output_paths(out_h5: str | Path) -> dict[str, Path]:
    """The files of one reconstruction: ``h5``, ``nifti`` (.nii.gz), ``png`` and ``defects``
    (``{stem}_defects.json``, :mod:`recon.detectability`)."""
    out_h5 = Path(out_h5)
    if out_h5.suffix != ".h5":
        raise ValueError(f"output {out_h5} must end in .h5")
    return {"h5": out_h5, "nifti": out_h5.with_suffix(".nii.gz"),
            "png": out_h5.with_suffix(".png"),
            "defects": out_h5.with_name(f"{out_h5.stem}_defects.json")}


def write_detectability(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any],
                        overwrite: bool) -> None:
    """Write the defect measures of one reconstruction atomically (an empty list, with a
    note, when no phantom file was given)."""
    if not rows and not meta.get("phantom_file"):
        meta = {**meta, "note": "no phantom file given: nothing to measure against"}
    with atomic_output(path, overwrite) as tmp:
        write_detectability_json(tmp, rows, meta, DETECTABILITY)
    for row in rows:
        log.info("defect %d (%s, %.1f mm): ratio %.3f, CRC %.3f, CNR %.2f [%s]", row["label"],
                 row["type"], row["size_mm"], row["ratio"], row["crc"], row["cnr"],
                 row["status"])


def postfilter(image: np.ndarray, grid: ImageGrid, fwhm_mm: float) -> np.ndarray:
    """Isotropic Gaussian of ``fwhm_mm`` (no filter for 0), voxels outside the image are 0."""
    return gaussian_fwhm(image, grid.voxel_size_mm, fwhm_mm)


def image_model(spec: dict[str, Any], phantom: PhantomData | None, mu_grid: ImageGrid | None,
                grid: ImageGrid, geometry: SinogramGeometry,
                device: torch.device | str = "cpu") -> ImageModel | None:
    """The image side of the model (:mod:`recon.kernel`): the kernel method's ``K`` from the
    phantom's mu map averaged over the image voxels, inside the transaxial field of view
    (``recon.kernel``), and the resolution model ``G`` (``recon.psf_fwhm_mm``); None when
    neither is set."""
    r = spec["recon"]
    settings = KernelSettings.from_config(r)
    kernel = psf = None
    if settings.enabled:
        if phantom is None or mu_grid is None:
            raise ValueError("recon.kernel: mu needs the phantom's mu map "
                             "(recon.attenuation_correction: true and the phantom file)")
        mu = mu_on_grid(phantom.mu511_per_mm, mu_grid, grid)
        mask = np.broadcast_to(grid.fov_mask(geometry.fov_radius_mm())[None], grid.shape)
        kernel = ImageKernel(mu, mask, grid.voxel_size_mm, settings, device)
    if float(r.get("psf_fwhm_mm", 0.0)) > 0:
        psf = GaussianPSF(float(r["psf_fwhm_mm"]), grid.voxel_size_mm, device)
    return None if kernel is None and psf is None else ImageModel(grid.shape, kernel, psf)


def reconstruct_rebinned(spec: dict[str, Any], data: ListMode, counts: np.ndarray,
                         geometry: SinogramGeometry, grid: ImageGrid, system: SystemMatrix2D,
                         phantom: PhantomData | None, mu_grid: ImageGrid | None,
                         device: torch.device | str = "cpu",
                         callback: Callable[[int, np.ndarray], None] | None = None
                         ) -> tuple[EMResult, int, np.ndarray | None]:
    """The 2D mode on rebinned counts (bins, planes): delayed-window randoms, the smoothed
    attenuation map when ``phantom`` is given, the scatter estimate
    (:func:`estimate_scatter`), and the configured SSRB model (``oblique``, or ``direct``
    plane by plane). Returns the EM result (image (z, y, x)), the number of delayed
    coincidences used and the scatter estimate (bins, planes) or None. ``callback(iteration,
    image)`` serves convergence studies (oblique model only)."""
    r = spec["recon"]
    d_max = max_ring_difference(spec)
    randoms, n_delayed = None, 0
    if r["randoms"] == "delayed":
        delayed = sinogram_stack(data.delayed["crystal1"], data.delayed["crystal2"],
                                 geometry, grid, d_max, data.delayed.get("weight"))
        randoms = uniform_randoms(delayed, geometry)
        n_delayed = int(delayed.sum())
    mu = None
    if phantom is not None:
        mu = attenuation_map(phantom, mu_grid, grid, float(r["attenuation_fwhm_mm"]))
    oblique = ObliqueGeometry.build(geometry, system, grid, plane_indices(geometry, grid))
    settings = EMSettings(int(r["iterations"]), int(r["subsets"]))
    direct_weights = (plane_weights(geometry, grid, d_max, None) if mu is None else
                      rebinned_weights(geometry, rebinned_attenuation(oblique, mu, d_max)))
    estimate = estimate_scatter(spec, counts, randoms, geometry, grid, system, oblique,
                                direct_weights, phantom, mu_grid, mu, device)
    scatter = None if estimate is None else estimate.rebinned
    background = randoms
    if scatter is not None:
        background = scatter if randoms is None else randoms + scatter
    model = image_model(spec, phantom, mu_grid, grid, geometry, device)
    if r["ssrb_model"] == "oblique":
        result = reconstruct_oblique(counts, oblique, d_max, geometry, grid, settings, mu,
                                     device, background, callback, model)
    else:
        result = reconstruct_2d(counts, direct_weights, system, geometry, grid, settings,
                                device, background, model)
    return result, n_delayed, scatter


def estimate_scatter(spec: dict[str, Any], counts: np.ndarray, randoms: np.ndarray | None,
                     geometry: SinogramGeometry, grid: ImageGrid, system: SystemMatrix2D,
                     oblique: ObliqueGeometry, direct_weights: torch.Tensor,
                     phantom: PhantomData | None, mu_grid: ImageGrid | None,
                     mu_smoothed: np.ndarray | None, device: torch.device | str = "cpu"
                     ) -> ScatterEstimate | None:
    """Scatter by single scatter simulation scaled to the tails of the rebinned counts
    (:mod:`recon.scatter`), or None when ``recon.scatter`` is ``none`` or there is no mu
    map. The activity estimate is refined ``recon.scatter_iterations`` times: a short
    reconstruction (2 iterations of the direct model, the last scatter estimate as
    background), then SSS from it."""
    r = spec["recon"]
    if r["scatter"] == "none" or phantom is None:
        return None
    d_max = max_ring_difference(spec)
    mu = mu_on_grid(phantom.mu511_per_mm, mu_grid, grid)
    tails = tail_mask(system, mu_smoothed, geometry.valid().ravel(), SCATTER.tail_mu)
    window = tuple(float(e) for e in spec["scanner"]["energy_window_kev"])
    resolution = float(spec["scanner"]["energy_resolution"])
    plane_index = plane_indices(geometry, grid)
    detectors = coarse_detectors(geometry, SCATTER)
    estimate = None
    for _ in range(int(r["scatter_iterations"])):
        background = randoms if estimate is None else (
            estimate.rebinned if randoms is None else randoms + estimate.rebinned)
        quick = reconstruct_2d(counts, direct_weights, system, geometry, grid,
                               EMSettings(2, int(r["subsets"])), device, background)
        coarse = coarse_single_scatter(geometry, grid, quick.image.cpu().numpy(), mu, d_max,
                                       window, resolution, SCATTER, device)
        sss = to_rebinned(coarse, detectors, geometry, plane_index, d_max)
        scale = fit_tail_scale(counts, randoms, sss, tails)
        estimate = ScatterEstimate(coarse, detectors, scale, scale * sss)
        log.info("scatter: tail scale %.4g, %.0f of %.0f rebinned counts (%.1f %%)", scale,
                 estimate.rebinned.sum(), counts.sum(),
                 100 * estimate.rebinned.sum() / max(counts.sum(), 1))
    return estimate


def listmode_background(spec: dict[str, Any], data: ListMode, events: ListModeEvents,
                        geometry: SinogramGeometry, grid: ImageGrid,
                        phantom: PhantomData | None, mu_grid: ImageGrid | None,
                        kernel: TOFKernel | None, device: torch.device | str = "cpu"
                        ) -> tuple[np.ndarray | None, int, float | None]:
    """Randoms and scatter of the 3D mode, per event (:func:`recon.recon3d.event_background`).

    Randoms: the delayed coincidences the reconstruction keeps, spread evenly over every LOR
    of the sensitivity image (as in 2D). Scatter: the 2D estimate (:func:`estimate_scatter`,
    from the events rebinned) interpolated to each event's LOR. Each divided by the event's
    own attenuation factor (its LOR through the phantom's mu map). Returns the background (or
    None), the delayed coincidences used and the scatter counts expected over all LORs (or
    None)."""
    r = spec["recon"]
    d_max = max_ring_difference(spec)
    n_events = len(events.p1)
    randoms_per_lor, n_delayed = 0.0, 0
    if r["randoms"] == "delayed":
        n_delayed = len(select_events(data.delayed, geometry, d_max).p1)
        randoms_per_lor = n_delayed / lor_count(geometry, d_max)
    scatter, n_scatter = None, None
    if phantom is not None and r["scatter"] != "none" and n_events:
        columns = data.coincidences
        system = build_system_matrix(geometry, grid, device)
        counts = sinogram_stack(columns["crystal1"], columns["crystal2"], geometry, grid, d_max)
        delayed = sinogram_stack(data.delayed["crystal1"], data.delayed["crystal2"], geometry,
                                 grid, d_max)
        randoms = uniform_randoms(delayed, geometry) if r["randoms"] == "delayed" else None
        oblique = ObliqueGeometry.build(geometry, system, grid, plane_indices(geometry, grid))
        mu = attenuation_map(phantom, mu_grid, grid, float(r["attenuation_fwhm_mm"]))
        weights = rebinned_weights(geometry, rebinned_attenuation(oblique, mu, d_max))
        estimate = estimate_scatter(spec, counts, randoms, geometry, grid, system, oblique,
                                    weights, phantom, mu_grid, mu, device)
        keep = select_events(columns, geometry, d_max, keep_mask=True)
        scatter = estimate.at_lors(geometry.scanner, columns["crystal1"][keep],
                                   columns["crystal2"][keep])
        n_scatter = float(estimate.rebinned.sum())
    if not randoms_per_lor and scatter is None:
        return None, n_delayed, n_scatter
    attenuation = np.ones(n_events)
    if phantom is not None:
        through_mu = Projector(mu_grid, device=device, chunk=int(r["chunk_lors"]))
        attenuation = torch.exp(-through_mu.forward(
            torch.as_tensor(smoothed_mu(phantom, spec)), events.p1, events.p2)).cpu().numpy()
    return (event_background(events, attenuation, randoms_per_lor, scatter, grid,
                             kernel is not None), n_delayed, n_scatter)


def read_coincidences(path: str | Path, rows: bool, tof: bool) -> ListMode:
    """A list-mode file, or a coincidence histogram (:mod:`sim.listmode.histogram`) as the
    reconstruction reads it: each crystal pair once with its count in column ``weight``
    (the 2D mode rebins weighted pairs), or with ``rows`` its pairs repeated count times
    (the 3D mode takes events; memory then grows with the counts, as for list-mode). A
    histogram has no times, so it cannot serve a TOF reconstruction."""
    path = Path(path)
    if not is_histogram(path):
        return read_listmode(path)
    if tof:
        raise ValueError(f"{path}: a coincidence histogram has no times; recon.tof needs "
                         "list-mode events (simulation.statistical.output: listmode)")
    histogram = read_histogram(path)

    def columns(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = group["count"].astype(np.int64)
        if not rows:
            return {"crystal1": group["crystal1"], "crystal2": group["crystal2"],
                    "weight": count.astype(np.float64)}
        n = int(count.sum())
        return {"crystal1": np.repeat(group["crystal1"], count),
                "crystal2": np.repeat(group["crystal2"], count),
                "time1_ns": np.zeros(n), "time2_ns": np.zeros(n)}

    return ListMode(columns(histogram.coincidences), columns(histogram.delayed),
                    histogram.attrs, histogram.scanner)


def prompt_count(data: ListMode) -> int:
    """Prompts of a file read by :func:`read_coincidences` (rows, or summed weights)."""
    weight = data.coincidences.get("weight")
    return len(data) if weight is None else int(weight.sum())


def reconstruct(spec: dict[str, Any], listmode_h5: str | Path, phantom_h5: str | Path | None,
                out_h5: str | Path, system_h5: str | Path | None = None,
                sensitivity_h5: str | Path | None = None, overwrite: bool = False
                ) -> dict[str, Any]:
    """Reconstruct one list-mode file (module docstring); returns a summary dict.

    ``system_h5`` (2D) and ``sensitivity_h5`` (3D) are the cached geometry files; each is
    computed here when not given. ``phantom_h5`` is needed for attenuation correction.
    """
    check_spec(spec)
    paths = output_paths(out_h5)
    _check_outputs(list(paths.values()), overwrite)
    r = spec["recon"]
    listmode_h5 = Path(listmode_h5)
    geometry = geometry_of(spec)
    grid = image_grid_of(spec)
    d_max = max_ring_difference(spec)
    kernel = tof_kernel(spec)
    data = read_coincidences(listmode_h5, rows=r["mode"] == "3d", tof=kernel is not None)
    _check_scanner(listmode_h5, data.scanner, geometry.scanner)
    phantom = mu_grid = None
    if r["attenuation_correction"] and phantom_h5 is None:
        raise ValueError("recon.attenuation_correction needs the phantom file (mu511)")
    if phantom_h5 is not None:  # for attenuation and scatter, or the defect measures only
        phantom_h5 = Path(phantom_h5)
        phantom = read_phantom(phantom_h5)
        # Attenuation, scatter, the kernel's mu and the defect measures all assume the
        # phantom the events came from: checked before the phantom is used at all.
        check_same_origin(data.origin(listmode_h5), phantom.origin(phantom_h5),
                          PHANTOM_FIELDS,
                          advice="give the phantom file the list-mode file was simulated from")
    if r["attenuation_correction"]:
        mu_grid = _mu_grid(phantom, phantom_h5, grid)
    attenuation_phantom = phantom if r["attenuation_correction"] else None
    device = resolve_device(spec["device"])
    system: SystemMatrix2D | None = None
    sensitivity = None
    if r["mode"] == "2d" and system_h5 is not None:
        system = read_system_matrix(system_h5, geometry, grid)
    if r["mode"] == "3d" and sensitivity_h5 is not None:
        if attenuation_phantom is not None:
            check_same_origin(sensitivity_origin(sensitivity_h5),
                              attenuation_phantom.origin(phantom_h5),
                              PHANTOM_FIELDS,
                              advice="give the sensitivity image made with this phantom file")
        sensitivity = read_sensitivity(sensitivity_h5,
                                       sensitivity_key(spec, attenuation_phantom))

    start = time.perf_counter()
    columns = data.coincidences
    n_delayed = 0
    n_scatter = None
    n_prompts = prompt_count(data)
    if r["mode"] == "2d":
        counts = sinogram_stack(columns["crystal1"], columns["crystal2"], geometry, grid, d_max,
                                columns.get("weight"))
        n_used = int(counts.sum())
        plane_counts = counts.sum(axis=0)
    else:
        events = select_events(columns, geometry, d_max)
        n_used = len(events.p1)
        mid_z = (events.p1[:, 2] + events.p2[:, 2]) / 2
        plane = np.floor((mid_z - grid.lower_mm[0]) / grid.voxel_size_mm[0]).astype(int)
        plane_counts = np.bincount(plane[(plane >= 0) & (plane < grid.shape[0])],
                                   minlength=grid.shape[0]).astype(float)
    if n_used == 0:
        warnings.warn(f"{listmode_h5}: no usable coincidences ({n_prompts} prompts); "
                      "writing a zero image", stacklevel=2)
        log.warning("%s: no usable coincidences; zero image", listmode_h5)
        image = np.zeros(grid.shape, np.float32)
        loglik = [0.0] * int(r["iterations"])
    elif r["mode"] == "2d":
        if system is None:
            system = build_system_matrix(geometry, grid, device)
        result, n_delayed, scatter = reconstruct_rebinned(
            spec, data, counts, geometry, grid, system, attenuation_phantom, mu_grid, device)
        if scatter is not None:
            n_scatter = float(scatter.sum())
        image, loglik = result.image.cpu().numpy(), result.loglik
    else:
        if sensitivity is None:
            chunk = int(r["chunk_lors"])
            if attenuation_phantom is not None:
                sensitivity = attenuated_sensitivity(
                    geometry, grid, d_max, mu_grid,
                    torch.as_tensor(smoothed_mu(phantom, spec), device=device), device, chunk)
            else:
                sensitivity = geometric_sensitivity(geometry, grid, d_max, device, chunk)
        background, n_delayed, n_scatter = listmode_background(
            spec, data, events, geometry, grid, attenuation_phantom, mu_grid, kernel, device)
        result = reconstruct_3d(events, sensitivity, geometry, grid, int(r["iterations"]),
                                int(r["subsets"]), kernel, device, int(r["chunk_lors"]),
                                background, image_model(spec, attenuation_phantom, mu_grid,
                                                        grid, geometry, device))
        image, loglik = result.image.cpu().numpy(), result.loglik
    seconds = time.perf_counter() - start
    image = postfilter(image.astype(np.float32), grid, float(r["postfilter_fwhm_mm"]))
    # Measured before any output is written: a failure leaves no partial set of files.
    defects = [] if phantom is None else measure_defects(image, grid, phantom, DETECTABILITY)

    algorithm = "MLEM" if int(r["subsets"]) == 1 else "OSEM"
    mode = "2D SSRB" if r["mode"] == "2d" else ("3D list-mode TOF" if kernel else "3D list-mode")
    params = {"mode": r["mode"], "max_ring_difference_used": d_max, "doi_mm": geometry.doi_mm,
              "tof_sigma_mm": None if kernel is None else kernel.sigma_mm}
    attrs = provenance_attrs(spec, params=params)
    attrs.update(
        algorithm=f"{algorithm} ({mode})", iterations=int(r["iterations"]),
        subsets=int(r["subsets"]), attenuation_corrected=bool(attenuation_phantom is not None),
        tof=bool(kernel is not None), kernel=str(r["kernel"]),
        psf_fwhm_mm=float(r["psf_fwhm_mm"]),
        randoms_corrected=bool(r["randoms"] == "delayed"),
        scatter_corrected=bool(n_scatter is not None),
        scatter_estimated=float("nan") if n_scatter is None else n_scatter,
        delayed_used=n_delayed, postfilter_fwhm_mm=float(r["postfilter_fwhm_mm"]),
        units="activity per voxel volume, proportional to Bq/mL (relative scale)",
        prompts=n_prompts, coincidences_used=n_used, seconds=seconds,
        activity_bq=float(data.attrs["activity_bq"]), duration_s=float(data.attrs["duration_s"]),
        acquisition=str(data.attrs.get("acquisition", listmode_h5.stem)),
        listmode_file=str(listmode_h5), phantom_file=str(phantom_h5 or ""),
        scanner=json.dumps(geometry.scanner.to_dict(), sort_keys=True),
    )
    # The phantom the events came from, as the list-mode file records it (else as the
    # phantom file given does), so the image sets can check what they pair it with.
    attrs.update(_phantom_attrs(data.origin(listmode_h5),
                                *(() if phantom is None else (phantom.origin(phantom_h5),))))
    title = f"{listmode_h5.parent.name}/{listmode_h5.stem}: {algorithm} {mode}, {n_used} counts"
    # The four files are one output: moved into place together or not at all.
    with atomic_output_set(list(paths.values()), overwrite) as staging:
        staged = {key: staging / path.name for key, path in paths.items()}
        write_recon(staged["h5"], image, grid, loglik, attrs, plane_counts)
        write_nifti(staged["nifti"], image, grid)
        write_preview(staged["png"], image, grid, title)
        write_detectability(staged["defects"], defects,
                            {"phantom": listmode_h5.parent.name,
                             "acquisition": str(attrs["acquisition"]),
                             "reconstruction": str(paths["h5"]),
                             "phantom_file": str(phantom_h5 or "")}, False)
    log.info("%s: %s, %d of %d prompts, %d x %d iterations in %.1f s", paths["h5"], mode, n_used,
             n_prompts, r["iterations"], r["subsets"], seconds)
    return {"coincidences_used": n_used, "prompts": n_prompts, "seconds": seconds,
            "loglik": loglik}
