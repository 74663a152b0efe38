"""The folders are the architecture (docs/architecture.md): each package imports only what its
row of the table allows, at module level or inside functions. A new edge fails here first."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
STDLIB_ONLY = set()
# package -> harness packages it may import (itself always allowed); the table in docs/architecture.md
ALLOWED = {
    "errors": STDLIB_ONLY,
    "allocator": STDLIB_ONLY,
    "text": STDLIB_ONLY,
    "pt2_rules": STDLIB_ONLY,
    "datasets": {"errors"},
    "metrics": {"datasets", "errors"},
    "submission": {"errors", "text", "pt2_rules"},
    "sandbox": {"submission", "allocator", "errors", "text", "pt2_rules"},
    "evaluation": {"datasets", "metrics", "submission", "sandbox", "allocator", "errors", "text", "pt2_rules"},
    "grading": {"evaluation", "datasets", "metrics", "submission", "sandbox", "allocator", "errors", "text",
                "pt2_rules"},
    "baseline": {"datasets", "submission", "sandbox", "allocator", "errors", "text", "pt2_rules"},
    "service": {"grading", "evaluation", "submission", "errors", "text"},
    "cli": None,  # everything
    "__main__": None,
    "__init__": None,
}
HEAVY = {"torch"}  # the pure core never imports these
PURE_CORE = ("datasets", "metrics")


def _package(path: Path) -> str:
    rel = path.relative_to(HARNESS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == "harness":
                for alias in node.names:
                    yield node.lineno, f"harness.{alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use absolute harness.* imports")


MODULES = sorted(HARNESS.rglob("*.py"))


def test_every_package_is_in_the_table():
    assert {_package(p) for p in MODULES} <= set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(HARNESS)))
def test_imports_follow_the_architecture(path):
    package = _package(path)
    allowed = ALLOWED[package]
    for line, name in _imports(path):
        top = name.split(".")
        if top[0] in HEAVY and package in PURE_CORE:
            raise AssertionError(f"{path.name}:{line}: the pure core imports {name}")
        if top[0] != "harness" or len(top) < 2 or allowed is None:
            continue
        target = top[1]
        if target in ("__version__",) or target == package:
            continue
        assert target in allowed, f"harness/{path.relative_to(HARNESS)}:{line} imports harness.{target}, " \
                                  f"which harness.{package} may not (docs/architecture.md)"
