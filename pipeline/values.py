"""Checks of numbers read from files at a stage's boundary: finite, in range, of the right
kind, JSON that decodes. Every reader uses these, so a NaN, an infinity or an impossible
value is refused where it enters, with one message naming the file, the field and what is
wrong (never a downstream hang or a NaN image).

Each function raises ``ValueError("{where}: {field} ...")``; ``where`` is the file (and
group) as the reader names it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def finite(where: str, field: str, values: Any) -> np.ndarray:
    """``values`` as an array, refused when any entry is NaN or infinite."""
    array = np.asarray(values)
    if array.dtype.kind in "fc":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            at = first[0] if len(first) == 1 else first
            raise ValueError(f"{where}: {field} has {int(bad.sum())} NaN or infinite value(s) "
                             f"(first at index {at})")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{where}: {field} must be numeric, got dtype {array.dtype}")
    return array


def in_range(where: str, field: str, values: Any, minimum: float | None = None,
             maximum: float | None = None, exclusive_minimum: bool = False,
             unit: str = "") -> np.ndarray:
    """``values`` (finite) with every entry ``>= minimum`` (``>`` when exclusive) and
    ``<= maximum``."""
    array = finite(where, field, values)
    if array.size == 0:
        return array
    suffix = f" {unit}" if unit else ""
    low = float(array.min())
    if minimum is not None and (low <= minimum if exclusive_minimum else low < minimum):
        relation = "above" if exclusive_minimum else "at least"
        raise ValueError(f"{where}: {field} must be {relation} {minimum:g}{suffix}, found "
                         f"{low:g}{suffix}")
    high = float(array.max())
    if maximum is not None and high > maximum:
        raise ValueError(f"{where}: {field} must be at most {maximum:g}{suffix}, found "
                         f"{high:g}{suffix}")
    return array


def float_array(where: str, field: str, values: Any) -> np.ndarray:
    """A floating-point array (an integer array of a physical quantity is a wrong file, not
    a value to round: a uint8 attenuation map silently loses every attenuation)."""
    array = np.asarray(values)
    if array.dtype.kind != "f":
        raise ValueError(f"{where}: {field} must hold floating-point values, got dtype "
                         f"{array.dtype}")
    return finite(where, field, array)


def vector(where: str, field: str, values: Any, length: int, positive: bool = False,
           unit: str = "") -> np.ndarray:
    """A float vector of ``length`` finite entries (each above 0 when ``positive``)."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {field} must be {length} numbers, got {values!r}") from None
    if array.size != length:
        raise ValueError(f"{where}: {field} must be {length} numbers, got {array.size}")
    if positive:
        return in_range(where, field, array, 0.0, exclusive_minimum=True, unit=unit)
    return finite(where, field, array)


def json_field(where: str, field: str, text: Any) -> Any:
    """Decode a JSON attribute; NaN and infinity are refused (they are not JSON)."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{where}: {field} holds {constant}, not a number")
    try:
        return json.loads(text, parse_constant=refuse)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: {field} is not valid JSON ({exc})") from None
