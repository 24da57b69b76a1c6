"""Find the Geant4 data sets the GATE engines need, before anything imports opengate.

A gamma-only PET simulation with the EM-only physics list ``G4EmStandardPhysics_option4``
reads three of Geant4's data sets:

========================  ======================  =====================================
environment variable      folder (Geant4 11.4)    checked file
========================  ======================  =====================================
``G4LEDATA``              ``G4EMLOW8.8``          ``livermore/phot_epics2014/pe-cs-8.dat``
``G4LEVELGAMMADATA``      ``PhotonEvaporation6.1.2``  any ``z*.a*`` level file
``G4ENSDFSTATEDATA``      ``G4ENSDFSTATE3.0``     ``ENSDFSTATE.dat``
========================  ======================  =====================================

Each is looked for, in this order: the environment variable itself (set by Geant4's
``geant4.sh`` in an existing installation), ``$GEANT4_DATA_DIR/<folder>*`` (Geant4 11's base
directory variable), then the ``geant4_data`` folder of the installed ``opengate_core`` (where
opengate downloads them). A folder counts only if its checked file exists and is not empty,
so an interrupted download or an empty directory is reported as missing.

opengate's own import-time check downloads all twelve Geant4 data sets when any is missing
(retrying for about 40 s offline, then raising). :func:`prepare_geant4_environment` runs
first, fails within milliseconds with a message naming what is missing and how to get it,
and on success exports the three variables and sets ``GATEONRTD=1``, the switch that makes
``opengate_core`` skip that check (the data are already located).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Geant4 release bundled with the pinned opengate (10.1.1) and the folder versions it expects.
GEANT4_VERSION = "11.4"
DATA_URL = "https://cern.ch/geant4-data/datasets/"


@dataclass(frozen=True)
class DataSet:
    """One Geant4 data set: its variable, folder name, archive and a file that proves it."""

    variable: str
    folder: str
    archive: str
    check_glob: str

    def is_complete(self, path: Path) -> bool:
        """True if ``path`` holds a non-empty file matching :attr:`check_glob`."""
        if not path.is_dir():
            return False
        return any(p.is_file() and p.stat().st_size > 0 for p in path.glob(self.check_glob))


REQUIRED: tuple[DataSet, ...] = (
    DataSet("G4LEDATA", "G4EMLOW8.8", "G4EMLOW.8.8.tar.gz",
            "livermore/phot_epics2014/pe-cs-8.dat"),
    DataSet("G4LEVELGAMMADATA", "PhotonEvaporation6.1.2", "G4PhotonEvaporation.6.1.2.tar.gz",
            "z*.a*"),
    DataSet("G4ENSDFSTATEDATA", "G4ENSDFSTATE3.0", "G4ENSDFSTATE.3.0.tar.gz", "ENSDFSTATE.dat"),
)


class Geant4DataError(RuntimeError):
    """The Geant4 data sets needed by the GATE engines are missing or incomplete."""


def opengate_data_folder() -> Path | None:
    """``opengate_core``'s data folder, found without importing the package (None if absent)."""
    spec = importlib.util.find_spec("opengate_core")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "geant4_data"


def _family(folder: str) -> str:
    """Folder name without its version (``G4EMLOW8.8`` -> ``G4EMLOW``)."""
    return folder.rstrip("0123456789.")


def candidates(data_set: DataSet, environ: dict[str, str],
               search_opengate: bool = True) -> list[Path]:
    """Folders to try for one data set, most specific first."""
    found: list[Path] = []
    if environ.get(data_set.variable):
        found.append(Path(environ[data_set.variable]))
    bases = [Path(environ["GEANT4_DATA_DIR"])] if environ.get("GEANT4_DATA_DIR") else []
    opengate_folder = opengate_data_folder() if search_opengate else None
    if opengate_folder is not None:
        bases.append(opengate_folder)
    for base in bases:
        found.append(base / data_set.folder)
        # Other versions of the same data set (a newer or older Geant4 install).
        found += sorted((p for p in base.glob(_family(data_set.folder) + "*")
                         if p.name != data_set.folder), reverse=True)
    return found


def locate_geant4_data(environ: dict[str, str] | None = None,
                       search_opengate: bool = True) -> dict[str, Path]:
    """Locate the required data sets.

    Parameters
    ----------
    environ : dict, optional
        Environment to read (``os.environ`` by default).
    search_opengate : bool
        Also look in ``opengate_core``'s own data folder.

    Returns
    -------
    dict
        Environment variable -> data folder, for every data set of :data:`REQUIRED`.

    Raises
    ------
    Geant4DataError
        Naming every missing data set, the places searched and how to obtain them.
    """
    environ = dict(os.environ if environ is None else environ)
    located: dict[str, Path] = {}
    missing: list[str] = []
    for data_set in REQUIRED:
        tried = candidates(data_set, environ, search_opengate)
        hit = next((p for p in tried if data_set.is_complete(p)), None)
        if hit is None:
            where = ", ".join(str(p) for p in tried) or "nowhere (no location configured)"
            missing.append(f"  - {data_set.folder} ({data_set.variable}; needs a non-empty "
                           f"{data_set.check_glob}); looked in: {where}")
            continue
        if hit.name != data_set.folder:
            log.warning("using %s for %s; opengate %s expects %s", hit, data_set.variable,
                        GEANT4_VERSION, data_set.folder)
        located[data_set.variable] = hit
    if missing:
        target = opengate_data_folder() or Path("<site-packages>/opengate_core/geant4_data")
        raise Geant4DataError(
            "the opengate engine needs Geant4 data sets that are missing or incomplete:\n"
            + "\n".join(missing)
            + "\nTo get them, either\n"
            f"  * on a machine with internet, run `python -c \"import opengate\"` once: opengate "
            f"downloads them into {target} (copy that folder to this machine), or\n"
            f"  * download {', '.join(d.archive for d in REQUIRED)} from {DATA_URL}, unpack them "
            "into one folder and set GEANT4_DATA_DIR to it, or\n"
            "  * point G4LEDATA, G4LEVELGAMMADATA and G4ENSDFSTATEDATA at an existing Geant4 "
            f"{GEANT4_VERSION} data installation (source its geant4.sh).\n"
            "Or use engine: fast, which needs no external data."
        )
    return located


def prepare_geant4_environment(environ: dict[str, str] | None = None) -> dict[str, Path]:
    """Locate the data sets, export their variables and disable opengate's download.

    Call before ``import opengate``. Child processes (opengate's ``start_new_process``)
    inherit the variables.

    Returns
    -------
    dict
        Environment variable -> data folder.

    Raises
    ------
    Geant4DataError
        See :func:`locate_geant4_data`.
    """
    located = locate_geant4_data(environ)
    for variable, path in located.items():
        os.environ[variable] = str(path)
    os.environ["GATEONRTD"] = "1"
    return located
