"""Operating-system failures at the output of every stage's command line: one `error:` line
naming the path and the cause, exit code 2, no traceback, before the stage does any work."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import pytest

from pipeline.cli import describe

#: One command per package, with every input left as it is (missing or not): the output is
#: checked first.
COMMANDS = {
    "sim": ["phantom", "--dataset", "tubes", "--phantom", "tube_0000", "--out", "{out}"],
    "recon": ["reconstruct", "--dataset", "tubes", "--listmode", "missing.h5", "--out", "{out}"],
    "models": ["positron-features", "--dataset", "tubes", "--positron", "missing.h5", "--out",
               "{out}"],
}


def _unwritable(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Outputs that cannot be written whoever runs the test (root included): path -> (the path
    the message must name, the cause it must give)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {
        "through a file": (str(a_file / "sub" / "out.h5"), f"{a_file}: a file where the output "
                                                             "folder should be"),
        "in a kernel folder": ("/proc/positron-nde-test/out.h5",
                               "/proc/positron-nde-test: cannot create the output folder"),
        "in a read-only file system": ("/sys/out.h5", "/sys: cannot write in the output folder"),
    }


@pytest.mark.parametrize("package", sorted(COMMANDS))
def test_unwritable_outputs_give_one_line_before_any_work(package, tmp_path, capsys):
    main = importlib.import_module(f"{package}.__main__").main
    for case, (out, expected) in _unwritable(tmp_path).items():
        start = time.perf_counter()
        code = main([a.format(out=out) for a in COMMANDS[package]])
        seconds = time.perf_counter() - start
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, case
        assert len(err) == 1, err
        assert err[-1].startswith(f"error: {expected}"), (case, err)
        assert "Traceback" not in "\n".join(err)
        assert seconds < 5, f"{case}: the output was checked after {seconds:.1f} s of work"


@pytest.mark.parametrize("package", sorted(COMMANDS))
def test_a_bad_command_line_gives_one_line_naming_the_command(package, capsys):
    """What argparse refuses (no sub-command, an unknown one, an unknown option, a missing
    required option, a value of the wrong type): one line naming the command, exit code 2;
    --help still prints the usage."""
    main = importlib.import_module(f"{package}.__main__").main
    command = COMMANDS[package][0]
    required = next(a for a in COMMANDS[package] if a.startswith("--out"))
    cases = {
        (): "the following arguments are required: command",
        ("no-such-command",): "invalid choice: 'no-such-command'",
        (command, "--no-such-option"): "",
        (command, "--threads", "two"): "",
        tuple(a for a in COMMANDS[package] if a not in (required, "{out}")): required,
    }
    for argv, expected in cases.items():
        code = main(list(argv))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, (argv, err)
        assert err[0].startswith(f"error: python -m {package}") and expected in err[0], err
        assert err[0].endswith("--help)"), err
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("usage:")


def test_an_existing_output_is_refused_before_any_work(tmp_path, capsys):
    from sim.__main__ import main

    out = tmp_path / "t.h5"
    out.write_text("user data")
    code = main(["phantom", "--dataset", "tubes", "--phantom", "tube_0000", "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"error: {out} exists; pass --overwrite to " \
                                              "replace it"
    assert out.read_text() == "user data"


def test_describe_names_the_path_and_cause():
    assert describe(PermissionError(13, "Permission denied", "/x/y")) == "/x/y: Permission denied"
    assert describe(OSError(28, "No space left on device", "/d/f.h5")) == \
        "/d/f.h5: No space left on device"
    assert describe(ValueError("a\nb")) == "a b"
    assert describe(MemoryError("Unable to allocate 477 GiB")).startswith(
        "out of memory (Unable to allocate 477 GiB)")


@pytest.mark.slow
def test_a_full_disk_gives_one_line_and_leaves_nothing(tiny_disk, tmp_path, capsys):
    """Phantom (its files as one set) and simulate (HDF5 list-mode written chunk by chunk)
    on a disk that fills: one line naming the path and the cause, nothing left behind."""
    from sim.__main__ import main

    code = main(["phantom", "--dataset", "tubes", "--phantom", "tube_0000", "--out",
                 str(tiny_disk / "t.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tiny_disk}/") and "no space left on the device" in err[0]
    assert list(tiny_disk.iterdir()) == []

    phantom = tmp_path / "t.h5"
    assert main(["phantom", "--dataset", "tubes", "--phantom", "tube_0000", "--out",
                 str(phantom)]) == 0
    capsys.readouterr()
    code = main(["simulate", "--dataset", "tubes", "--phantom", "tube_0000", "--acquisition",
                 "reference", "--phantom-file", str(phantom), "--out",
                 str(tiny_disk / "reference.h5"), "--threads", "2"])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if line.startswith("error:") or "Traceback" in line]
    assert code == 2
    assert err == [err[0]] and err[0].startswith(f"error: {tiny_disk}/reference.h5: no space "
                                                 "left on the device"), err
    assert list(tiny_disk.iterdir()) == []
