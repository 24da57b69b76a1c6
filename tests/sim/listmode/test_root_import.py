"""ROOT import: files written with uproot in GATE 9's and opengate's coincidence schemas
convert to list-mode with the right units and crystal ids; damaged files give one clear error.

The expected ids are computed here from the GATE hierarchy written out by hand
(rsector = transaxial index // 8, module = ring // 8, crystal = j + 8 k), not with the
converter's own mapping.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from sim.listmode.file import read_listmode
from sim.listmode.root_import import OPENGATE_COMPTON, OPENGATE_RAYLEIGH, import_root
from sim.scanner.geometry import Scanner

SCANNER = Scanner()


def _events(n: int, seed: int) -> dict:
    """Random coincidences between crystals at least 2 modules apart, with truth."""
    rng = np.random.default_rng(seed)
    ring = rng.integers(0, 64, (n, 2))
    index1 = rng.integers(0, 184, n)
    index2 = (index1 + rng.integers(40, 144, n)) % 184  # 5..18 modules away
    index = np.stack([index1, index2], axis=1)
    event = rng.integers(0, 10**6, (n, 2))
    same = rng.random(n) < 0.7
    event[same, 1] = event[same, 0]
    return {
        "ring": ring, "index": index, "event": event,
        "time_s": np.sort(rng.uniform(0, 0.1, n))[:, None] + rng.normal(0, 1e-9, (n, 2)),
        "energy_mev": rng.uniform(0.35, 0.65, (n, 2)),
        "source_mm": rng.uniform(-40, 40, (n, 3)),
        "compton": rng.integers(0, 3, (n, 2)) * (rng.random((n, 2)) < 0.3),
        "rayleigh": (rng.random((n, 2)) < 0.05).astype(int),
    }


def _gate9_branches(ev: dict) -> dict:
    out = {}
    ids = ev["ring"] * 184 + ev["index"]
    pos = SCANNER.crystal_centres_mm(ids)
    for n in (1, 2):
        k = n - 1
        j, kz = ev["index"][:, k] % 8, ev["ring"][:, k] % 8
        out |= {
            f"eventID{n}": ev["event"][:, k].astype(np.int32),
            f"time{n}": ev["time_s"][:, k],
            f"energy{n}": ev["energy_mev"][:, k].astype(np.float32),
            f"globalPosX{n}": pos[:, k, 0].astype(np.float32),
            f"globalPosY{n}": pos[:, k, 1].astype(np.float32),
            f"globalPosZ{n}": pos[:, k, 2].astype(np.float32),
            f"sourcePosX{n}": ev["source_mm"][:, 0].astype(np.float32),
            f"sourcePosY{n}": ev["source_mm"][:, 1].astype(np.float32),
            f"sourcePosZ{n}": ev["source_mm"][:, 2].astype(np.float32),
            f"rsectorID{n}": (ev["index"][:, k] // 8).astype(np.int32),
            f"moduleID{n}": (ev["ring"][:, k] // 8).astype(np.int32),
            f"submoduleID{n}": np.zeros(len(j), np.int32),
            f"crystalID{n}": (j + 8 * kz).astype(np.int32),
            f"layerID{n}": np.zeros(len(j), np.int32),
            f"comptonPhantom{n}": ev["compton"][:, k].astype(np.int32),
            f"RayleighPhantom{n}": ev["rayleigh"][:, k].astype(np.int32),
        }
    return out


def _opengate_branches(ev: dict) -> dict:
    out = {}
    ids = ev["ring"] * 184 + ev["index"]
    pos = SCANNER.crystal_centres_mm(ids)
    for n in (1, 2):
        k = n - 1
        out |= {
            f"EventID{n}": ev["event"][:, k].astype(np.int64),
            f"GlobalTime{n}": ev["time_s"][:, k] * 1e9,  # Geant4 internal unit: ns
            f"TotalEnergyDeposit{n}": ev["energy_mev"][:, k],
            f"PostPosition{n}_X": pos[:, k, 0], f"PostPosition{n}_Y": pos[:, k, 1],
            f"PostPosition{n}_Z": pos[:, k, 2],
            f"EventPosition{n}_X": ev["source_mm"][:, 0],
            f"EventPosition{n}_Y": ev["source_mm"][:, 1],
            f"EventPosition{n}_Z": ev["source_mm"][:, 2],
            f"{OPENGATE_COMPTON}{n}": ev["compton"][:, k].astype(np.int32),
            f"{OPENGATE_RAYLEIGH}{n}": ev["rayleigh"][:, k].astype(np.int32),
            f"PreStepUniqueVolumeID{n}": np.zeros(len(ids), np.int32),
        }
    return out


ATTRS = {"engine": "gate9", "engine_version": "9.4", "primaries": 1000,
         "activity_bq": 1e4, "duration_s": 0.1}


def _check(data_group: dict, ev: dict) -> None:
    expected_ids = ev["ring"] * 184 + ev["index"]
    np.testing.assert_array_equal(data_group["crystal1"], expected_ids[:, 0])
    np.testing.assert_array_equal(data_group["crystal2"], expected_ids[:, 1])
    np.testing.assert_allclose(data_group["time1_ns"], ev["time_s"][:, 0] * 1e9, rtol=0,
                               atol=1e-6)
    np.testing.assert_allclose(data_group["energy2_kev"], ev["energy_mev"][:, 1] * 1e3,
                               rtol=1e-6)
    random = ev["event"][:, 0] != ev["event"][:, 1]
    scattered = (ev["compton"] > 0).any(axis=1) | (ev["rayleigh"] > 0).any(axis=1)
    expected_kind = np.where(random, 2, np.where(scattered, 1, 0))
    np.testing.assert_array_equal(data_group["kind"], expected_kind)
    assert np.isnan(data_group["annihilation_mm"][random]).all()
    np.testing.assert_allclose(data_group["annihilation_mm"][~random],
                               ev["source_mm"][~random], atol=1e-4)
    np.testing.assert_array_equal(data_group["compton_phantom1"], ev["compton"][:, 0])


def test_gate9_coincidences_convert_with_units_and_ids(tmp_path):
    prompts, delayed = _events(500, 1), _events(40, 2)
    path = tmp_path / "gate.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = _gate9_branches(prompts)
        f["delay"] = _gate9_branches(delayed)
    counts = import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS)
    assert counts == {"coincidences": 500, "delayed": 40}
    data = read_listmode(tmp_path / "lm.h5")
    _check(data.coincidences, prompts)
    _check(data.delayed, delayed)
    assert data.attrs["root_schema"] == "gate9" and data.scanner == SCANNER


def test_opengate_coincidences_convert_with_units_and_ids(tmp_path):
    prompts = _events(300, 3)
    path = tmp_path / "og.root"
    with uproot.recreate(path) as f:
        f["coincidences"] = _opengate_branches(prompts)
        f["delayed"] = _opengate_branches(_events(10, 4))
    counts = import_root(path, tmp_path / "lm.h5", SCANNER, {**ATTRS, "engine": "opengate"},
                         schema="opengate", min_sector_difference=2)
    assert counts == {"coincidences": 300, "delayed": 10}
    _check(read_listmode(tmp_path / "lm.h5").coincidences, prompts)


def test_opengate_import_applies_the_sector_difference_rule(tmp_path):
    ev = _events(200, 5)
    ev["index"][:100, 1] = (ev["index"][:100, 0] + 8) % 184  # neighbouring module
    path = tmp_path / "og.root"
    with uproot.recreate(path) as f:
        f["coincidences"] = _opengate_branches(ev)
    counts = import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS, schema="opengate",
                         min_sector_difference=2)
    assert counts["coincidences"] == 100


def test_wrong_geometry_ids_are_refused(tmp_path):
    branches = _gate9_branches(_events(20, 6))
    branches["rsectorID2"][3] = 30  # a 23-module scanner has rsectors 0..22
    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = branches
    with pytest.raises(ValueError, match=r"g\.root.*rsector id out of range"):
        import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS)
    assert not (tmp_path / "lm.h5").exists()


def test_missing_branch_is_named(tmp_path):
    branches = _gate9_branches(_events(20, 7))
    del branches["comptonPhantom2"]
    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = branches
    with pytest.raises(ValueError, match=r"g\.root: tree 'Coincidences' lacks branch\(es\) "
                                         r"comptonPhantom2"):
        import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS, schema="gate9")


def test_missing_tree_and_unknown_layout_are_named(tmp_path):
    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Singles"] = {"energy": np.ones(3)}
    with pytest.raises(ValueError, match=r"g\.root: no tree 'Coincidences'.*Singles"):
        import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS, schema="gate9")
    with pytest.raises(ValueError, match=r"g\.root: neither a GATE 9"):
        import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_root_file_gives_one_error(tmp_path, damage):
    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = _gate9_branches(_events(2000, 8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"not root" * 100)
    with pytest.raises(ValueError, match=r"g\.root"):
        import_root(path, tmp_path / "lm.h5", SCANNER, ATTRS)
    assert not (tmp_path / "lm.h5").exists()


def test_cli_import_root_reads_gate9_and_asks_for_primaries(tmp_path, capsys):
    from sim.__main__ import main

    prompts = _events(50, 9)
    path = tmp_path / "elsewhere.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = _gate9_branches(prompts)
    args = ["import-root", "--root", str(path), "--out", str(tmp_path / "lm.h5"),
            "--activity-bq", "1e5", "--duration-s", "2"]
    assert main(args) == 2  # no total_nb_primaries histogram and no --primaries
    assert "give --primaries" in capsys.readouterr().err
    assert main([*args, "--primaries", "200000"]) == 0
    data = read_listmode(tmp_path / "lm.h5")
    assert data.attrs["primaries"] == 200_000 and data.attrs["duration_s"] == 2.0
    _check(data.coincidences, prompts)
    assert len(data.delayed["crystal1"]) == 0  # no delay tree: empty group, with a warning


def _cli(tmp_path, capsys, branches: dict | None, *options: str,
         delayed: dict | None = None) -> tuple[int, list[str], object]:
    """Run ``import-root`` on a GATE 9 file of ``branches`` (prompts) and ``delayed``; the
    exit code, the lines on stderr and the output path."""
    from sim.__main__ import main

    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = branches if branches is not None else _gate9_branches(
            _events(30, 11))
        if delayed is not None:
            f["delay"] = delayed
    out = tmp_path / "lm.h5"
    base = {"--root": str(path), "--out": str(out), "--activity-bq": "1e5",
            "--duration-s": "2", "--primaries": "1000"}
    given = dict(zip(options[::2], options[1::2], strict=True))
    argv = ["import-root", *(x for k, v in {**base, **given}.items() if v is not None
                             for x in (k, v))]
    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines(), out


def _damaged(change) -> dict:
    branches = _gate9_branches(_events(30, 12))
    change(branches)
    return branches


def _set(name: str, index: int, value, dtype=None):
    def change(branches: dict) -> None:
        if dtype is not None:
            branches[name] = branches[name].astype(dtype)
        branches[name][index] = value
    return change


@pytest.mark.parametrize("change, tree, expected", [
    (_set("crystalID1", 4, 3.5, np.float64), "Coincidences",
     "branch crystalID1 is stored as float64 with 1 non-integer value(s) (first 3.5 at index 4)"),
    (_set("eventID2", 2, np.nan, np.float64), "Coincidences",
     "branch eventID2 is stored as float64 with 1 NaN or infinite value(s) (first at index 2)"),
    (_set("time2", 7, np.nan), "Coincidences",
     "branch time2 has 1 NaN or infinite value(s) (first at index 7)"),
    (_set("globalPosZ1", 0, np.inf), "delay",
     "branch globalPosZ1 has 1 NaN or infinite value(s) (first at index 0)"),
    (_set("energy1", 5, -0.1), "Coincidences", "branch energy1 must be at least 0"),
    (_set("comptonPhantom2", 1, -2), "delay", "branch comptonPhantom2 must be at least 0"),
    (_set("rsectorID2", 3, 30), "Coincidences",
     "branches rsectorID2, moduleID2, crystalID2: rsector id out of range [0, 23)"),
])
def test_cli_refusals_of_a_bad_root_file_name_the_file_tree_and_branch(tmp_path, capsys,
                                                                       change, tree,
                                                                       expected):
    bad = _damaged(change)
    good = _gate9_branches(_events(30, 13))
    prompts, delayed = (bad, good) if tree == "Coincidences" else (good, bad)
    code, err, out = _cli(tmp_path, capsys, prompts, delayed=delayed)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'g.root'} tree {tree!r}"), err
    assert expected in err[0] and "lm.h5" not in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "g.root"]


def test_cli_refuses_a_named_delayed_tree_the_file_lacks(tmp_path, capsys):
    code, err, out = _cli(tmp_path, capsys, None, "--delayed-tree", "late")
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {tmp_path / 'g.root'}: no tree 'late'"), err
    assert not out.exists()


@pytest.mark.parametrize("option, value, expected", [
    ("--duration-s", "nan", "--duration-s must be a positive, finite number of seconds, "
                            "got nan"),
    ("--duration-s", "-1", "--duration-s must be a positive, finite number of seconds, "
                           "got -1.0"),
    ("--duration-s", "0", "--duration-s must be a positive, finite number of seconds, got 0.0"),
    ("--activity-bq", "inf", "--activity-bq must be a positive, finite number of Bq, got inf"),
    ("--activity-bq", "0", "--activity-bq must be a positive, finite number of Bq, got 0.0"),
    ("--primaries", "0", "--primaries must be the number of decays simulated (1 or more), "
                         "got 0"),
    ("--primaries", "-5", "--primaries must be the number of decays simulated (1 or more), "
                          "got -5"),
])
def test_cli_refusals_of_bad_options_name_the_option(tmp_path, capsys, option, value,
                                                     expected):
    code, err, out = _cli(tmp_path, capsys, None, option, value)
    assert code == 2 and err == [f"error: {expected}"]
    assert not out.exists()


@pytest.mark.parametrize("option", ["--duration-s", "--activity-bq"])
def test_cli_names_a_missing_required_option(tmp_path, capsys, option):
    code, err, out = _cli(tmp_path, capsys, None, option, None)  # before any work
    assert code == 2 and err == [
        f"error: python -m sim import-root: the following arguments are required: {option} "
        "(see python -m sim import-root --help)"]
    assert not out.exists()


def test_library_refuses_bad_acquisition_numbers_before_reading(tmp_path):
    # No ROOT file at all: the attributes are refused first, by their key.
    with pytest.raises(ValueError, match=r"^import attributes: attribute duration_s must be "
                                         r"above 0 s, found -2 s$"):
        import_root(tmp_path / "absent.root", tmp_path / "lm.h5", SCANNER,
                    {**ATTRS, "duration_s": -2.0})
    assert not (tmp_path / "lm.h5").exists()


def test_cli_names_a_primaries_record_that_is_not_a_histogram(tmp_path, capsys):
    from sim.__main__ import main

    path = tmp_path / "g.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = _gate9_branches(_events(10, 14))
        f["total_nb_primaries"] = {"n": np.array([5.0])}  # a tree where GATE puts a TH1
    out = tmp_path / "lm.h5"
    assert main(["import-root", "--root", str(path), "--out", str(out), "--activity-bq", "1",
                 "--duration-s", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"error: {path} histogram 'total_nb_primaries': not a readable histogram")
    assert err[0].endswith("give --primaries") and not out.exists()
