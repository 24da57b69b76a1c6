"""exact_cast: a stored column becomes the contract's type only when no value changes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.values import exact_cast


@pytest.mark.parametrize("stored, dtype, expected", [
    (np.array([12.0, -3.0, 0.0]), np.int32, [12, -3, 0]),  # whole floats are the integers
    (np.array([2.0**62]), np.int64, [2**62]),
    (np.array([-(2.0**31)]), np.int32, [-(2**31)]),
    (np.array([True, False]), np.uint8, [1, 0]),
    (np.array([255], np.int64), np.uint8, [255]),
    (np.array([7], np.uint64), np.int32, [7]),
    (np.array([1.5, np.nan, np.inf], np.float64), np.float32, [1.5, np.nan, np.inf]),
    (np.array([3], np.int16), np.float64, [3.0]),
])
def test_values_that_survive_the_cast_are_accepted(stored, dtype, expected):
    out = exact_cast("f.h5", "column c", stored, dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, np.asarray(expected, dtype=dtype))


@pytest.mark.parametrize("stored, dtype, expected", [
    (np.array([1.0, 2.5]), np.int32, "is stored as float64 with 1 non-integer value(s) (first "
                                     "2.5 at index 1); it must hold int32 integers"),
    (np.array([[1.0, np.nan]]), np.int64, "with 1 NaN or infinite value(s) (first at index "
                                          "(0, 1))"),
    (np.array([2.0**63]), np.int64, "outside the range of int64"),  # float(2**63 - 1) == 2**63
    (np.array([2.0**31]), np.int32, "outside the range of int32 [-2147483648, 2147483647] "
                                    "(first 2147483648.0 at index 0, stored as float64)"),
    (np.array([2**64 - 1], np.uint64), np.int64, "first 18446744073709551615 at index 0"),
    (np.array([-1]), np.uint8, "outside the range of uint8 [0, 255] (first -1"),
    (np.array([3e38 * 10.0]), np.float32, "beyond the range of float32"),
    (np.array(["12"]), np.int32, "is stored as <U2 (strings); it must hold int32 values"),
    (np.array([1 + 1j]), np.float32, "is stored as complex128 (complex numbers)"),
])
def test_values_a_cast_would_change_are_refused_naming_the_field(stored, dtype, expected):
    with pytest.raises(ValueError) as info:
        exact_cast("f.h5", "column c", stored, dtype)
    assert str(info.value).startswith("f.h5: column c ") and expected in str(info.value)
