"""The calibrated detector response on disk: ``calibration/response.h5``.

Datasets ``sent`` (per cell), ``start`` (per cell + 1), and the detected photons'
``d_index``, ``d_ring``, ``deposited_kev``, ``offset_mm`` (n, 3) and ``delay_ns``
(:class:`.response.DetectorResponse`); attributes ``scanner`` and ``digitizer`` (JSON: the
identity of what was calibrated), ``bins`` (JSON), ``photons_per_cell``, ``seed``,
``engine_version`` and the provenance attributes of :func:`pipeline.fileio.provenance_attrs`.

A file is used only for the scanner and digitizer it was made with: another geometry,
crystal material, energy resolution or window, or time resolution is refused, naming the
file and the fields that differ.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.fileio import atomic_output, decoded_attrs, open_hdf5
from sim.engines.embedded.digitizer import DigitizerSettings
from sim.engines.embedded.engine import ENGINE_VERSION
from sim.engines.statistical.response import DetectorResponse, ResponseBins, n_cells
from sim.scanner.geometry import Scanner

_ARRAYS = ("sent", "start", "d_index", "d_ring", "deposited_kev", "offset_mm", "delay_ns")


def _digitizer_dict(digitizer: DigitizerSettings) -> dict[str, Any]:
    d = asdict(digitizer)
    d["energy_window_kev"] = list(d["energy_window_kev"])
    return d


def write_response(path: str | Path, response: DetectorResponse, attrs: dict[str, Any],
                   overwrite: bool = False) -> None:
    """Write ``response`` with ``attrs`` (provenance, seed, photons per cell)."""
    with atomic_output(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        # Uncompressed: every statistical job reads it whole (gzip made that 1 s of 1.1).
        for name in _ARRAYS:
            f.create_dataset(name, data=getattr(response, name))
        f.attrs.update(attrs)
        f.attrs["scanner"] = json.dumps(response.scanner.to_dict(), sort_keys=True)
        f.attrs["digitizer"] = json.dumps(_digitizer_dict(response.digitizer), sort_keys=True)
        f.attrs["bins"] = json.dumps(asdict(response.bins), sort_keys=True)
        f.attrs["engine_version"] = ENGINE_VERSION


def read_response(path: str | Path, scanner: Scanner,
                  digitizer: DigitizerSettings) -> DetectorResponse:
    """Read a response file made for ``scanner`` and ``digitizer``.

    Raises
    ------
    ValueError
        Naming the file and what is wrong: another scanner or digitizer (the fields that
        differ, with both values), missing or malformed datasets or attributes.
    """
    with open_hdf5(path, "detector response file") as f:
        attrs = decoded_attrs(f)
        missing = [k for k in ("scanner", "digitizer", "bins") if k not in attrs]
        missing += [k for k in _ARRAYS if k not in f]
        if "deposited_kev" in missing and "energy_kev" in f:
            raise ValueError(f"{path}: made by an older version (blurred energies and "
                             "times); recalibrate with `python -m sim calibrate-response`")
        if missing:
            raise ValueError(f"{path}: not a detector response file (missing "
                             f"{', '.join(missing)}); make one with `python -m sim "
                             "calibrate-response`")
        try:
            stored = {k: json.loads(attrs[k]) for k in ("scanner", "digitizer", "bins")}
        except (TypeError, ValueError):
            raise ValueError(f"{path}: attributes scanner, digitizer and bins must be "
                             "JSON") from None
        differences = _differences("scanner", stored["scanner"], scanner.to_dict())
        differences += _differences("digitizer", stored["digitizer"],
                                    _digitizer_dict(digitizer))
        if differences:
            raise ValueError(f"{path}: calibrated for another detector ("
                             + "; ".join(differences) + "); calibrate this one with "
                             "`python -m sim calibrate-response`")
        try:
            bins = ResponseBins(**stored["bins"])
        except TypeError as exc:
            raise ValueError(f"{path}: attribute bins: {exc}") from None
        arrays = {k: f[k][...] for k in _ARRAYS}
    cells = n_cells(scanner, bins)
    problems = []
    if arrays["sent"].shape != (cells,) or arrays["start"].shape != (cells + 1,):
        problems.append(f"sent/start have shapes {arrays['sent'].shape}/"
                        f"{arrays['start'].shape}, the bins need ({cells},)/({cells + 1},)")
    n = arrays["d_index"].shape[0]
    if any(arrays[k].shape[0] != n for k in _ARRAYS[2:]) or arrays["offset_mm"].shape != (n, 3):
        problems.append("the outcome datasets do not have one row per detected photon")
    elif arrays["start"].size and (arrays["start"][0] != 0 or arrays["start"][-1] != n
                                   or np.any(np.diff(arrays["start"]) < 0)):
        problems.append("start does not index the outcomes")
    if not all(np.all(np.isfinite(arrays[k])) for k in ("deposited_kev", "offset_mm", "delay_ns")):
        problems.append("NaN or infinite outcomes")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return DetectorResponse(scanner, digitizer, bins, arrays["sent"].astype(np.int64),
                            arrays["start"].astype(np.int64), arrays["d_index"],
                            arrays["d_ring"], arrays["deposited_kev"], arrays["offset_mm"],
                            arrays["delay_ns"])


def _differences(what: str, stored: dict, wanted: dict) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [f"{what}.{k}: file {stored.get(k)!r}, config {wanted.get(k)!r}"
            for k in keys if stored.get(k) != wanted.get(k)]
