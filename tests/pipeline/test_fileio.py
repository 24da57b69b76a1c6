"""Atomic outputs (pipeline/fileio.py): whatever library writes the file, a full disk gives one
OSError naming the output and the cause and leaves nothing behind; a stop signal that arrived
before the commit, even one whose exception was swallowed, leaves no output."""

from __future__ import annotations

import errno
import os
import signal
import time

import h5py
import matplotlib
import numpy as np
import pytest
import torch

from pipeline.fileio import atomic_output, atomic_output_set
from pipeline.interrupts import Interrupted, deferred_stop, stop_on_signals

matplotlib.use("Agg")


# Signals sent here must not meet an ignored disposition (a suite started in the
# background): see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("foreground_signals")


def _figure(path) -> None:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(30, 30), dpi=100)
    fig.figimage(np.random.default_rng(0).random((3000, 3000)))
    fig.savefig(path, format="png")
    plt.close(fig)


def _hdf5(path) -> None:
    with h5py.File(path, "w") as f:
        f["x"] = np.random.default_rng(0).random(500_000)


def _numpy(path) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.random.default_rng(0).random(400_000))


#: Each library's way of writing more than the 2 MB disk holds (torch's zip writer says
#: "unexpected pos", h5py "can't write data", numpy and Pillow an OSError without the file).
WRITERS = {
    "torch.save": lambda path: torch.save({"w": torch.rand(700_000)}, path),
    "h5py": _hdf5,
    "numpy.save": lambda path: _numpy(path),
    "matplotlib": _figure,
    "plain write": lambda path: path.write_bytes(os.urandom(3_000_000)),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_named_whatever_the_writer_raises(tiny_disk, writer):
    out = tiny_disk / "out.bin"
    with pytest.raises(OSError) as info, atomic_output(out) as tmp:
        WRITERS[writer](tmp)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    assert info.value.strerror.startswith("no space left on the device"), info.value
    assert list(tiny_disk.iterdir()) == []
    # The same writer in a set of outputs: the set's folder is named.
    with pytest.raises(OSError) as info, atomic_output_set(
            [tiny_disk / "a.bin", tiny_disk / "b.bin"]) as staging:
        (staging / "a.bin").write_bytes(b"small")
        WRITERS[writer](staging / "b.bin")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tiny_disk)
    assert list(tiny_disk.iterdir()) == []


def test_an_error_on_a_disk_with_room_is_left_as_it_is(tmp_path):
    with pytest.raises(KeyError, match="not a disk problem"), atomic_output(tmp_path / "o") as t:
        t.write_text("partial")
        raise KeyError("not a disk problem")
    assert list(tmp_path.iterdir()) == []


def test_a_stop_that_arrives_before_the_commit_leaves_no_output(tmp_path):
    """A signal inside a deferred block is raised when the block ends; one whose exception
    was swallowed (as Python does inside a weakref callback) is raised again at the commit;
    one arriving after the commit leaves the complete file."""
    out = tmp_path / "out.txt"
    with stop_on_signals(grace_s=60):
        with pytest.raises(Interrupted) as info, atomic_output(out) as tmp:
            tmp.write_text("complete")
            with deferred_stop():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # delivered here, and held
        assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert list(tmp_path.iterdir()) == []

    with stop_on_signals(grace_s=60):
        with pytest.raises(Interrupted), atomic_output(out) as tmp:
            tmp.write_text("complete")
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
            except Interrupted:
                pass  # swallowed: the stop stays recorded
            tmp.write_text("complete, after the swallowed stop")
    assert list(tmp_path.iterdir()) == []

    with stop_on_signals(grace_s=60):
        with pytest.raises(Interrupted):
            with atomic_output(out) as tmp:
                tmp.write_text("complete")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)
    assert out.read_text() == "complete"
