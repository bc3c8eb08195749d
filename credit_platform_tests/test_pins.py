"""Every Dagster integration pyproject.toml pins is one the platform uses, and where.

dagster-mlflow is deliberately not pinned: its `mlflow_tracking` resource and hooks are
made for ops, and asset runs launched from the UI can stay RUNNING in MLflow (dagster
issue 21872); `MlflowTrackingResource` opens and closes the runs itself.
"""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parents[1]

# Each pinned integration, the file that uses it, and what in that file does.
INTEGRATION_USES = {
    "dagster-webserver": ("docker-compose.yml", '"dagster-webserver", "-w"'),
    "dagster-docker": ("deploy/dagster/dagster.yaml", "module: dagster_docker"),
    "dagster-mysql": ("deploy/dagster/dagster.yaml", "storage:\n  mysql:"),
}


def _pinned() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name for line in project["dependencies"]}


def test_every_pinned_dagster_integration_is_used():
    integrations = {name for name in _pinned() if name.startswith("dagster-")}
    assert integrations == set(INTEGRATION_USES), "pinned but unused, or used but unpinned"
    for name, (path, needle) in INTEGRATION_USES.items():
        assert needle in (REPO_ROOT / path).read_text(), f"{name}: {needle!r} not in {path}"


def test_dagster_mlflow_is_neither_pinned_nor_packed():
    assert "dagster-mlflow" not in _pinned()
    bento = yaml.safe_load((REPO_ROOT / "api" / "bentofile.yaml").read_text())
    assert not any("dagster" in line for line in bento["python"]["packages"])
    assert "dagster-mlflow" in (REPO_ROOT / "README.md").read_text()  # the reason is written
