"""The Bento's recipe (api/bentofile.yaml) is enough to run the service it packs: every
module the service imports is included, and every third-party package it imports is
installed, pinned as in pyproject.toml."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[2]
BENTOFILE = yaml.safe_load((REPO_ROOT / "api" / "bentofile.yaml").read_text())
LOCAL_PACKAGES = {"api", "credit_platform"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def included_files() -> tuple[Path, ...]:
    """The Python files the bentofile's include patterns pack."""
    found = set()
    for pattern in BENTOFILE["include"]:
        # BentoML packs a directory pattern ("credit_platform/core/") whole.
        found.update(REPO_ROOT.glob(f"{pattern}**/*.py" if pattern.endswith("/") else pattern))
    return tuple(sorted(path for path in found if path.suffix == ".py"))


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def pinned_packages() -> dict[str, str]:
    return {
        canonical(Requirement(line).name): str(Requirement(line).specifier)
        for line in BENTOFILE["python"]["packages"]
    }


def installed_with(packages: set[str]) -> set[str]:
    """The packages and everything they require, transitively (extras left out)."""
    seen: set[str] = set()
    stack = list(packages)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                stack.append(canonical(requirement.name))
    return seen


def test_every_local_module_the_service_imports_is_packed() -> None:
    packed = {
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts) for path in included_files()
    }
    needed = {
        name
        for path in included_files()
        for name in imports_of(path)
        if name.split(".")[0] in LOCAL_PACKAGES
    }
    missing = sorted(
        name for name in needed if name not in packed and f"{name}.__init__" not in packed
    )
    assert not missing, f"api/bentofile.yaml does not include: {missing}"


def test_every_third_party_import_is_installed_in_the_bento() -> None:
    owners = packages_distributions()
    third_party = {
        canonical(owners[top][0])
        for path in included_files()
        for top in {name.split(".")[0] for name in imports_of(path)}
        if top not in LOCAL_PACKAGES and top not in sys.stdlib_module_names
    }
    available = installed_with(set(pinned_packages()))
    assert sorted(third_party - available) == []


def test_bento_pins_match_pyproject() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {
        canonical(Requirement(line).name): str(Requirement(line).specifier)
        for line in project["dependencies"]
    }
    differing = {
        name: (pin, pyproject.get(name))
        for name, pin in pinned_packages().items()
        if pyproject.get(name) != pin
    }
    assert differing == {}, "bentofile pin vs pyproject pin"
