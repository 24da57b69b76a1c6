"""GATE 9 macros: fill the templates of ``gate_macros/`` for one simulation job.

The templates (``main.mac`` and the files it runs with ``/control/execute``) hold
``{{name}}`` placeholders, filled from :func:`macro_values`: the job's simulate spec
(:func:`pipeline.specs.simulate_spec`), the scanner geometry
(:class:`sim.scanner.geometry.Scanner`, the only place crystal positions come from) and the phantom
stage's GATE copies beside the phantom file (``{phantom}_materials.mhd``,
``{phantom}_materials.txt``, ``{phantom}_activity.mhd``). Every ``*.mac`` of the templates folder
is rendered into the output folder; ``main.mac`` runs the others by absolute path, so ``Gate`` may
be started from any folder.

The syntax targets GATE 9.3 and 9.4 (the ``digitizerMgr`` digitizer). A placeholder that the
values do not define, or a malformed one, is an error naming the template and the placeholder;
nothing is written then.

Conventions of the rendered macros (checked against GATE's sources, see
``gate_macros/README.md``): lengths in mm, energies in keV, times in ns / ps / s, activity in
Bq, angles in deg; the ring repeater's copy 0 is at :attr:`Scanner.first_module_angle_rad`
and copies turn counter-clockwise about +z; cubic arrays are auto-centred with copy number
``i + nx * (j + ny * k)``, so GATE's (rsector, module, crystal) ids are those of
:meth:`Scanner.gate_ids`.

Over 400 lines: every GATE 9 macro value and the check of the rendered macros, one place per
GATE command family.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sim.phantoms.file import gate_files
from sim.phantoms.materials import get_material
from sim.phantoms.metaimage import read_mhd
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

#: The repository's template folder.
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "gate_macros"
#: The template ``Gate`` is started with; it runs the others.
MAIN_TEMPLATE = "main.mac"
#: A ``{{name}}`` placeholder (spaces inside the braces are allowed).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: Geant4 electromagnetic physics list (G4EmStandardPhysics_option4).
PHYSICS_LIST = "emstandard_opt4"
#: ``readout/setDepth`` of the ``cylindricalPET`` system: 1 = rsector, 2 = module.
READOUT_DEPTH_MODULE = 2
#: Reference energy of the energy resolution, keV.
ENERGY_REFERENCE_KEV = 511.0
#: Our multiples policies (GATE 10 names) -> GATE 9 ``MultiplesPolicy`` names.
GATE9_MULTIPLES_POLICY = {
    "TakeAllGoods": "takeAllGoods",
    "TakeWinnerOfGoods": "takeWinnerOfGoods",
    "RemoveMultiples": "killAll",
}
#: Clearance between the phantom image and the scanner, and around everything in the world, mm.
_MARGIN_MM = 1.0
_WORLD_MARGIN_MM = 50.0


def _num(value: float) -> str:
    """A number as GATE reads it: 12 significant digits, no trailing zeros."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value} into a GATE macro")
    text = format(value, ".12g")
    return "0" if text == "-0" else text


def _field(spec: dict[str, Any], dotted: str) -> Any:
    """``spec["a"]["b"]`` for ``"a.b"``, with an error that names the missing field."""
    node: Any = spec
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"simulate spec has no field {dotted} "
                             "(see pipeline.specs.simulate_spec)")
        node = node[key]
    return node


def _macro_path(path: Path, what: str) -> str:
    """Absolute path as a macro argument; Geant4 splits arguments at spaces and cuts at '#'."""
    text = str(Path(path).resolve())
    if any(c.isspace() for c in text) or "#" in text:
        raise ValueError(f"{what} {text}: GATE macros cannot hold paths with spaces or '#'; "
                         "move the files to a path without them")
    return text


def _material_database_arg(material_database: str | Path) -> str:
    """A bare file name stays as it is (GATE searches its run folder, then ``$GATEHOME``);
    a path becomes absolute."""
    if Path(material_database).parent == Path("."):
        name = str(material_database)
        if not name or any(c.isspace() for c in name) or "#" in name:
            raise ValueError(f"material database {name!r}: no spaces or '#' in a GATE macro")
        return name
    return _macro_path(Path(material_database), "material database")


def _check_range_table(path: Path, material_ids: np.ndarray) -> None:
    """Check the GATE range table's form and that it covers every id of the material image."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        count = int(lines[0][0])
        ranges = [(float(ln[0]), float(ln[1]), ln[2]) for ln in lines[1:]]
    except (IndexError, ValueError):
        raise ValueError(f"{path}: not a GATE range table (a count, then 'first last Material' "
                         "per line)") from None
    if count != len(ranges):
        raise ValueError(f"{path}: announces {count} ranges but holds {len(ranges)}")
    for value in np.unique(material_ids):
        if not any(lo <= value <= hi for lo, hi, _ in ranges):
            raise ValueError(f"{path}: material id {value} of the phantom image has no range")


def _gate9_policy(policy: str) -> str:
    if policy == "TakeIfOnlyOneGood":
        raise ValueError(
            "config key scanner.multiples_policy: 'TakeIfOnlyOneGood' has no GATE 9 equivalent "
            "(GATE 9's keepIfOnlyOneGood keeps the whole multiple, and its ROOT output holds "
            "the first two singles rather than the good pair); use TakeAllGoods, "
            "TakeWinnerOfGoods or RemoveMultiples with engine gate9, or engine opengate")
    try:
        return GATE9_MULTIPLES_POLICY[policy]
    except KeyError:
        raise ValueError(f"config key scanner.multiples_policy: unknown policy {policy!r}; "
                         f"known: {', '.join(GATE9_MULTIPLES_POLICY)}") from None


def gate_seed(seed: int) -> int:
    """The seed written to ``/gate/random/setEngineSeed``.

    GATE reads it with ``atol`` and CLHEP's MersenneTwister keeps its low 32 bits. The
    pipeline's seeds (:func:`pipeline.specs.simulation_seed`) are uint32 and pass unchanged; a
    larger seed is reduced modulo 2**32 so that the macro shows the seed GATE really uses.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"simulate spec field seed must be a non-negative integer, got {seed!r}")
    return int(seed) % 2**32


def macro_values(
    spec: dict[str, Any],
    phantom_h5: str | Path,
    out_dir: str | Path,
    root_basename: str = "gate9",
    material_database: str | Path = "GateMaterials.db",
) -> dict[str, str]:
    """Placeholder values of the templates for one job, as the strings written to the macros.

    Parameters
    ----------
    spec : dict
        Simulate spec of the job (:func:`pipeline.specs.simulate_spec`).
    phantom_h5 : path
        The phantom file; its GATE copies (:func:`sim.phantoms.file.gate_files`) must sit beside it.
    out_dir : path
        Folder of the rendered macros and of the ROOT output.
    root_basename : str
        Name of the ROOT file in ``out_dir``, without ``.root`` (GATE appends it).
    material_database : path
        ``GateMaterials.db`` of the GATE installation; a bare name is looked up by GATE in the
        folder it runs in, then in ``$GATEHOME``.

    Returns
    -------
    dict
        Placeholder name -> value text (numbers without units; the templates write the units:
        mm, keV, ns, ps, s, Bq, deg).

    Raises
    ------
    ValueError
        For a spec field that is missing or has no GATE 9 equivalent, a phantom that does not
        fit inside the scanner bore, an empty activity image or a malformed range table.
    FileNotFoundError
        For a missing GATE copy of the phantom.
    """
    out_dir = Path(out_dir)
    root_basename = root_basename.removesuffix(".root")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", root_basename):
        raise ValueError(f"root_basename {root_basename!r}: use letters, digits, '_', '.', '-'")
    scanner_cfg = _field(spec, "scanner")
    scanner = Scanner.from_config(scanner_cfg)
    files = gate_files(phantom_h5)

    # Phantom: the image volume is centred on its placement; GATE ignores the MetaImage Offset.
    materials, mat_voxel_zyx, mat_origin_zyx = read_mhd(files["materials"])
    _check_range_table(files["range_table"], materials)
    size_zyx = np.array(materials.shape) * mat_voxel_zyx
    centre_zyx = mat_origin_zyx + (np.array(materials.shape) - 1) / 2.0 * mat_voxel_zyx
    cz, cy, cx = centre_zyx
    hz, hy, hx = size_zyx / 2.0
    reach_mm = math.hypot(abs(cx) + hx, abs(cy) + hy)
    system_rmin_mm = scanner.inner_radius_mm - _MARGIN_MM
    if reach_mm >= system_rmin_mm:
        raise ValueError(f"{files['materials']}: the phantom image reaches {reach_mm:.1f} mm from "
                         f"the scanner axis; the bore leaves {system_rmin_mm:.1f} mm")

    # Source: the voxel source puts the corner of voxel (0, 0, 0) at setPosition, and its
    # activity is the sum of voxel value x linear scale.
    activity, act_voxel_zyx, act_origin_zyx = read_mhd(files["activity"])
    total = float(activity.sum(dtype=np.float64))
    if not np.all(np.isfinite(activity)) or activity.min() < 0 or total <= 0:
        raise ValueError(f"{files['activity']}: activity image must be finite, non-negative "
                         "and not all zero")
    corner_zyx = act_origin_zyx - act_voxel_zyx / 2.0
    activity_bq = float(_field(spec, "acquisition.activity_bq"))
    acolinearity_deg = float(_field(spec, "simulation.acolinearity_fwhm_deg"))

    # Scanner: rsector (one flat module, all axial modules), module, crystal.
    window_ns = float(_field(spec, "scanner.coincidence_window_ns"))
    offset_ns = float(_field(spec, "scanner.delayed_window_offset_ns"))
    if offset_ns <= window_ns:
        raise ValueError(f"config key scanner.delayed_window_offset_ns: {offset_ns} ns must "
                         f"exceed the coincidence window ({window_ns} ns)")
    low_kev, high_kev = (float(e) for e in _field(spec, "scanner.energy_window_kev"))
    module_width_mm = scanner.module_width_mm
    module_axial_mm = scanner.crystals_per_module_axial * scanner.axial_pitch_mm
    system_rmax_mm = math.hypot(scanner.inner_radius_mm + scanner.crystal_depth_mm,
                                module_width_mm / 2.0) + _MARGIN_MM
    system_height_mm = scanner.axial_length_mm + 2 * _MARGIN_MM
    world_half_xy = max(system_rmax_mm, reach_mm) + _WORLD_MARGIN_MM
    world_half_z = max(system_height_mm / 2.0, abs(cz) + hz) + _WORLD_MARGIN_MM
    air = get_material("air").gate_name

    duration_s = float(_field(spec, "acquisition.duration_s"))
    values = {
        # provenance
        "dataset": str(_field(spec, "dataset")),
        "phantom": str(_field(spec, "phantom")),
        "acquisition": str(_field(spec, "acquisition.name")),
        "macro_dir": _macro_path(out_dir, "output folder"),
        "material_database": _material_database_arg(material_database),
        # world
        "air_material": air,
        "world_x_mm": _num(2 * world_half_xy),
        "world_y_mm": _num(2 * world_half_xy),
        "world_z_mm": _num(2 * world_half_z),
        # scanner
        "system_rmin_mm": _num(system_rmin_mm),
        "system_rmax_mm": _num(system_rmax_mm),
        "system_height_mm": _num(system_height_mm),
        "rsector_x_mm": _num(scanner.crystal_depth_mm),
        "rsector_y_mm": _num(module_width_mm),
        "rsector_z_mm": _num(scanner.axial_length_mm),
        "rsector_position_mm": _num(scanner.inner_radius_mm + scanner.crystal_depth_mm / 2.0),
        "modules_per_ring": str(scanner.modules_per_ring),
        "first_angle_deg": _num(math.degrees(scanner.first_module_angle_rad)),
        "module_x_mm": _num(scanner.crystal_depth_mm),
        "module_y_mm": _num(module_width_mm),
        "module_z_mm": _num(module_axial_mm),
        "axial_modules": str(scanner.axial_modules),
        "module_axial_pitch_mm": _num(module_axial_mm + scanner.axial_module_gap_mm),
        "crystal_x_mm": _num(scanner.crystal_depth_mm),
        "crystal_y_mm": _num(scanner.crystal_width_mm),
        "crystal_z_mm": _num(scanner.crystal_axial_width_mm),
        "crystal_material": get_material(scanner.crystal_material).gate_name,
        "crystals_per_module": str(scanner.crystals_per_module),
        "crystals_per_module_axial": str(scanner.crystals_per_module_axial),
        "crystal_pitch_mm": _num(scanner.crystal_pitch_mm),
        "axial_pitch_mm": _num(scanner.axial_pitch_mm),
        # phantom
        "phantom_image": _macro_path(files["materials"], "phantom image"),
        "phantom_range_table": _macro_path(files["range_table"], "range table"),
        "phantom_x_mm": _num(cx),
        "phantom_y_mm": _num(cy),
        "phantom_z_mm": _num(cz),
        # source
        "activity_image": _macro_path(files["activity"], "activity image"),
        "activity_bq": _num(activity_bq),
        "activity_scale_bq": _num(activity_bq / total),
        "source_x_mm": _num(corner_zyx[2]),
        "source_y_mm": _num(corner_zyx[1]),
        "source_z_mm": _num(corner_zyx[0]),
        "half_life_s": _num(_field(spec, "acquisition.half_life_s")),
        # GATE replaces an acolinearity of 0 by 0.5 deg: 0 must switch the option off.
        "acolinearity_flag": "true" if acolinearity_deg > 0 else "false",
        "acolinearity_fwhm_deg": _num(acolinearity_deg),
        # physics
        "physics_list": PHYSICS_LIST,
        "energy_cut_kev": _num(_field(spec, "simulation.energy_cut_kev")),
        "production_cut_mm": _num(_field(spec, "simulation.production_cut_mm")),
        # digitizer
        "readout_depth": str(READOUT_DEPTH_MODULE),
        "energy_resolution": _num(_field(spec, "scanner.energy_resolution")),
        "energy_reference_kev": _num(ENERGY_REFERENCE_KEV),
        "time_resolution_ps": _num(_field(spec, "scanner.time_resolution_ps")),
        "energy_window_low_kev": _num(low_kev),
        "energy_window_high_kev": _num(high_kev),
        "coincidence_window_ns": _num(window_ns),
        "delayed_offset_ns": _num(offset_ns),
        "min_sector_difference": str(int(_field(spec, "scanner.min_sector_difference"))),
        "multiples_policy": _gate9_policy(str(_field(spec, "scanner.multiples_policy"))),
        # output, random, acquisition
        "root_file": _macro_path(out_dir / root_basename, "ROOT output"),
        "seed": str(gate_seed(_field(spec, "seed"))),
        "duration_s": _num(duration_s),
    }
    return values


def render_template(text: str, values: dict[str, str], template: str | Path) -> str:
    """Fill the ``{{name}}`` placeholders of one template.

    Raises
    ------
    ValueError
        Naming ``template`` and the placeholder, for a name ``values`` lacks or for braces
        left over after filling (a malformed placeholder).
    """
    for lineno, line in enumerate(PLACEHOLDER.sub("", text).splitlines(), start=1):
        if "{{" in line or "}}" in line:
            raise ValueError(f"{template}: line {lineno}: malformed placeholder in "
                             f"{line.strip()!r} (write {{{{name}}}})")

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"{template}: placeholder {{{{{name}}}}} has no value (the names "
                             "are the keys of sim.engines.gate9.macros.macro_values)")
        return values[name]

    return PLACEHOLDER.sub(fill, text)


def render_gate9_macros(
    spec: dict[str, Any],
    phantom_h5: str | Path,
    out_dir: str | Path,
    root_basename: str = "gate9",
    templates_dir: str | Path = TEMPLATES_DIR,
    material_database: str | Path = "GateMaterials.db",
    overwrite: bool = False,
) -> Path:
    """Render every ``*.mac`` of ``templates_dir`` into ``out_dir`` for one job.

    All templates are filled in memory first, so a bad template or value writes nothing;
    the files are then written under temporary names and renamed into place.

    Parameters
    ----------
    spec, phantom_h5, out_dir, root_basename, material_database
        As for :func:`macro_values`.
    templates_dir : path
        Folder of the templates; must hold ``main.mac``.
    overwrite : bool
        Replace macros already in ``out_dir``.

    Returns
    -------
    pathlib.Path
        The rendered main macro (``out_dir/main.mac``), the one to run with ``Gate``.

    Raises
    ------
    ValueError
        See :func:`macro_values` and :func:`render_template`.
    FileNotFoundError
        Missing templates folder, ``main.mac`` or phantom file.
    FileExistsError
        A rendered macro exists already and ``overwrite`` is False.
    """
    templates_dir = Path(templates_dir)
    out_dir = Path(out_dir)
    templates = sorted(templates_dir.glob("*.mac"))
    if not (templates_dir / MAIN_TEMPLATE).is_file():
        raise FileNotFoundError(f"{templates_dir}: no {MAIN_TEMPLATE} template")
    values = macro_values(spec, phantom_h5, out_dir, root_basename, material_database)
    rendered = {t.name: render_template(t.read_text(), values, t) for t in templates}

    if not overwrite:
        existing = [str(out_dir / name) for name in rendered if (out_dir / name).exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exist(s); pass overwrite=True to "
                                  "replace")
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = {name: out_dir / f".{name}.{os.getpid()}.tmp" for name in rendered}
    try:
        for name, text in rendered.items():
            temporary[name].write_text(text)
        for name, tmp in temporary.items():
            os.replace(tmp, out_dir / name)
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)
    log.info("rendered %d GATE 9 macros for %s/%s (%s) into %s", len(rendered),
             values["dataset"], values["phantom"], values["acquisition"], out_dir)
    return out_dir / MAIN_TEMPLATE


def gate_command(main_macro: str | Path) -> list[str]:
    """Command line that runs a rendered main macro with GATE 9 (start it in the macro's folder).

    Raises
    ------
    RuntimeError
        When no ``Gate`` executable is on PATH.
    FileNotFoundError
        When ``main_macro`` does not exist.
    """
    executable = shutil.which("Gate")
    if executable is None:
        raise RuntimeError("the gate9 engine needs the GATE 9 `Gate` executable on PATH; "
                           "install GATE 9.x or use engine: opengate / fast")
    main_macro = Path(main_macro)
    if not main_macro.is_file():
        raise FileNotFoundError(f"{main_macro}: rendered GATE macro not found")
    return [executable, str(main_macro.resolve())]
