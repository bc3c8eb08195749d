"""One configuration source as the CLI and Dagster's own tools meet it: embedded defaults in a
fresh process, one default training grid, synthetic days that end yesterday, a quiet
embedded instance."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import func, select

from credit_platform.cli.main import main
from credit_platform.core import settings
from credit_platform.core.db import init_schema
from credit_platform.core.schema import credit_score
from credit_platform.core.service_process import free_port
from credit_platform.defs.partitions import daily_partitions

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def _fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: none of the platform's or Dagster's variables, a home of its own, and
    an API address where nothing answers (no service is part of these tests)."""
    platform = set(settings.embedded_defaults()) | {settings.DAGSTER_HOME_ENV}
    env = {name: value for name, value in os.environ.items() if name not in platform}
    env.update(
        {
            settings.HOME_ENV: str(home),
            settings.API_URL_ENV: f"http://127.0.0.1:{free_port()}",
            "BENTOML_DO_NOT_TRACK": "true",
            **extra,
        }
    )
    return env


def _cli(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "credit_platform.cli.main", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_seed_synthetic_ends_yesterday_by_default(cli_runner, sqlite_url):
    result = cli_runner.invoke(
        main,
        ["seed", "synthetic", "--customers", "3", "--days", "4", "--db-url", sqlite_url, "--quiet"],
    )
    assert result.exit_code == 0, result.output
    engine = init_schema(sqlite_url)
    with engine.connect() as connection:
        first, last = connection.execute(
            select(func.min(credit_score.c.date), func.max(credit_score.c.date))
        ).one()
    engine.dispose()
    assert (str(first), str(last)) == (
        (_yesterday() - timedelta(days=3)).isoformat(),
        _yesterday().isoformat(),
    )
    # Yesterday is the newest daily partition: the UI's default views and launch range.
    assert daily_partitions().get_last_partition_key() == _yesterday().isoformat()


def test_seed_synthetic_refuses_start_and_end_together(cli_runner, sqlite_url):
    result = cli_runner.invoke(
        main,
        ["seed", "synthetic", "--customers", "1", "--days", "1", "--db-url", sqlite_url,
         "--start", "2025-01-01", "--end", "2025-01-05"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "give --start or --end, not both" in result.output


def test_the_instance_the_cli_writes_is_quiet(cli_runner, tmp_path):
    dagster_home = tmp_path / "dagster_home"  # the cli_runner fixture's DAGSTER_HOME
    dagster_home.mkdir()
    # What an earlier version of the command wrote: brought up to date.
    (dagster_home / "dagster.yaml").write_text(
        "# Embedded Dagster instance made by credit-platform: runs, events and schedules\n"
        "# are kept in SQLite files beside this file.\n"
    )
    result = cli_runner.invoke(main, ["init", "--print-ddl", "sqlite"])
    assert result.exit_code == 0, result.output
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.telemetry_enabled is False
        assert instance.nux_enabled is False
        assert instance.is_persistent  # SQLite files under DAGSTER_HOME


def test_an_operators_instance_config_is_kept(cli_runner, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    own = "telemetry:\n  enabled: true\n"
    (dagster_home / "dagster.yaml").write_text(own)
    assert cli_runner.invoke(main, ["init", "--print-ddl", "sqlite"]).exit_code == 0
    assert (dagster_home / "dagster.yaml").read_text() == own


def test_materialize_without_grid_trains_the_grid_a_ui_launch_uses(tmp_path):
    """`credit-platform materialize` without --grid sends no grid config, so it trains on
    the asset's default, the CREDIT_TRAINING_GRID preset, as a launch from the UI does; the
    run recorded in the instance says so."""
    home = tmp_path / "home"
    env = _fresh_env(home, **{settings.TRAINING_GRID_ENV: "small"})
    partition = _yesterday().isoformat()
    _cli(env, "seed", "synthetic", "--customers", "40", "--days", "32", "--quiet")
    done = _cli(env, "materialize", "--partition", partition)
    assert f"materializing partition {partition} (small grid)" in done.stdout
    assert "trials=2" in done.stdout, done.stdout

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        (run,) = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
        assert "credit_score_model" not in run.run_config.get("ops", {})
    # The asset's default grid, read in a fresh process with the same variable.
    probe = subprocess.run(
        [sys.executable, "-c", "from credit_platform.defs.assets.model import TrainingConfig;"
         "c = TrainingConfig(); print(len(c.depths) * len(c.rsms) * len(c.l2_leaf_regs))"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.stdout.split()[-1] == "2", probe.stderr[-2000:]
    # Without the variable both default to the seed grid.
    help_text = _cli(_fresh_env(tmp_path / "other"), "materialize", "--help").stdout
    assert f"else {settings.DEFAULT_TRAINING_GRID}" in " ".join(help_text.split())


def test_dagster_loads_the_code_location_with_embedded_defaults(tmp_path):
    """Dagster's own CLI (as `dagster dev -w workspace.yaml` and run workers do) loads the
    definitions in a process where no platform variable is set: the module fills the
    defaults, every EnvVar resolves, and the run reads the store under the home."""
    home = tmp_path / "home"
    env = _fresh_env(home)
    _cli(env, "seed", "synthetic", "--customers", "10", "--days", "3", "--quiet")
    env[settings.DAGSTER_HOME_ENV] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()
    dagster = str(VENV_BIN / "dagster")
    validated = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    done = subprocess.run(
        [dagster, "asset", "materialize", "-m", "credit_platform.defs.definitions",
         "--select", "credit_score_features_target", "--partition", _yesterday().isoformat()],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PreviewWarning" not in done.stderr
    assert "BetaWarning" not in done.stderr
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(AssetKey("credit_score_features_target"))
    metadata = event.asset_materialization.metadata
    assert metadata["feature_store"].value == f"sqlite:///{home / 'feature_store.db'}"
    assert metadata["dagster/row_count"].value > 0
