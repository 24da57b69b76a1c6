"""The simulation stage's consistency checks of a config, run by
:func:`pipeline.config.validate_config` after the schema (registered in ``pyproject.toml``
under the entry-point group ``positron_nde.config_checks``, so the pipeline core never imports
a stage): the scanner geometry builds, the settings every simulate job builds from the config
build, and every dataset's phantoms fit their voxel grid and the scanner bore.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.config import ConfigError, check
from sim.engines.embedded.coincidences import SorterSettings
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import EngineSettings
from sim.scanner.geometry import Scanner

_check = check


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`pipeline.config.ConfigError` naming the key of the first problem."""
    try:
        scanner = Scanner.from_config(config["scanner"])
    except ValueError as exc:
        raise ConfigError(f"config key scanner: {exc}") from None
    _check_job_settings(config)
    for name, ds in config["datasets"].items():
        _check_dataset(name, ds, scanner)


def _check_dataset(name: str, ds: dict, scanner: Scanner) -> None:
    """The dataset's phantoms fit their voxel grid and the scanner bore."""
    base = f"datasets.{name}"
    nz, ny, nx = ds["grid"]["shape"]
    dz, dy, dx = ds["grid"]["voxel_size_mm"]
    half_xy_mm = min(ny * dy, nx * dx) / 2.0
    length_z_mm = nz * dz
    bore_mm = scanner.inner_radius_mm
    # The voxel box is the phantom volume of every engine (the embedded transport walks it,
    # GATE places it): a corner inside the crystals would overlap the detector. Anything
    # that fits the box (tube, source, cylinder, part) is therefore inside the bore too.
    corner_mm = float(np.hypot(nx * dx, ny * dy) / 2.0)
    _check(corner_mm < bore_mm, f"{base}.grid",
           f"the grid's transaxial corners lie {corner_mm:.1f} mm from the axis, beyond the "
           f"scanner bore (crystal front faces at {bore_mm:.1f} mm); use fewer or smaller "
           "voxels across x and y")
    family = ds["family"]
    if family == "tube":
        tube = ds["tube"]
        t = f"{base}.tube"
        r_min, r_max = tube["outer_radius_mm"]
        w_min, w_max = tube["wall_thickness_mm"]
        e_max = tube["eccentricity_mm"][1] if tube["anisotropic_probability"] > 0 else 0.0
        _check(w_max < r_min, f"{t}.wall_thickness_mm",
               f"wall up to {w_max} mm is not thinner than the smallest outer radius {r_min} mm")
        _check(e_max < w_min, f"{t}.eccentricity_mm",
               f"bore offset up to {e_max} mm would cut through the thinnest wall ({w_min} mm)")
        _check(2 * tube["end_cap_mm"] < tube["length_mm"][0], f"{t}.end_cap_mm",
               f"two end caps of {tube['end_cap_mm']} mm leave no bore in a tube of "
               f"{tube['length_mm'][0]} mm")
        _check(r_max <= half_xy_mm, f"{t}.outer_radius_mm",
               f"outer radius up to {r_max} mm does not fit the grid ({half_xy_mm} mm half-width)")
        _check(tube["length_mm"][1] <= length_z_mm, f"{t}.length_mm",
               f"tube length up to {tube['length_mm'][1]} mm does not fit the grid "
               f"({length_z_mm} mm along z)")
        defects = ds["defects"]
        d = f"{base}.defects"
        if defects["count"][1] > 0:
            _check(sum(defects["types"].values()) > 0, f"{d}.types",
                   "all defect weights are 0 but defects.count allows defects")
        bore_min_mm = r_min - w_max - e_max
        inner_length_min_mm = tube["length_mm"][0] - 2 * tube["end_cap_mm"]
        for kind in ("inclusion", "bubble"):
            dmax = defects[kind]["diameter_mm"][1]
            _check(dmax < bore_min_mm, f"{d}.{kind}.diameter_mm",
                   f"diameter up to {dmax} mm does not fit the narrowest bore radius "
                   f"({bore_min_mm} mm)")
            _check(dmax < inner_length_min_mm, f"{d}.{kind}.diameter_mm",
                   f"diameter up to {dmax} mm does not fit the bore length "
                   f"({inner_length_min_mm} mm)")
        for kind, key in (("crack", "length_mm"), ("hole", "diameter_mm"), ("pit", "diameter_mm")):
            size = defects[kind][key][1]
            _check(size < inner_length_min_mm, f"{d}.{kind}.{key}",
                   f"{size} mm does not fit the bore length ({inner_length_min_mm} mm)")
        _check(defects["pit"]["diameter_mm"][1] < 2 * bore_min_mm, f"{d}.pit.diameter_mm",
               "pit larger than the bore")
    elif family in ("point", "line"):
        src = ds[family]
        x, y, z = src["position_mm"]
        radius = src["diameter_mm"] / 2.0
        half_len = src.get("length_mm", src["diameter_mm"]) / 2.0
        _check(max(abs(x), abs(y)) + radius <= half_xy_mm and abs(z) + half_len <= length_z_mm / 2,
               f"{base}.{family}.position_mm", "source does not fit inside the voxel grid")
    elif family == "part":
        _check_part(base, ds, np.array([nx * dx, ny * dy, nz * dz]) / 2.0, bore_mm)
    elif family == "nema":
        nema = ds["nema"]
        radius = nema["diameter_mm"] / 2.0
        _check(radius <= half_xy_mm, f"{base}.nema.diameter_mm",
               f"cylinder radius {radius} mm does not fit the grid ({half_xy_mm} mm half-width)")
        _check(nema["length_mm"] <= length_z_mm, f"{base}.nema.length_mm",
               f"cylinder length does not fit the grid ({length_z_mm} mm)")
        _check(nema["line_offset_mm"] + nema["line_diameter_mm"] / 2 < radius,
               f"{base}.nema.line_offset_mm", "line source lies outside the cylinder")


def _check_part(base: str, ds: dict, half_extent_xyz_mm: np.ndarray, bore_mm: float) -> None:
    """A ``part`` dataset: its volumes, their mesh files (read and checked) and the fit."""
    # Imported here: trimesh is needed by this family only.
    from sim.phantoms.parts.files import PartError
    from sim.phantoms.parts.layout import PartRoom, PartSettings, check_fit, load_part

    _check(ds.get("part") is not None, f"{base}.part",
           "family 'part' needs a part section (volumes and fill; see config/parts.yaml)")
    try:
        settings = PartSettings.from_config(ds["part"])
    except ValueError as exc:
        raise ConfigError(f"config key {base}.part.{exc}") from None
    for v in settings.volumes:
        _check(v.name not in settings.fill or v.material != "air", f"{base}.part.fill",
               f"volume {v.name!r} is of air; a cavity holding the solution needs its carrier "
               "(e.g. water) as material")
    weights, count = ds["defects"]["types"], ds["defects"]["count"]
    wall_defects = count[1] > 0 and any(weights[k] > 0 for k in ("crack", "hole", "pit"))
    _check(not wall_defects or any(v.name not in settings.fill and v.material != "air"
                                   for v in settings.volumes), f"{base}.defects.types",
           "cracks, holes and pits go into the part's walls, but no volume is a solid one "
           "(neither filled nor air); set their weights to 0")
    lo, hi = settings.rotation_z_deg
    grid = ds["grid"]
    room = PartRoom.of(grid["shape"], grid["voxel_size_mm"], bore_mm)
    try:
        check_fit(load_part(settings, lo, room=room), half_extent_xyz_mm, turns_about_z=hi > lo)
    except PartError as exc:  # a scale error is one of part.unit_mm, the others of the files
        raise ConfigError(f"config key {base}.part.{getattr(exc, 'key', 'volumes')}: "
                          f"{exc}") from None


def _check_job_settings(config: dict) -> None:
    """Build the typed settings every simulate job builds from the config, so that what
    their constructors refuse is refused by the dry run, not in the job."""
    for section, build in (("scanner", SorterSettings.from_config),
                           ("scanner", DigitizerSettings.from_config),
                           ("simulation", EngineSettings.from_config)):
        try:
            build(config[section])
        except ValueError as exc:
            raise ConfigError(f"config key {section}: {exc}") from None
