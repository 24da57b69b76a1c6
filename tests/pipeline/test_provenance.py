"""The provenance check: the first field two records disagree on is named with both sides
and both values; what either side does not record is not compared."""

from __future__ import annotations

import pytest

from pipeline.provenance import PHANTOM_FIELDS, Origin, check_same_origin

LISTMODE = Origin("list-mode file a.h5", {
    "phantom": "tube_0001", "dataset": "tubes",
    "phantom_grid": {"shape": [4, 8, 8], "voxel_size_mm": [2.0, 1.0, 1.0],
                     "origin_mm": [-3.0, -3.5, -3.5]},
    "scanner": {"rings": 64, "crystal_pitch_mm": 4.0, "name": "ring"}})


@pytest.mark.parametrize("theirs, fields, expected", [
    ({"phantom": "tube_0003"}, None, "records phantom 'tube_0001', but phantom file b.h5 "
                                     "records 'tube_0003'"),
    ({"phantom": "tube_0001", "dataset": "parts"}, None,
     "records dataset 'tubes', but phantom file b.h5 records 'parts'"),
    ({"phantom_grid": {"shape": [4, 8, 8], "voxel_size_mm": [2.0, 2.0, 2.0]}}, None,
     "records phantom grid voxel_size_mm [2.0, 1.0, 1.0], but phantom file b.h5 records "
     "[2.0, 2.0, 2.0]"),
    ({"phantom_grid": {"shape": [4, 8]}}, None,
     "records phantom grid shape [4, 8, 8], but phantom file b.h5 records [4, 8]"),
    ({"scanner": {"rings": 32}}, ["scanner"],
     "records scanner geometry rings 64, but phantom file b.h5 records 32"),
    ({"scanner": {"rings": 64, "name": "other"}}, ["scanner"],
     "records scanner geometry name 'ring', but phantom file b.h5 records 'other'"),
])
def test_the_first_disagreement_is_named_with_both_files(theirs, fields, expected):
    with pytest.raises(ValueError) as info:
        check_same_origin(LISTMODE, Origin("phantom file b.h5", theirs), fields,
                          advice="give the right file")
    assert str(info.value) == f"list-mode file a.h5 {expected}; give the right file"


@pytest.mark.parametrize("theirs, fields", [
    ({}, None),  # a file that records nothing (made outside the pipeline)
    ({"phantom": None, "dataset": None}, None),  # recorded as unknown
    ({"phantom": "tube_0001"}, None),  # the rest not recorded
    ({"phantom": "tube_0003", "dataset": "tubes"}, ["dataset"]),  # phantom not asked for
    ({"phantom_grid": {"voxel_size_mm": [2.0, 1.0 + 1e-9, 1.0]}}, PHANTOM_FIELDS),  # float
    ({"scanner": {"rings": 64.0, "crystal_pitch_mm": 4.0000001}}, ["scanner"]),
    ({"scanner": {"rings": 64, "depth_mm": 20.0}}, ["scanner"]),  # keys of one side only
])
def test_agreeing_or_unrecorded_fields_pass(theirs, fields):
    check_same_origin(LISTMODE, Origin("phantom file b.h5", theirs), fields)
