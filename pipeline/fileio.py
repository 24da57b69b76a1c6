"""File conventions shared by every stage: atomic writes and provenance attributes.

Every output is written under a temporary name in its own folder and renamed into place only
when complete (``os.replace`` is atomic on one file system), so an interrupted job never leaves
a file that looks complete. Existing files are not overwritten unless the caller asks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.interrupts import deferred_stop, raise_if_stopped
from pipeline.specs import canonical_json, config_sha256

#: Packages whose versions go into ``package_versions``.
_PROVENANCE_PACKAGES = (
    "positron-nde", "numpy", "scipy", "h5py", "xraylib", "torch", "scikit-image", "snakemake",
)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The rename happens only if no stop signal has arrived (:mod:`pipeline.interrupts`), and
    a signal during it waits until it is done, so a stopped command never commits an output
    it did not finish nor leaves one half renamed. A writer that fails on a full disk, in
    whatever words its library uses (torch's "unexpected pos", h5py's "can't write data"),
    gives an ``OSError`` (ENOSPC) naming ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (nothing is written).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    raise_if_stopped()
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            yield tmp
            with deferred_stop():
                raise_if_stopped()
                os.replace(tmp, path)
        except Exception as exc:
            error = _write_error(exc, path, path.parent)
            if error is exc:
                raise
            raise error from None
    finally:
        with deferred_stop():
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_output_set(paths: list[str | Path], overwrite: bool = False) -> Iterator[Path]:
    """Write several outputs as one: yield a hidden staging folder beside them, in which
    the caller writes each output under its own file name; they are moved into place only
    when the block succeeds and no stop signal has arrived (all of them: a signal during
    the moves waits until they are done), so a failed, stopped or killed job never leaves
    some of them looking complete without the others. Stale staging folders of dead
    processes are removed."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    raise_if_stopped()
    parent = paths[0].parent
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f".{paths[0].name}.*.staging"):
        pid = old.name[len(paths[0].name) + 2 : -len(".staging")]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    staging = parent / f".{paths[0].name}.{os.getpid()}.staging"
    staging.mkdir(exist_ok=True)
    try:
        try:
            yield staging
            missing = [p.name for p in paths if not (staging / p.name).is_file()]
            if missing:
                raise RuntimeError(f"{staging}: output(s) {', '.join(missing)} were not "
                                   "written")
            with deferred_stop():
                raise_if_stopped()
                for path in paths:
                    os.replace(staging / path.name, path)
        except Exception as exc:
            error = _write_error(exc, parent, parent)
            if isinstance(error, OSError) and error.filename is not None:
                # An output written in the staging folder is named where it was to go.
                named = Path(error.filename)
                if named.parent == staging:
                    error = OSError(error.errno, error.strerror, str(parent / named.name))
            if error is exc:
                raise
            raise error from None
    finally:
        with deferred_stop():
            shutil.rmtree(staging, ignore_errors=True)


def _write_error(exc: Exception, target: Path, folder: Path) -> Exception:
    """The exception a failed write of ``target`` raises: an ``OSError`` naming ``target``
    when the disk is full (whatever the writer raised) or the writer's ``OSError`` named
    neither file nor cause (h5py, numpy); else ``exc`` itself."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return exc  # already says which file (an inner atomic write, the OS itself)
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
            or _disk_full(folder))
    if full or isinstance(exc, OSError) and exc.filename is None:
        detail = " ".join(str(exc.strerror if isinstance(exc, OSError) and exc.strerror
                              else exc or type(exc).__name__).split())
        detail = detail if len(detail) <= 120 else detail[:117] + "..."
        if full:  # a library's own words for it ("unexpected pos") would only confuse
            return OSError(errno.ENOSPC, "no space left on the device" + (
                f" ({detail})" if isinstance(exc, OSError) else ""), str(target))
        return OSError(getattr(exc, "errno", None), f"cannot write ({detail})", str(target))
    return exc


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


@contextlib.contextmanager
def scratch_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty scratch folder next to ``path`` (``.{name}.{pid}.scratch``), removed on
    exit; one left by a killed process is removed by :func:`remove_stale_temporaries`."""
    path = Path(path)
    folder = path.with_name(f".{path.name}.{os.getpid()}.scratch")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        with deferred_stop():
            shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files and scratch folders of earlier writes of ``path`` whose
    process is gone (a job killed with SIGKILL, a node that went down); returns what was
    removed. Those of a live process (another job writing the same output) are left alone."""
    path = Path(path)
    removed = []
    for suffix in (".tmp", ".scratch"):
        for tmp in path.parent.glob(f".{path.name}.*{suffix}"):
            pid = tmp.name[len(path.name) + 2 : -len(suffix)]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            try:
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(path: str | Path, overwrite: bool = False, folder: bool = False) -> None:
    """Before any work: the output ``path`` (a file, or a ``folder``) can be written.

    Creates the folder if needed and writes and removes a probe file in it, which is the
    only test that holds for every cause (a read-only file system, a path through a regular
    file, a full disk, permissions, and root on any of those).

    Raises
    ------
    FileExistsError
        If the file ``path`` exists and ``overwrite`` is False.
    OSError
        With ``filename`` the folder and ``strerror`` what is wrong.
    """
    path = Path(path)
    if not folder and path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    where = path if folder else path.parent
    blocking = next((p for p in (where, *where.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise NotADirectoryError(20, "a file where the output folder should be", str(blocking))
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the output folder ({exc.strerror})",
                      str(where)) from None
    try:
        handle, probe = tempfile.mkstemp(dir=where, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write in the output folder ({exc.strerror})",
                      str(where)) from None


def open_hdf5(path: str | Path, what: str):
    """Open an HDF5 file for reading; a missing or unreadable file gives one clear error.

    Parameters
    ----------
    path : path-like
    what : str
        What the file should be, for the message (``"phantom file"``).
    """
    import h5py  # the config-only code paths do not need it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from None


def decoded_attrs(node) -> dict[str, Any]:
    """Attributes of an HDF5 file or group, byte strings decoded."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items()}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the outputs."""
    versions = {}
    for name in _PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance_attrs(section: Any, params: dict[str, Any], seed: int | None = None) -> dict:
    """Provenance attributes of DESIGN.md: ``config_sha256`` (of the resolved config section
    the stage used), ``created_utc``, ``package_versions`` (JSON), ``seed`` when random, and
    the stage's own parameters as JSON (``params``)."""
    attrs = {
        "config_sha256": config_sha256(section),
        "config": canonical_json(section),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_versions": json.dumps(package_versions(), sort_keys=True),
        "params": json.dumps(params, sort_keys=True),
    }
    if seed is not None:
        attrs["seed"] = int(seed)
    return attrs
