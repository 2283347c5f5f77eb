"""Layering: lower parts of the package never import higher ones (not even inside a function),
so no import circle can form between them. Read from the source with ``ast``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "amanet"

#: package part -> parts it must not import
FORBIDDEN = {
    "config": ("modeling", "data", "engine", "deploy", "runtime", "cli", "benchmarks"),
    "ops": ("engine", "deploy", "runtime", "cli", "benchmarks", "data"),
    "modeling": ("engine", "deploy", "runtime", "cli", "benchmarks"),
    "data": ("engine", "deploy", "runtime", "cli", "benchmarks"),
    "deploy": ("cli", "benchmarks", "engine"),
    "engine": ("cli", "benchmarks"),
    "runtime": ("cli", "benchmarks", "engine"),
}

#: the op benchmark is a benchmark living beside its ops: it may use the runtime's memory policy
ALLOWED = {("ops/benchmark.py", "runtime")}


def _imports(path: Path):
    """Absolute ``amanet.*`` module names imported anywhere in ``path``."""
    parts = ("amanet",) + path.relative_to(PKG).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            yield mod
            if not node.module:  # from . import x
                yield from (f"{mod}.{a.name}" for a in node.names)


def _part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[0] == "amanet" else ""


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_upward_imports(part):
    found = []
    for path in sorted((PKG / part).rglob("*.py")):
        for mod in _imports(path):
            rel = str(path.relative_to(PKG))
            if _part(mod) in FORBIDDEN[part] and (rel, _part(mod)) not in ALLOWED:
                found.append(f"{rel} imports {mod}")
    assert not found, found


def test_the_scanner_sees_function_level_and_relative_imports(tmp_path):
    """The check would catch the two circles it guards against."""
    src = PKG / "deploy" / "_probe_.py"
    src.write_text("def f():\n    from ..cli import IMAGE_EXTENSIONS\n    from . import graph\n")
    try:
        mods = set(_imports(src))
    finally:
        src.unlink()
    assert {"amanet.cli", "amanet.deploy.graph"} <= mods
