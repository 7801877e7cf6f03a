"""The package's floors (DESIGN.md, "Layout"): imports only go down, and packages on one floor do
not import each other. Every ``import`` in the package is read with ``ast`` (function-level imports
included), so a violation fails here however it is written."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "mixweave"

# floor of each top-level part of mixweave; higher floors may import lower ones only
FLOORS = {
    "submit": 7,
    "cli": 6,
    "pipeline": 5,
    "mixers": 4, "utility": 4,
    "jobs": 3, "trainer": 3, "corpus": 3,
    "retrieval": 2,
    "data": 1,
    "errors": 0,
}


def _part(module: str) -> str:
    """``mixweave.x.y`` -> ``x``; the package root itself (``__version__``) -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__version__" else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported mixweave module, line) for every import statement in ``path``."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = module.endswith(".__init__")
    module = module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import a, b: each name is a module
                    found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return [(name, line) for name, line in found if name == "mixweave" or name.startswith("mixweave.")]


def violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"))
        if here == "":
            continue  # mixweave/__init__.py holds only the version
        assert here in FLOORS, f"{path}: add its package to FLOORS"
        for target, line in _imports(path):
            there = _part(target)
            if there in ("", here):
                continue  # the version, or inside one package
            if there not in FLOORS:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports unknown part {target}")
            elif FLOORS[there] >= FLOORS[here]:
                kind = "a sibling" if FLOORS[there] == FLOORS[here] else "upward"
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {kind}: {target}")
    return problems


def test_imports_only_go_down():
    assert violations() == []


def test_the_checker_sees_upward_sibling_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "mixweave"
    for part in ("data", "mixers", "utility"):
        (fake / part).mkdir(parents=True)
        (fake / part / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("__version__ = '0'\n")
    (fake / "data" / "a.py").write_text("def f():\n    from ..mixers import api\n")
    (fake / "mixers" / "b.py").write_text("from mixweave.utility.api import x\nfrom mixweave import __version__\n")
    (fake / "utility" / "c.py").write_text("from ..data import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert violations() == ["mixweave/data/a.py:2 imports upward: mixweave.mixers",
                            "mixweave/mixers/b.py:1 imports a sibling: mixweave.utility.api"]
