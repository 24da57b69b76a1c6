"""Cross-checks of what combined files record about where they came from.

Every stage's outputs record their origin in attributes: the phantom's name and dataset, the
phantom's grid and ``config_sha256``, the scanner geometry, the acquisition (the writers of
:mod:`sim.phantoms.file`, :mod:`sim.listmode.file` and :mod:`recon.image_io` say which).
Where a stage combines files (a list-mode file with a phantom file, a reconstruction with a
phantom, two list-mode files, a phantom file with the job's spec), each side's record is an
:class:`Origin` and :func:`check_same_origin` refuses the first field on which they disagree,
naming both files and both values.

A field that either side does not record (an older file, data imported from a ROOT file,
a phantom made outside the pipeline) is skipped for that field, not refused: the check can
only tell that two records disagree, not that one is missing. Within a mapping (a scanner
geometry, a grid) the same holds key by key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: How a field reads in a message.
FIELD_NAMES = {
    "phantom": "phantom",
    "dataset": "dataset",
    "acquisition": "acquisition",
    "phantom_grid": "phantom grid",
    "phantom_config_sha256": "phantom config_sha256",
    "scanner": "scanner geometry",
}
#: The fields that say which phantom a file is, or was made from.
PHANTOM_FIELDS = ("phantom", "dataset", "phantom_grid", "phantom_config_sha256")
#: Relative tolerance of numbers (a float32 attribute against a float64 one).
RTOL = 1e-6


@dataclass(frozen=True)
class Origin:
    """What one side of a combination records.

    Attributes
    ----------
    label : str
        The side as a message names it: ``"list-mode file results/t/listmode/a/short.h5"``,
        or ``"the job's spec (--dataset/--phantom)"``.
    fields : mapping
        Recorded values by field (see :data:`FIELD_NAMES`); None or absent when the side
        does not record it.
    """

    label: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def _difference(a: Any, b: Any) -> tuple[str, Any, Any] | None:
    """The first place two recorded values differ: (sub-key path, value in a, value in b),
    or None when they agree (numbers to :data:`RTOL`; keys recorded by one side only are
    skipped)."""
    if a is None or b is None:
        return None
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in a:
            if key in b:
                found = _difference(a[key], b[key])
                if found is not None:
                    path, x, y = found
                    return (f"{key}.{path}" if path else str(key)), x, y
        return None
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        same = math.isclose(float(a), float(b), rel_tol=RTOL, abs_tol=1e-9)
        return None if same else ("", a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b) or any(_difference(x, y) is not None for x, y in zip(a, b,
                                                                                 strict=False)):
            return "", list(a), list(b)
        return None
    return None if a == b else ("", a, b)


def check_same_origin(first: Origin, second: Origin, fields: Iterable[str] | None = None,
                      advice: str = "") -> None:
    """Refuse two records that disagree on a field both hold.

    Parameters
    ----------
    first, second : Origin
    fields : iterable of str, optional
        Fields compared, in this order (the first disagreement is reported); default every
        field of :data:`FIELD_NAMES`.
    advice : str
        What to do, appended to the message (``"give the phantom file it was simulated
        from"``).

    Raises
    ------
    ValueError
        ``"{first.label} records {field} {value}, but {second.label} records {value}"``.
    """
    for name in (FIELD_NAMES if fields is None else fields):
        found = _difference(first.fields.get(name), second.fields.get(name))
        if found is None:
            continue
        path, a, b = found
        what = FIELD_NAMES.get(name, name) + (f" {path}" if path else "")
        tail = f"; {advice}" if advice else ""
        raise ValueError(f"{first.label} records {what} {a!r}, but {second.label} records "
                         f"{b!r}{tail}")
