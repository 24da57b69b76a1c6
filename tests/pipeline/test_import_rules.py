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
