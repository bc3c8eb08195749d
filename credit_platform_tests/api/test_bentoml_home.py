"""The service's BentoML store is the platform's: importing `api` (as `bentoml serve
api.service:...` does first) pins BENTOML_HOME from the platform's settings before any of
its modules imports BentoML, and a BENTOML_HOME the operator set is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from credit_platform.core import settings

REPO_ROOT = Path(__file__).resolve().parents[2]

# Prints the home BentoML's own configuration resolves, after importing a module of `api`.
PROBE = (
    "import importlib, sys; importlib.import_module(sys.argv[1]);"
    "from bentoml._internal.configuration.containers import BentoMLContainer;"
    "print(BentoMLContainer.bentoml_home.get())"
)


def bentoml_home_after_importing(module: str, env: dict[str, str], home: Path) -> Path:
    """The home BentoML resolves in a fresh interpreter that imports `module`, under a
    `$HOME` of the test's own: a failure never reaches the user's ~/bentoml."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=REPO_ROOT,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["api.service", "api.schemas"])
def test_bentoml_uses_the_home_of_the_platform_settings(tmp_path: Path, module: str) -> None:
    env = {name: value for name, value in os.environ.items() if name != settings.BENTOML_HOME_ENV}
    env[settings.HOME_ENV] = str(tmp_path / "home")
    assert bentoml_home_after_importing(module, env, tmp_path) == tmp_path / "home" / "bentoml"


def test_a_bentoml_home_the_operator_set_is_kept(tmp_path: Path) -> None:
    env = {**os.environ, settings.HOME_ENV: str(tmp_path / "home")}
    env[settings.BENTOML_HOME_ENV] = str(tmp_path / "store")
    assert bentoml_home_after_importing("api.service", env, tmp_path) == tmp_path / "store"
