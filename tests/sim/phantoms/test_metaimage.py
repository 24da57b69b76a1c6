"""MetaImage writer: header conventions and byte layout checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sim.phantoms.metaimage import read_mhd, write_mhd


def test_header_and_layout(tmp_path):
    nz, ny, nx = 3, 4, 5
    image = np.arange(nz * ny * nx, dtype=np.float32).reshape(nz, ny, nx)
    header, raw = write_mhd(tmp_path / "a.mhd", image, (2.0, 1.5, 1.0), (-2.0, -2.25, -2.0))
    fields = dict(line.split(" = ") for line in header.read_text().splitlines())
    assert fields["DimSize"] == "5 4 3"  # x y z
    assert fields["ElementSpacing"] == "1 1.5 2"
    assert fields["Offset"] == "-2 -2.25 -2"
    assert fields["ElementType"] == "MET_FLOAT"
    assert fields["ElementDataFile"] == "a.raw"
    data = np.fromfile(raw, dtype="<f4")
    # x runs fastest: element (z=1, y=0, x=0) sits after one full xy plane.
    assert data[nx * ny] == image[1, 0, 0] and data[1] == image[0, 0, 1]
    back, spacing, origin = read_mhd(header)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(spacing, [2.0, 1.5, 1.0])
    np.testing.assert_array_equal(origin, [-2.0, -2.25, -2.0])


def test_refuses_overwrite_and_bad_input(tmp_path):
    image = np.zeros((2, 2, 2), np.uint8)
    write_mhd(tmp_path / "b.mhd", image, (1, 1, 1), (0, 0, 0))
    with pytest.raises(FileExistsError, match="b.raw exists"):
        write_mhd(tmp_path / "b.mhd", image, (1, 1, 1), (0, 0, 0))
    with pytest.raises(ValueError, match="3-D array"):
        write_mhd(tmp_path / "c.mhd", np.zeros((2, 2), np.uint8), (1, 1, 1), (0, 0, 0))
    (tmp_path / "b.raw").write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="raw file holds 3 values"):
        read_mhd(tmp_path / "b.mhd")
