"""`credit-platform`: set up the store, load data, run the pipeline, serve, open the UIs."""

import os
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import click

from credit_platform.core import settings
from credit_platform.core.db import FeatureStoreUnavailable, init_schema, redacted, render_ddl

SQL_DIR = settings.REPO_ROOT / "sql"


def generated_sql_files() -> dict[Path, str]:
    """Every file under sql/ that is rendered from the Python source of truth."""
    from credit_platform.core.feature_target_sql import rendered_sql

    return {
        SQL_DIR / "schema_mariadb.sql": render_ddl("mariadb"),
        SQL_DIR / "schema_sqlite.sql": render_ddl("sqlite"),
        SQL_DIR / "feature_target_build.sql": rendered_sql(),
    }


# The embedded instance's config: SQLite storage beside the file (Dagster's default when no
# storage is named), no usage telemetry, and no new-user / community pop-up in the UI.
INSTANCE_CONFIG_HEADER = "# Embedded Dagster instance made by credit-platform"
EMBEDDED_INSTANCE_CONFIG = f"""\
{INSTANCE_CONFIG_HEADER}: runs, events and schedules are kept in
# SQLite files beside this file.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def write_instance_config(dagster_home: Path) -> Path:
    """The embedded instance's dagster.yaml. An operator's own file is kept; one this command
    wrote is brought up to date (an older one had no telemetry or pop-up settings)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    current = path.read_text() if path.exists() else None
    if current is None or (
        current.startswith(INSTANCE_CONFIG_HEADER) and current != EMBEDDED_INSTANCE_CONFIG
    ):
        path.write_text(EMBEDDED_INSTANCE_CONFIG)
    return path


def prepare_environment() -> None:
    """Pin the embedded defaults in this process and its children: every platform variable
    that is unset gets its default, Dagster's instance lives under the platform home."""
    settings.fill_defaults()
    dagster_home = Path(
        os.environ.setdefault(settings.DAGSTER_HOME_ENV, str(settings.dagster_home()))
    )
    write_instance_config(dagster_home)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """Credit-score MLOps platform (Dagster + CatBoost + MLflow + BentoML)."""
    prepare_environment()


@main.command()
@click.option("--db-url", default=None, help="Feature store URL (default: FEATURE_STORE_URL).")
@click.option(
    "--print-ddl",
    type=click.Choice(["mariadb", "sqlite"]),
    default=None,
    help="Print the DDL of an empty database at the newest migration instead of applying it.",
)
def init(db_url: str | None, print_ddl: str | None) -> None:
    """Create the feature store database and its tables, or upgrade an existing one to the
    newest migration in place (safe to repeat and to run from several processes at once)."""
    if print_ddl:
        click.echo(render_ddl(print_ddl), nl=False)
        return
    from credit_platform.core import migrations

    url = db_url or settings.feature_store_url()
    try:
        engine = init_schema(url)
    except FeatureStoreUnavailable as error:
        fail(str(error))
    try:
        with engine.connect() as connection:
            revision = migrations.current_revision(connection)
    finally:
        engine.dispose()
    click.echo(f"feature store ready: {redacted(url)} (migration {revision})")


@main.command()
@click.option("--write", "mode", flag_value="write", help="Rewrite the files under sql/.")
@click.option("--check", "mode", flag_value="check", default=True, help="Fail if sql/ is stale.")
def sql(mode: str) -> None:
    """Render sql/ from the schema and the feature-target build (the Python is the source)."""
    stale = []
    for path, text in generated_sql_files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if mode == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            click.echo(f"wrote {path.relative_to(settings.REPO_ROOT)}")
        else:
            stale.append(str(path.relative_to(settings.REPO_ROOT)))
    if stale:
        fail(f"stale generated SQL: {', '.join(stale)}; run `credit-platform sql --write`")


def _partition_range(start: str, end: str | None) -> list[str]:
    first = date.fromisoformat(start)
    last = date.fromisoformat(end) if end else first
    if last < first:
        raise click.BadParameter(f"--end {last} is before --partition {first}")
    from credit_platform.defs.partitions import daily_partitions

    partitions = daily_partitions()
    valid_first = date.fromisoformat(partitions.get_first_partition_key())
    valid_last = date.fromisoformat(partitions.get_last_partition_key())
    for day in (first, last):
        if not valid_first <= day <= valid_last:
            fail(
                f"partition {day} is outside the valid range {valid_first} .. {valid_last} "
                f"(from {settings.PARTITIONS_START_ENV} to yesterday, the last complete day)"
            )
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@main.command()
@click.option("--partition", "start", required=True, help="Partition day YYYY-MM-DD.")
@click.option("--end", default=None, help="Last day of a range (inclusive): one run per day.")
@click.option(
    "--grid",
    type=click.Choice(list(settings.TRAINING_GRIDS)),
    default=None,
    help=f"Training grid (default: {settings.TRAINING_GRID_ENV}, else "
    f"{settings.DEFAULT_TRAINING_GRID}, the grid a launch from the UI uses).",
)
def materialize(start: str, end: str | None, grid: str | None) -> None:
    """Run the continuous-training job for one partition or a range, recorded in the
    Dagster instance (DAGSTER_HOME) so the runs show up in the UI."""
    from credit_platform.cli.pipeline_runs import run_training_partitions

    try:
        partitions = _partition_range(start, end)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error
    failures = run_training_partitions(partitions, grid=grid, echo=click.echo)
    if failures:
        fail(f"{len(failures)} partition(s) failed: {', '.join(failures)}")


def _venv_tool(name: str) -> str:
    """A console script installed beside this interpreter (the project's .venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@main.command()
@click.option("--port", default=3001, show_default=True, help="Port of the Dagster UI.")
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port: int, host: str) -> None:
    """Start `dagster dev` (webserver + daemon) on this checkout and the platform's instance."""
    command = [
        _venv_tool("dagster"),
        "dev",
        "-w",
        str(settings.REPO_ROOT / "workspace.yaml"),
        "-p",
        str(port),
        "-h",
        host,
    ]
    click.echo(f"Dagster UI on http://{host}:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    os.chdir(settings.REPO_ROOT)
    os.execvp(command[0], command)


@main.command(name="mlflow-ui")
@click.option(
    "--port",
    default=settings.DEFAULT_MLFLOW_UI_PORT,
    show_default=True,
    help="Port of the MLflow UI.",
)
@click.option("--host", default=settings.DEFAULT_MLFLOW_UI_HOST, show_default=True)
def mlflow_ui(port: int, host: str) -> None:
    """Start the MLflow UI on the platform's tracking store."""
    command = [
        _venv_tool("mlflow"),
        "ui",
        "--backend-store-uri",
        settings.mlflow_tracking_uri(),
        "--host",
        host,
        "--port",
        str(port),
    ]
    click.echo(f"MLflow UI on http://{host}:{port} ({redacted(settings.mlflow_tracking_uri())})")
    os.execvp(command[0], command)


@main.command()
@click.option("--customers", default=200, show_default=True, help="Synthetic customers.")
@click.option("--days", default=35, show_default=True, help="Days of synthetic history.")
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last synthetic day, the partition trained [default: yesterday, UTC].",
)
@click.option(
    "--grid",
    type=click.Choice(list(settings.TRAINING_GRIDS)),
    default="small",
    show_default=True,
    help="Training grid: two trials keep the quick start to about a minute.",
)
def demo(customers: int, days: int, end: datetime | None, grid: str) -> None:
    """Load synthetic data, train the newest partition, serve its model, ask for a prediction."""
    from credit_platform.cli.demo import run_demo
    from credit_platform.cli.seed import yesterday_utc

    last = end.date() if end else yesterday_utc()
    try:
        run_demo(customers=customers, days=days, end=last, grid=grid)
    except (FeatureStoreUnavailable, RuntimeError) as error:
        fail(str(error))


@main.command()
@click.option("--port", default=settings.DEFAULT_API_PORT, show_default=True)
def stop(port: int) -> None:
    """Stop a prediction service that a deploy or the demo started in the background."""
    from credit_platform.core.local_service import stop_service

    if stop_service(port):
        click.echo(f"stopped the prediction service on port {port}")
    else:
        click.echo(f"no background prediction service recorded for port {port}")


def _register_subcommands() -> None:
    from credit_platform.cli.challenger import challenger
    from credit_platform.cli.db import db
    from credit_platform.cli.rollback import rollback
    from credit_platform.cli.seed import seed
    from credit_platform.cli.serve import serve
    from credit_platform.cli.simulate import simulate

    main.add_command(challenger)
    main.add_command(db)
    main.add_command(rollback)
    main.add_command(seed)
    main.add_command(serve)
    main.add_command(simulate)


_register_subcommands()

if __name__ == "__main__":
    main()
