"""The packages depend one way: the pipeline core imports no stage, and the simulation stage
imports neither reconstruction nor models. Read from the source (every import statement,
including those inside functions), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Package -> top-level packages it must never import.
FORBIDDEN = {"pipeline": {"sim", "recon", "models"}, "sim": {"recon", "models"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level package of every module ``path`` imports (absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_reader_sees_function_level_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os.path\nfrom sim.phantoms import shapes\n"
                      "def f():\n    from models.nets import vae\n    import recon.stage as s\n")
    assert imported_packages(source) == {"os", "sim", "models", "recon"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_against_the_layering(package):
    modules = sorted((REPO / package).rglob("*.py"))
    assert len(modules) > 5
    wrong = {str(p.relative_to(REPO)): sorted(imported_packages(p) & FORBIDDEN[package])
             for p in modules if imported_packages(p) & FORBIDDEN[package]}
    assert not wrong, wrong


def test_the_workflow_and_the_entry_points_load_without_torch():
    """What every Snakemake invocation imports to read the Snakefile (torch took 3 of a dry
    run's 5 seconds) and what `python -m sim|recon|models` imports before its stop-signal
    handlers are in: no torch. And the method registry declares exactly the methods that
    register themselves, with the inputs their classes get."""
    import subprocess
    import sys

    code = ("import sys; import models.methods, pipeline.config, pipeline.job_resources, "
            "pipeline.specs, sim.phantoms.spec, sim.__main__, recon.__main__, models.__main__; "
            "print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
    from models.methods import NEEDS, method_class, method_names

    assert method_names() == sorted(NEEDS)
    assert {m: method_class(m).needs for m in method_names()} == NEEDS
    assert NEEDS["attention_gan"] == ("positron", "features", "encoder")
