"""The ``gate9`` engine: render ``gate_macros/`` for one job, run ``Gate``, import its ROOT file.

GATE 9 runs one thread per process (its multithreaded build is experimental), so the job's
``threads`` are not used; split a long acquisition into several phantoms or acquisitions to
use more cores. The rendered macros, GATE's log and its ROOT file live in a hidden work
folder next to the output (``.{name}.gate9/``), removed after a successful import unless
``keep_root``; after a failure they stay there for inspection.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipeline.interrupts import child_process
from sim.engines.base import SpecEngine
from sim.engines.gate9.macros import gate_command, render_gate9_macros
from sim.listmode.file import acquisition_attrs
from sim.listmode.root_import import gate9_primaries, import_root
from sim.scanner.geometry import Scanner

log = logging.getLogger(__name__)

ROOT_BASENAME = "gate9"


def gate_version(executable: str) -> str:
    """Version GATE prints with ``--version``, or 'unknown'."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[-1][:80] if text else "unknown"


def run_gate9(spec: dict[str, Any], phantom_h5: str | Path, out_h5: str | Path,
              threads: int = 1, overwrite: bool = False, keep_root: bool = False
              ) -> dict[str, int]:
    """Simulate one acquisition with GATE 9 and write the list-mode file.

    Returns
    -------
    dict
        Rows written per list-mode group.

    Raises
    ------
    RuntimeError
        ``Gate`` is not on PATH (before anything is written), or it failed (with the end of
        its log).
    """
    out_h5 = Path(out_h5)
    if out_h5.exists() and not overwrite:
        raise FileExistsError(f"{out_h5} exists; pass --overwrite to replace it")
    if shutil.which("Gate") is None:
        gate_command(out_h5)  # raises the clear "Gate not on PATH" error
    if threads > 1:
        log.info("GATE 9 runs single-threaded; %d threads requested, 1 used", threads)
    work_dir = out_h5.parent / f".{out_h5.stem}.gate9"
    main = render_gate9_macros(spec, phantom_h5, work_dir, root_basename=ROOT_BASENAME,
                               overwrite=True)
    command = gate_command(main)
    gate_log = work_dir / "gate.log"
    log.info("running %s in %s (log: %s)", " ".join(command), work_dir, gate_log)
    with gate_log.open("w") as stream, child_process(
            command, _kill, cwd=work_dir, stdout=stream, stderr=subprocess.STDOUT) as gate:
        returncode = gate.wait()
    if returncode != 0:
        tail = "\n".join(gate_log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"Gate exited with code {returncode} for {out_h5}; "
                           f"end of {gate_log}:\n{tail}")
    root_path = work_dir / f"{ROOT_BASENAME}.root"
    if not root_path.is_file():
        raise RuntimeError(f"Gate finished without writing {root_path}")
    acquisition = spec["acquisition"]
    primaries = gate9_primaries(root_path)
    if primaries is None:
        primaries = round(acquisition["activity_bq"] * acquisition["duration_s"])
        log.warning("%s has no total_nb_primaries; using the expected %d decays", root_path,
                    primaries)
    attrs = acquisition_attrs(spec, phantom_h5, params={"threads": 1})
    attrs.update(engine="gate9", engine_version=gate_version(command[0]), primaries=primaries)
    counts = import_root(root_path, out_h5, Scanner.from_config(spec["scanner"]), attrs,
                         schema="gate9", overwrite=overwrite)
    if not keep_root:
        shutil.rmtree(work_dir, ignore_errors=True)
    log.info("wrote %s: %d prompts, %d delayed", out_h5, counts["coincidences"],
             counts["delayed"])
    return counts


def _kill(gate: subprocess.Popen) -> None:
    # A stopped job's Gate has nothing to save: its ROOT file is in the hidden work folder.
    gate.kill()
    gate.wait()


#: The engine ``gate9`` for :func:`sim.engines.base.engine_named`.
ENGINE = SpecEngine("gate9", run_gate9)
