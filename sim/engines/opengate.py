"""The ``opengate`` engine: the same scanner, phantom and digitizer simulated by GATE 10.

:func:`build_simulation` turns a simulate spec and a phantom file into an
``opengate.Simulation``; :func:`run_opengate` checks the Geant4 data, runs it in a child
process (Geant4 aborts the whole process on a fatal error) and converts the ROOT output to
the list-mode file with :mod:`sim.listmode.root_import`.

What is built:

* geometry: a world of the project's air; 184 module boxes (``modules_per_ring`` angular x
  ``axial_modules`` axial; copy ``m = rsector * axial_modules + module``) placed by rotation
  about z and translation, each filled with an ``1 x 8 x 8`` crystal array (copy
  ``j + 8 k``, GATE's cubic-array order), so crystal centres are exactly
  :meth:`sim.scanner.geometry.Scanner.crystal_centres_mm`; the phantom's material image as an
  ``Image`` volume centred where the phantom file puts it, with one material per label;
* materials: every material defined from the project's own composition and density
  (:mod:`sim.phantoms.materials`), so both engines see the same matter (``nde_<name>``);
* source: a ``VoxelSource`` of ``back_to_back`` 511 keV pairs from the activity image, with
  acolinearity (``accolinearity_fwhm``); opengate gives every thread the source's activity,
  so each thread gets ``activity_bq / threads`` and the total is the acquisition's;
* physics: ``G4EmStandardPhysics_option4``, production cut ``simulation.production_cut_mm``;
* digitizer: hits in the crystals -> adder per crystal (energy-weighted centroid) -> readout
  per module (sum of energies, winner's crystal, position discretised to the crystal centre;
  GATE's TakeEnergyWinner) -> energy blurring (inverse-square law, ``energy_resolution`` at
  511 keV) -> time blurring (Gaussian, ``time_resolution_ps`` FWHM) -> energy window ->
  two coincidence sorters: prompts (``coincidences``) and a delayed window offset by
  ``delayed_window_offset_ns`` (``delayed``), both with ``coincidence_window_ns`` and
  ``multiples_policy``. opengate's sorter knows no minimum sector difference; it gets the
  smallest transaxial distance of a pair ``min_sector_difference`` modules apart and the
  import applies the exact rule (:mod:`sim.listmode.root_import`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xraylib

from sim.engines.base import SpecEngine
from sim.engines.geant4_data import prepare_geant4_environment
from sim.listmode.file import acquisition_attrs
from sim.listmode.root_import import OPENGATE_COMPTON, OPENGATE_RAYLEIGH, import_root
from sim.phantoms.file import gate_files, read_phantom
from sim.phantoms.materials import MATERIALS
from sim.phantoms.metaimage import read_mhd
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

PHYSICS_LIST = "G4EmStandardPhysics_option4"
#: Actor names, which are also the ROOT tree names of the output.
PROMPTS_TREE, DELAYED_TREE = "coincidences", "delayed"
ROOT_NAME = "opengate.root"


def import_opengate(check_data: bool = True) -> Any:
    """Import opengate without its import-time download of the Geant4 data.

    Parameters
    ----------
    check_data : bool
        Locate the Geant4 data first
        (:func:`sim.engines.geant4_data.prepare_geant4_environment`) and fail with a clear message
        if it is missing. ``False`` only builds simulations (tests, inspection): running one would
        then fail inside Geant4.
    """
    if check_data:
        prepare_geant4_environment()
    else:
        os.environ["GATEONRTD"] = "1"
    import opengate

    return opengate


def material_name(key: str) -> str:
    """opengate name of a project material."""
    return f"nde_{key}"


def module_placements_mm(scanner: Scanner) -> tuple[np.ndarray, np.ndarray]:
    """Centre and rotation of every module box (copy ``rsector * axial_modules + module``).

    Returns
    -------
    translations : numpy.ndarray
        Shape (modules_per_ring * axial_modules, 3), mm.
    rotations : numpy.ndarray
        Shape (..., 3, 3): rotation about z by the module's normal angle (local x = depth,
        y = tangent, z = axis).
    """
    phi = np.repeat(scanner.module_angles_rad, scanner.axial_modules)
    module_pitch_mm = scanner.crystals_per_module_axial * scanner.axial_pitch_mm
    axial = np.tile(np.arange(scanner.axial_modules), scanner.modules_per_ring)
    z = (-scanner.axial_length_mm / 2 + axial * (module_pitch_mm + scanner.axial_module_gap_mm)
         + module_pitch_mm / 2)
    radius = scanner.inner_radius_mm + scanner.crystal_depth_mm / 2
    translations = np.stack([radius * np.cos(phi), radius * np.sin(phi), z], axis=-1)
    cos, sin, zero, one = np.cos(phi), np.sin(phi), np.zeros_like(phi), np.ones_like(phi)
    rotations = np.stack([np.stack([cos, -sin, zero], -1), np.stack([sin, cos, zero], -1),
                          np.stack([zero, zero, one], -1)], axis=-2)
    return translations, rotations


def crystal_offsets_mm(scanner: Scanner) -> np.ndarray:
    """Crystal centres in their module's frame, copy ``j + ny * k``, shape (ny * nz, 3), mm."""
    ny, nz = scanner.crystals_per_module, scanner.crystals_per_module_axial
    k, j = np.divmod(np.arange(ny * nz), ny)
    return np.stack([np.zeros(ny * nz), (j - (ny - 1) / 2) * scanner.crystal_pitch_mm,
                     (k - (nz - 1) / 2) * scanner.axial_pitch_mm], axis=-1)


def min_transaxial_distance_mm(scanner: Scanner, min_sector_difference: int) -> float:
    """Smallest transaxial distance between crystal centres ``>= min_sector_difference``
    modules apart, less 1 um, so opengate's distance cut keeps every such pair."""
    if min_sector_difference <= 0:
        return 0.0
    xy = scanner.crystal_centres_mm(np.arange(scanner.crystals_per_ring))[:, :2]
    module = np.arange(scanner.crystals_per_ring) // scanner.crystals_per_module
    d = np.abs(module[:, None] - module[None, :])
    d = np.minimum(d, scanner.modules_per_ring - d)
    dist = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1)
    return float(dist[d >= min_sector_difference].min() - 1e-3)


@dataclass
class OpengateSetup:
    """A built simulation and where its outputs go."""

    sim: Any
    root_path: Path
    stats: Any
    actors: dict[str, Any] = field(default_factory=dict)


def _define_materials(sim: Any, g_cm3: float, keys: list[str]) -> None:
    """Define project materials in opengate (``g_cm3``: opengate's unit of g/cm3)."""
    database = sim.volume_manager.material_database
    for key in keys:
        material = MATERIALS[key]
        symbols = [xraylib.AtomicNumberToSymbol(z) for z in material.composition]
        weights = list(material.composition.values())
        database.add_material_weights(material_name(key), symbols, weights,
                                      material.density_g_cm3 * g_cm3)


def build_simulation(gate: Any, spec: dict[str, Any], phantom_h5: str | Path,
                     work_dir: str | Path, threads: int = 1) -> OpengateSetup:
    """Build the opengate simulation of one acquisition (nothing runs).

    Parameters
    ----------
    gate : module
        The ``opengate`` module (:func:`import_opengate`).
    spec : dict
        Simulate spec (:func:`pipeline.specs.simulate_spec`).
    phantom_h5 : path
        Phantom file; its ``_materials.mhd`` and ``_activity.mhd`` copies are read.
    work_dir : path
        Where opengate writes its ROOT file.
    threads : int
        Geant4 worker threads.
    """
    u = gate.g4_units
    scanner = Scanner.from_config(spec["scanner"])
    digi = spec["scanner"]
    simulation = spec["simulation"]
    acquisition = spec["acquisition"]
    phantom = read_phantom(phantom_h5)
    images = gate_files(phantom_h5)
    work_dir = Path(work_dir)
    root_path = work_dir / ROOT_NAME

    sim = gate.Simulation()
    sim.output_dir = str(work_dir)
    sim.number_of_threads = int(threads)
    # Geant4 engines take 31-bit seeds; the spec's seed is reduced modulo 2^31 - 1.
    sim.random_seed = int(spec["seed"]) % (2**31 - 1)
    sim.progress_bar = False
    sim.run_timing_intervals = [[0, float(acquisition["duration_s"]) * u.s]]

    used = sorted({m["name"] for m in phantom.materials.values()}
                  | {"air", digi["crystal_material"]})
    _define_materials(sim, u.g / u.cm3, used)

    # ---------------------------------------------------------------- geometry
    ring_radius_mm = scanner.inner_radius_mm + scanner.crystal_depth_mm
    world = sim.world
    world.size = [2 * (ring_radius_mm + 100) * u.mm] * 2 + [
        (scanner.axial_length_mm + 400) * u.mm]
    world.material = material_name("air")

    translations, rotations = module_placements_mm(scanner)
    module = sim.add_volume("Box", "module")
    module.size = [scanner.crystal_depth_mm * u.mm,
                   scanner.crystals_per_module * scanner.crystal_pitch_mm * u.mm,
                   scanner.crystals_per_module_axial * scanner.axial_pitch_mm * u.mm]
    module.material = material_name("air")
    module.translation = [list(t * u.mm) for t in translations]
    module.rotation = [r for r in rotations]

    crystal = sim.add_volume("Box", "crystal")
    crystal.mother = module.name
    crystal.size = [scanner.crystal_depth_mm * u.mm, scanner.crystal_width_mm * u.mm,
                    scanner.crystal_axial_width_mm * u.mm]
    crystal.material = material_name(digi["crystal_material"])
    crystal.translation = [list(t * u.mm) for t in crystal_offsets_mm(scanner)]

    # opengate centres an image on its volume's translation and ignores the file's origin:
    # place it where the MetaImage header (the file opengate reads) says.
    activity, spacing_zyx_mm, origin_zyx_mm = read_mhd(images["activity"])
    centre_xyz_mm = (origin_zyx_mm + (np.asarray(activity.shape) - 1) / 2
                     * spacing_zyx_mm)[::-1]
    image = sim.add_volume("Image", "phantom")
    image.image = str(images["materials"])
    image.material = material_name("air")
    image.voxel_materials = [[int(i), int(i) + 1, material_name(m["name"])]
                             for i, m in sorted(phantom.materials.items())]
    image.translation = list(centre_xyz_mm * u.mm)

    # ---------------------------------------------------------------- source and physics
    source = sim.add_source("VoxelSource", "activity")
    source.image = str(images["activity"])
    source.particle = "back_to_back"
    source.activity = float(acquisition["activity_bq"]) * u.Bq / sim.number_of_threads
    source.position.translation = list(centre_xyz_mm * u.mm)
    source.half_life = float(acquisition["half_life_s"]) * u.s
    source.direction.accolinearity_flag = simulation["acolinearity_fwhm_deg"] > 0
    source.direction.accolinearity_fwhm = simulation["acolinearity_fwhm_deg"] * u.deg

    sim.physics_manager.physics_list_name = PHYSICS_LIST
    sim.physics_manager.set_production_cut("world", "all",
                                           simulation["production_cut_mm"] * u.mm)
    for name, process in ((OPENGATE_COMPTON, "compt"), (OPENGATE_RAYLEIGH, "Rayl")):
        counter = sim.activate_auxiliary_attribute("ProcessDefinedStepInVolumeAttribute", name)
        counter.process_name = process
        counter.volume_name = image.name

    # ---------------------------------------------------------------- digitizer
    actors: dict[str, Any] = {}
    stats = sim.add_actor("SimulationStatisticsActor", "stats")
    stats.output_filename = "stats.txt"

    hits = sim.add_actor("DigitizerHitsCollectionActor", "hits")
    hits.attached_to = crystal.name
    hits.authorize_repeated_volumes = True
    hits.attributes = ["EventID", "PostPosition", "TotalEnergyDeposit", "GlobalTime",
                       "PreStepUniqueVolumeID", "EventPosition", OPENGATE_COMPTON,
                       OPENGATE_RAYLEIGH]
    adder = sim.add_actor("DigitizerAdderActor", "adder")
    adder.attached_to = crystal.name
    adder.authorize_repeated_volumes = True
    adder.input_digi_collection = hits.name
    adder.group_volume = crystal.name
    adder.policy = "EnergyWeightedCentroidPosition"
    readout = sim.add_actor("DigitizerReadoutActor", "readout")
    readout.attached_to = crystal.name
    readout.authorize_repeated_volumes = True
    readout.input_digi_collection = adder.name
    readout.group_volume = module.name
    readout.discretize_volume = crystal.name
    readout.policy = "EnergyWinnerPosition"
    energy_blur = sim.add_actor("DigitizerBlurringActor", "energy_blur")
    energy_blur.input_digi_collection = readout.name
    energy_blur.blur_attribute = "TotalEnergyDeposit"
    energy_blur.blur_method = "InverseSquare"
    energy_blur.blur_resolution = float(digi["energy_resolution"])
    energy_blur.blur_reference_value = 511 * u.keV
    time_blur = sim.add_actor("DigitizerBlurringActor", "time_blur")
    time_blur.input_digi_collection = energy_blur.name
    time_blur.blur_attribute = "GlobalTime"
    time_blur.blur_method = "Gaussian"
    time_blur.blur_fwhm = float(digi["time_resolution_ps"]) * u.ps
    window = sim.add_actor("DigitizerEnergyWindowsActor", "window")
    window.attached_to = crystal.name
    window.authorize_repeated_volumes = True
    window.input_digi_collection = time_blur.name
    low_kev, high_kev = digi["energy_window_kev"]
    window.channels = [{"name": "singles", "min": low_kev * u.keV, "max": high_kev * u.keV}]
    for actor in (hits, adder, readout, energy_blur, time_blur, window):
        actor.root_output.write_to_disk = False
        actors[actor.name] = actor

    min_distance_mm = min_transaxial_distance_mm(scanner, int(digi["min_sector_difference"]))
    for name, offset_ns in ((PROMPTS_TREE, 0.0),
                            (DELAYED_TREE, float(digi["delayed_window_offset_ns"]))):
        sorter = sim.add_actor("CoincidenceSorterActor", name)
        sorter.input_digi_collection = "singles"
        sorter.window = float(digi["coincidence_window_ns"]) * u.ns
        sorter.offset = offset_ns * u.ns
        sorter.multiples_policy = digi["multiples_policy"]
        sorter.multi_window = True  # every single opens its own window, as the fast engine
        sorter.min_transaxial_distance = min_distance_mm * u.mm
        sorter.output_filename = ROOT_NAME
        actors[name] = sorter
    actors["stats"] = stats
    return OpengateSetup(sim=sim, root_path=root_path, stats=stats, actors=actors)


def _primaries(setup: OpengateSetup, spec: dict[str, Any]) -> int:
    """Decays simulated, from the statistics actor (falls back to the expected number)."""
    try:
        return int(setup.stats.counts.events)
    except (AttributeError, TypeError, ValueError):
        expected = spec["acquisition"]["activity_bq"] * spec["acquisition"]["duration_s"]
        log.warning("no event count from opengate's statistics actor; using the expected %d",
                    round(expected))
        return int(round(expected))


def run_opengate(spec: dict[str, Any], phantom_h5: str | Path, out_h5: str | Path,
                 threads: int = 1, overwrite: bool = False, keep_root: bool = False
                 ) -> dict[str, int]:
    """Simulate one acquisition with opengate and write the list-mode file.

    The Geant4 data check comes first, so a machine without the data fails at once. The
    run happens in a child process; its ROOT file is converted and then removed unless
    ``keep_root``.

    Returns
    -------
    dict
        Rows written per list-mode group.
    """
    out_h5 = Path(out_h5)
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    gate = import_opengate(check_data=True)
    work_dir = out_h5.parent / f".{out_h5.stem}.opengate"
    work_dir.mkdir(parents=True, exist_ok=True)
    setup = build_simulation(gate, spec, phantom_h5, work_dir, threads)
    log.info("running opengate %s with %d thread(s) in %s", metadata.version("opengate"),
             threads, work_dir)
    try:
        setup.sim.run(start_new_process=True)
    except Exception as exc:
        raise RuntimeError(f"opengate run for {out_h5} failed: {exc} (see the log above; "
                           f"outputs in {work_dir})") from exc
    if not setup.root_path.is_file():
        raise RuntimeError(f"opengate finished without writing {setup.root_path}")
    scanner = Scanner.from_config(spec["scanner"])
    attrs = acquisition_attrs(spec, phantom_h5, params={"threads": threads})
    attrs.update(engine="opengate", engine_version=metadata.version("opengate"),
                 primaries=_primaries(setup, spec), physics_list=PHYSICS_LIST)
    counts = import_root(setup.root_path, out_h5, scanner, attrs, schema="opengate",
                         prompts_tree=PROMPTS_TREE, delayed_tree=DELAYED_TREE,
                         min_sector_difference=int(spec["scanner"]["min_sector_difference"]),
                         overwrite=overwrite)
    if not keep_root:
        shutil.rmtree(work_dir, ignore_errors=True)
    log.info("wrote %s: %d prompts, %d delayed (%.1f per 1000 decays)", out_h5,
             counts["coincidences"], counts["delayed"],
             1000 * counts["coincidences"] / max(attrs["primaries"], 1))
    return counts


#: The engine ``opengate`` for :func:`sim.engines.base.engine_named`.
ENGINE = SpecEngine("opengate", run_opengate)
