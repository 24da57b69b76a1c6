"""The README's package map matches the tree: every package it lists exists, every package of
the tree is listed, and every module it names for a package is there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _map() -> dict[str, str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        head = re.match(r"^(\S+/)\s+(.*)$", line)
        if head:
            current = head.group(1).rstrip("/")
            entries[current] = head.group(2)
        elif current:
            entries[current] += " " + line.strip()
    return entries


def test_the_package_map_lists_exactly_the_packages():
    listed = set(_map())
    packages = {str(p.parent.relative_to(REPO)) for top in ("pipeline", "sim", "recon", "models")
                for p in (REPO / top).rglob("__init__.py")}
    packages.discard("models")  # the top of models holds only the CLI
    assert listed == packages


def test_every_module_of_a_package_is_in_its_line():
    unnamed = []
    for package, text in _map().items():
        words = set(re.findall(r"[a-z][a-z0-9_]*", text))
        for module in sorted((REPO / package).glob("*.py")):
            if module.stem not in ("__init__", "__main__") and module.stem not in words:
                unnamed.append(f"{package}/{module.name}")
        for sub in sorted((REPO / package).glob("*/__init__.py")):
            if sub.parent.name not in words and f"{package}/{sub.parent.name}" not in _map():
                unnamed.append(f"{package}/{sub.parent.name}/")
    assert not unnamed, unnamed
