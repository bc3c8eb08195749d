"""The package's layers import downward only (core ← ingest ← defs ← cli; api ← core; bench
never the tests): an upward import would make a lower layer drag in Dagster, the CLI or the
test suite wherever it is packed (the Bento packs api/ and core/ alone)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Layer → the local layers its modules may import (itself included).
ALLOWED = {
    "credit_platform.core": {"credit_platform.core"},
    "credit_platform.ingest": {"credit_platform.core", "credit_platform.ingest"},
    "credit_platform.defs": {
        "credit_platform.core",
        "credit_platform.ingest",
        "credit_platform.defs",
    },
    "credit_platform.cli": {
        "credit_platform.core",
        "credit_platform.ingest",
        "credit_platform.defs",
        "credit_platform.cli",
    },
    "api": {"credit_platform.core", "api"},
    "bench": {
        "credit_platform.core",
        "credit_platform.ingest",
        "credit_platform.defs",
        "credit_platform.cli",
        "api",
        "bench",
    },
}
LOCAL_ROOTS = ("credit_platform", "credit_platform_tests", "api", "bench")
# Libraries a layer must not depend on at all (core is what the Bento packs and what
# ingest and api share; it stays free of Dagster).
FORBIDDEN_LIBRARIES = {"credit_platform.core": {"dagster"}, "api": {"dagster"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(f"{layer}."):
            return layer
    return None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute import in the file, at any depth (function-level imports count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in LOCAL_ROOTS:  # `from credit_platform import core`
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def layered_files() -> list[Path]:
    files = []
    for root in ("credit_platform", "api", "bench"):
        files += sorted((REPO_ROOT / root).rglob("*.py"))
    return files


def violations() -> list[str]:
    found = []
    for path in layered_files():
        layer = layer_of(module_name(path))
        if layer is None:  # credit_platform/__init__.py: imports nothing
            assert not [m for _, m in imported_modules(path) if m.startswith(LOCAL_ROOTS)]
            continue
        for line, module in imported_modules(path):
            where = f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
            top = module.split(".")[0]
            if top in FORBIDDEN_LIBRARIES.get(layer, ()):
                found.append(f"{where} ({layer} must not depend on {top})")
            if top not in LOCAL_ROOTS:
                continue
            target = layer_of(module)
            if target is None or target not in ALLOWED[layer]:
                found.append(f"{where} ({layer} may import only {sorted(ALLOWED[layer])})")
    return found


def test_no_import_runs_upward() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("credit_platform/core/x.py", "from credit_platform.defs import sensors\n", "may import"),
        ("credit_platform/core/x.py", "import dagster\n", "must not depend on dagster"),
        ("api/x.py", "def f():\n    from credit_platform.cli.main import main\n", "may import"),
        ("bench/x.py", "from credit_platform_tests.conftest import X\n", "may import"),
        ("credit_platform/ingest/x.py", "from credit_platform.defs.jobs import j\n", "may import"),
    ],
)
def test_the_walk_finds_an_upward_import(tmp_path, monkeypatch, layer, source, expected) -> None:
    """The walk itself is checked: a planted upward import in each layer is reported."""
    planted = REPO_ROOT / layer
    monkeypatch.setattr(
        "credit_platform_tests.test_layers.layered_files", lambda: [planted], raising=True
    )
    original = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: source if self == planted else original(self, *a, **k),
    )
    found = violations()
    assert len(found) == 1 and expected in found[0], found
