"""`credit-platform seed ...`: fill the feature store from synthetic data or a Kaggle CSV.

Both commands create missing tables first, print the load summary, and turn every expected
failure (unreadable CSV, wrong columns, a ragged line, unreachable database, a load that
keeps no row) into one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError

from credit_platform.core import settings
from credit_platform.core.db import FeatureStoreUnavailable, init_schema, redacted
from credit_platform.ingest.kaggle import DEFAULT_READ_CHUNK_ROWS
from credit_platform.ingest.synthetic import DRIFT_CHOICES
from credit_platform.ingest.writer import IngestError, IngestSummary, IngestWriteError

DB_URL_HELP = "Feature store URL (default: FEATURE_STORE_URL or the embedded SQLite file)."


def _run_load(db_url: str | None, load: Callable) -> None:
    """Open the store (creating missing tables), run `load(engine)`, print its summary."""
    url = db_url or settings.feature_store_url()
    engine = None
    try:
        engine = init_schema(url)
        summary: IngestSummary = load(engine)
    except (FeatureStoreUnavailable, IngestError, IngestWriteError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    except SQLAlchemyError as error:
        reason = getattr(error, "orig", None) or error
        click.echo(f"error: the feature store at {redacted(url)} failed: {reason}", err=True)
        sys.exit(1)
    finally:
        if engine is not None:
            engine.dispose()
    click.echo(f"feature store: {redacted(url)}")
    click.echo(summary.render())
    if summary.rows_kept == 0:
        reasons = ", ".join(
            f"{reason}: {n:,}" for reason, n in sorted(summary.rows_dropped.items())
        )
        click.echo(
            f"error: no row could be stored ({summary.rows_read:,} read"
            + (f"; dropped by reason: {reasons}" if reasons else "")
            + "); nothing was loaded",
            err=True,
        )
        sys.exit(1)


def yesterday_utc() -> date:
    """The newest complete day (UTC), and so the newest daily partition."""
    return datetime.now(UTC).date() - timedelta(days=1)


def synthetic_start(days: int, start: date | None, end: date | None) -> date:
    """The first day: --start as given, else counted back from --end (default yesterday)."""
    if start is not None and end is not None:
        raise click.UsageError("give --start or --end, not both")
    if start is not None:
        return start
    return (end or yesterday_utc()) - timedelta(days=days - 1)


@click.group()
def seed() -> None:
    """Load source data (labels, features, customer info) into the feature store."""


@seed.command("synthetic")
@click.option("--customers", type=click.IntRange(min=1), required=True, help="Customers.")
@click.option("--days", type=click.IntRange(min=1), required=True, help="Days of data.")
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day, YYYY-MM-DD.",
)
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last day, YYYY-MM-DD, when --start is not given [default: yesterday, UTC].",
)
@click.option("--seed", "seed_value", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--drift-from",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day of a drift (rows before it are as without one).",
)
@click.option(
    "--drift-kind",
    type=click.Choice(DRIFT_CHOICES),
    default="income",
    show_default=True,
    help="What drifts from --drift-from on (see `credit-platform simulate`).",
)
@click.option("--db-url", default=None, help=DB_URL_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synthetic_command(
    customers: int,
    days: int,
    start: datetime | None,
    end: datetime | None,
    seed_value: int,
    drift_from: datetime | None,
    drift_kind: str,
    db_url: str | None,
    quiet: bool,
) -> None:
    """Generate CUSTOMERS x DAYS seeded rows (one per customer per day) and store them.

    The days end yesterday (UTC) unless --start or --end says otherwise. Rerunning writes
    nothing new; a longer run adds only the missing days.
    """
    from credit_platform.ingest.synthetic import Drift, seed_synthetic

    first = synthetic_start(days, start.date() if start else None, end.date() if end else None)
    drift = Drift(drift_kind, drift_from.date()) if drift_from else None

    _run_load(
        db_url,
        lambda engine: seed_synthetic(
            engine,
            customers=customers,
            days=days,
            start=first,
            seed=seed_value,
            progress=not quiet,
            drift=drift,
        ),
    )


@seed.command("kaggle")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--year", type=int, default=2025, show_default=True, help="Year for the months.")
@click.option("--db-url", default=None, help=DB_URL_HELP)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_READ_CHUNK_ROWS,
    show_default=True,
    help="Rows read, cleaned and written at a time (one transaction); bounds memory.",
)
def kaggle_command(path: Path, year: int, db_url: str | None, quiet: bool, chunk_rows: int) -> None:
    """Clean and store a Kaggle "Credit score classification" CSV (raw or partly cleaned).

    The file is streamed in chunks, with progress on stderr; a ragged line (a field too
    many or too few) is refused by its line number before anything is stored. Rows are
    spread over the days of their month in YEAR; a reload writes nothing new.
    """
    from credit_platform.ingest.kaggle import load_kaggle_csv

    _run_load(
        db_url,
        lambda engine: load_kaggle_csv(
            path, engine, year=year, progress=not quiet, chunk_rows=chunk_rows
        ),
    )
