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


def _first_index(bad: np.ndarray) -> int | tuple[int, ...]:
    """Index of the first True of ``bad`` (an int for 1-D arrays)."""
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return first[0] if len(first) == 1 else first


def finite(where: str, field: str, values: Any) -> np.ndarray:
    """``values`` as an array, refused when any entry is NaN or infinite."""
    array = np.asarray(values)
    if array.dtype.kind in "fc":
        bad = ~np.isfinite(array)
        if bad.any():
            at = _first_index(bad)
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


def exact_cast(where: str, field: str, values: Any, dtype: Any) -> np.ndarray:
    """``values`` cast to ``dtype``, refused when the cast would change a value.

    A stored column whose type differs from the contract's is read when every value
    survives the cast, and refused otherwise (never truncated, wrapped or rounded to an
    integer in silence):

    * integer ``dtype``: integers and booleans within its range are accepted, and floats
      that are whole numbers within its range (``12.0`` is the integer 12, as a tool that
      stores every column as float writes it); a fraction, NaN, infinity or a value
      outside the range is refused;
    * floating ``dtype``: integers and floats are accepted; a finite value beyond the
      type's largest (which would become infinite) is refused. Rounding to the type's
      precision is not a loss here (a float64 position read as float32 keeps ~7 digits,
      far below a micrometre). NaN and infinity pass through unchanged: whether they are
      allowed is the reader's call (:func:`finite`);
    * anything else stored (strings, complex numbers, compound records) is refused.

    Raises
    ------
    ValueError
        ``"{where}: {field} ..."`` naming the stored type, what is wrong and the first
        offending entry.
    """
    array = np.asarray(values)
    target = np.dtype(dtype)
    stored = array.dtype
    if stored.kind not in "biuf":
        what = {"S": "strings", "U": "strings", "O": "strings or objects",
                "c": "complex numbers", "V": "records"}.get(stored.kind, "not numbers")
        raise ValueError(f"{where}: {field} is stored as {stored} ({what}); it must hold "
                         f"{target} values")
    if np.can_cast(stored, target, casting="safe"):  # no value can change (int16 -> int32)
        return array.astype(target, copy=False)
    if target.kind in "iu":
        info = np.iinfo(target)
        if stored.kind == "f":
            finite = np.isfinite(array)
            if not finite.all():
                raise ValueError(f"{where}: {field} is stored as {stored} with "
                                 f"{int((~finite).sum())} NaN or infinite value(s) (first at "
                                 f"index {_first_index(~finite)}); it must hold {target} "
                                 "integers")
            fraction = array != np.trunc(array)
            if fraction.any():
                at = _first_index(fraction)
                raise ValueError(f"{where}: {field} is stored as {stored} with "
                                 f"{int(fraction.sum())} non-integer value(s) (first "
                                 f"{array[at].item()!r} at index {at}); it must hold {target} "
                                 "integers")
        if array.size and stored.kind != "b":
            # Whole floats are compared with the first value above the range (float(2**63 - 1)
            # rounds up to 2**63), integers exactly (a uint64 above the int64 range must not
            # wrap before the comparison).
            if stored.kind == "f":
                outside = (array < float(info.min)) | (array >= float(info.max) + 1.0)
            else:
                outside = (array < info.min) | (array > info.max)
            if outside.any():
                at = _first_index(outside)
                raise ValueError(f"{where}: {field} has {int(outside.sum())} value(s) outside "
                                 f"the range of {target} [{info.min}, {info.max}] (first "
                                 f"{array[at].item()!r} at index {at}, stored as {stored})")
    elif target.kind == "f":
        if stored.kind == "f" and stored.itemsize > target.itemsize and array.size:
            largest = float(np.finfo(target).max)
            overflow = np.isfinite(array) & (np.abs(array) > largest)
            if overflow.any():
                at = _first_index(overflow)
                raise ValueError(f"{where}: {field} has {int(overflow.sum())} value(s) beyond "
                                 f"the range of {target} (first {array[at].item()!r} at index "
                                 f"{at}, stored as {stored})")
    else:
        raise TypeError(f"exact_cast: unsupported target type {target}")
    return array.astype(target, copy=False)


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
