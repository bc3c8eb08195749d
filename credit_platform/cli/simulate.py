"""`credit-platform simulate`: replay days of live traffic through the running service.

The days end today; their labels arrive a day late, and a drift may begin on a chosen day.

Each simulated day D, in order:

1. the labels of D - 1 arrive (written to `credit_score`, dated D - 1): so monitoring sees a
   day's predictions first and its labels only once the simulation has moved on;
2. the features of D are written (`credit_score_features`, `customer_info`), as the
   source systems would, so batch scoring can score D;
3. every feature row of D is sent to `/predict_batch` in chunks, each with its own
   X-Request-ID naming the seed, the day and the chunk (`core.simulation_ids`);
4. the log rows of those requests are dated D (12:00 UTC): the service stamps a row with
   the wall clock, and a simulation replays days within minutes, so without this every
   simulated day would land on today in monitoring. Only rows whose ids this simulation
   sent are touched; rows still in the service's spool (database down) keep their time.
   When the service runs a shadow, whose rows are logged after the answers, the dating
   waits (a bounded time) for the shadow's rows of the day too.

The labels of the last day are not written: their day has not come. Rows come from the
seeded synthetic generator (`ingest.synthetic`), with its drift knob from the chosen day.
Writes are insert-if-absent and ids repeat, so running the same simulation again adds
nothing and the service answers its requests from the log; a different drift on the same
seed's days changes request bodies, which the service refuses (409): use another seed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import click
import numpy as np
import pandas as pd
import requests
from sqlalchemy.engine import Engine

from credit_platform.core import routes, settings
from credit_platform.core.db import FeatureStoreUnavailable, init_schema, redacted
from credit_platform.core.features import LABELS, MODEL_FEATURES
from credit_platform.core.schema import (
    SHADOW_ROW_SUFFIX,
    credit_predictions_api_log,
    credit_score,
    credit_score_features,
    customer_info,
)
from credit_platform.core.simulation_ids import day_id_range, simulation_request_id
from credit_platform.ingest.cleaning import CleaningLog
from credit_platform.ingest.synthetic import (
    DRIFT_CHOICES,
    Drift,
    customer_profiles,
    synthetic_days,
)
from credit_platform.ingest.writer import IngestError, SourceWriter

DEFAULT_DAYS = 7
DEFAULT_CUSTOMERS = 200
# Not the demo's seed (0): the simulated customers are new rows, never the demo's days.
DEFAULT_SEED = 1
DEFAULT_CHUNK_ROWS = 500
REQUEST_TIMEOUT_SECONDS = 60.0


class SimulationError(RuntimeError):
    """The simulation could not go on (the API refused or did not answer a request)."""


@dataclass
class SimulatedDay:
    """What one simulated day sent and wrote."""

    day: date
    drifted: bool
    feature_rows: int = 0
    features_written: int = 0
    requests: int = 0
    rows_sent: int = 0
    predictions: Counter = field(default_factory=Counter)
    labels_day: date | None = None
    labels_written: int = 0
    log_rows_dated: int = 0
    request_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        mix = ", ".join(f"{label} {self.predictions.get(label, 0)}" for label in LABELS)
        labels = (
            f"labels of {self.labels_day}: {self.labels_written} written"
            if self.labels_day
            else "no labels due yet"
        )
        return (
            f"{self.day}{' (drift)' if self.drifted else ''}: features {self.feature_rows} "
            f"({self.features_written} new), sent {self.rows_sent} rows in {self.requests} "
            f"request(s) [{mix}], {self.log_rows_dated} log rows dated {self.day}; {labels}"
        )


def simulated_days(days: int, end: date) -> list[date]:
    """`days` consecutive days ending on `end`."""
    if days < 1:
        raise click.BadParameter(f"--days must be at least 1, got {days}")
    return [end - timedelta(days=days - 1 - offset) for offset in range(days)]


def drift_start(value: str | None, days: list[date]) -> date | None:
    """--drift-from as a day: an offset into the simulated days (0 is the first) or a date
    YYYY-MM-DD inside them."""
    if value is None:
        return None
    try:
        offset = int(value)
    except ValueError:
        try:
            start = date.fromisoformat(value)
        except ValueError as error:
            raise click.BadParameter(
                f"--drift-from must be a day offset (0..{len(days) - 1}) or a date "
                f"YYYY-MM-DD, not {value!r}"
            ) from error
        if not days[0] <= start <= days[-1]:
            raise click.BadParameter(
                f"--drift-from {start} is outside the simulated days {days[0]} .. {days[-1]}"
            ) from None
        return start
    if not 0 <= offset < len(days):
        raise click.BadParameter(
            f"--drift-from offset {offset} is outside the {len(days)} simulated days "
            f"(0..{len(days) - 1})"
        )
    return days[offset]


def _plain(value):
    """A JSON value: None for every kind of missing (None, NaN, pandas NA), numpy scalars
    as Python numbers."""
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def request_rows(features: pd.DataFrame) -> list[dict]:
    """The API's request rows (customer_id and the model features, null when missing)."""
    columns = ["customer_id", *MODEL_FEATURES]
    return [
        {name: _plain(value) for name, value in zip(columns, values, strict=True)}
        for values in features[columns].itertuples(index=False, name=None)
    ]


def _post(session: requests.Session, url: str, request_id: str, rows: list[dict]):
    body = json.dumps({"data": rows})
    headers = {"Content-Type": "application/json", routes.REQUEST_ID_HEADER: request_id}
    try:
        try:
            return session.post(url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
        except requests.ConnectionError:
            # A keep-alive connection closed as the request went out: send it once more
            # under the same id (the service answers a repeat from its log).
            return session.post(url, data=body, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        raise SimulationError(f"{url} did not answer request {request_id}: {error}") from error


def send_day(
    api_url: str, seed: int, day: date, rows: list[dict], chunk_rows: int, report: SimulatedDay
) -> None:
    """Send the day's rows to /predict_batch, `chunk_rows` per request."""
    url = f"{api_url.rstrip('/')}{routes.PREDICT_BATCH}"
    with requests.Session() as session:
        for chunk, start in enumerate(range(0, len(rows), chunk_rows)):
            part = rows[start : start + chunk_rows]
            request_id = simulation_request_id(seed, day, chunk)
            response = _post(session, url, request_id, part)
            if response.status_code != 200:
                hint = (
                    " (these ids were sent before with other bodies: an earlier simulation of "
                    "this seed with another drift; use another --seed)"
                    if response.status_code == 409
                    else ""
                )
                raise SimulationError(
                    f"{url} answered request {request_id} of {day} with HTTP "
                    f"{response.status_code}{hint}: {response.text[:300]}"
                )
            answers = response.json()
            if len(answers) != len(part):
                raise SimulationError(
                    f"{url} answered {len(answers)} rows for the {len(part)} of {request_id}"
                )
            report.requests += 1
            report.rows_sent += len(part)
            report.request_ids.append(request_id)
            report.predictions.update(answer["predict"] for answer in answers)


SHADOW_WAIT_SECONDS = 60.0


def runs_a_shadow(api_url: str) -> bool:
    """Whether the service at `api_url` reports a shadow model (GET /metadata)."""
    try:
        body = requests.get(f"{api_url.rstrip('/')}{routes.METADATA}", timeout=10).json()
    except (requests.RequestException, ValueError):
        return False
    return ((body or {}).get("challenger") or {}).get("role") == "shadow"


def _undated_rows(engine: Engine, low: str, high: str, stamp: datetime) -> tuple[int, int]:
    """(answers, shadow rows) among the rows in [low, high) not yet dated `stamp`."""
    from sqlalchemy import func, select

    log = credit_predictions_api_log
    shadow = log.c.request_id.like(f"%{SHADOW_ROW_SUFFIX}")
    with engine.connect() as connection:
        counts = dict(
            connection.execute(
                select(shadow, func.count())
                .where(
                    log.c.request_id >= low,
                    log.c.request_id < high,
                    log.c.created_at != stamp,
                )
                .group_by(shadow)
            ).all()
        )
    return int(counts.get(False, 0)), int(counts.get(True, 0))  # False == 0, True == 1


def date_logged_rows(engine: Engine, seed: int, day: date, *, shadow: bool = False) -> int:
    """Date the log rows of simulated day `day` (this seed's ids) at 12:00 UTC that day;
    with a shadow, first wait (at most SHADOW_WAIT_SECONDS) until each newly answered row
    has its shadow row. Returns how many rows were dated."""
    import time

    from sqlalchemy import update

    low, high = day_id_range(seed, day)
    stamp = datetime(day.year, day.month, day.day, 12)
    deadline = time.monotonic() + SHADOW_WAIT_SECONDS
    while shadow and time.monotonic() < deadline:
        answers, shadowed = _undated_rows(engine, low, high, stamp)
        if shadowed >= answers:
            break
        time.sleep(0.2)  # past the deadline, the shadow's late rows keep the wall clock
    log = credit_predictions_api_log
    with engine.begin() as connection:
        result = connection.execute(
            update(log)
            .where(log.c.request_id >= low, log.c.request_id < high)
            .values(created_at=stamp)
        )
    return int(result.rowcount or 0)


def _write(engine: Engine, frames, tables) -> dict[str, int]:
    with SourceWriter(engine, progress=False, tables=tables) as writer:
        writer.write(frames)
    return writer.written


def run_simulation(
    engine: Engine,
    api_url: str,
    *,
    customers: int = DEFAULT_CUSTOMERS,
    days: int = DEFAULT_DAYS,
    end: date | None = None,
    seed: int = DEFAULT_SEED,
    drift: Drift | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    echo: Callable[[str], None] = print,
    after_day: Callable[[SimulatedDay], None] | None = None,
) -> list[SimulatedDay]:
    """Simulate `days` days ending on `end` (default today, UTC) for `customers` seeded
    customers: per day, write the previous day's labels, write the day's features, and send
    its rows through the API at `api_url`. `after_day` runs after each day (a test or a
    loop may materialize assets there). Returns what each day sent and wrote."""
    if chunk_rows < 1:
        raise IngestError(f"chunk_rows must be at least 1, got {chunk_rows}")
    calendar = simulated_days(days, end or datetime.now(UTC).date())
    profiles = customer_profiles(np.arange(1, customers + 1), seed)
    reports: list[SimulatedDay] = []
    pending = None  # the previous day's frames, whose labels arrive today
    for day in calendar:
        report = SimulatedDay(day=day, drifted=drift is not None and day >= drift.start)
        if pending is not None:
            previous_day, previous = pending
            report.labels_day = previous_day
            report.labels_written = _write(engine, previous, (credit_score,))[credit_score.name]
        frames, _ = synthetic_days(profiles, [day], seed, CleaningLog(), drift)
        written = _write(engine, frames, (customer_info, credit_score_features))
        report.feature_rows = len(frames)
        report.features_written = written[credit_score_features.name]
        send_day(api_url, seed, day, request_rows(frames.credit_score_features), chunk_rows, report)
        report.log_rows_dated = date_logged_rows(engine, seed, day, shadow=runs_a_shadow(api_url))
        pending = (day, frames)
        reports.append(report)
        echo(report.describe())
        if after_day is not None:
            after_day(report)
    echo(f"labels of {calendar[-1]} are due tomorrow and were not written")
    return reports


@click.command()
@click.option("--days", type=click.IntRange(min=1), default=DEFAULT_DAYS, show_default=True)
@click.option(
    "--customers", type=click.IntRange(min=1), default=DEFAULT_CUSTOMERS, show_default=True
)
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Last simulated day [default: today, UTC].",
)
@click.option(
    "--drift-from",
    default=None,
    help="First drifted day: an offset into the simulated days (0 is the first) or a date.",
)
@click.option(
    "--drift-kind",
    type=click.Choice(DRIFT_CHOICES),
    default=None,
    help="What drifts (needs --drift-from): income falls, a new occupation mix, or a "
    "label rule that gives worse labels to the same features; kinds combine with '+' "
    "(income+label_rule).  [default: income]",
)
@click.option(
    "--seed",
    "seed_value",
    type=click.IntRange(min=0),
    default=DEFAULT_SEED,
    show_default=True,
    help="Seed of the simulated customers (the demo's is 0).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK_ROWS,
    show_default=True,
    help="Rows per /predict_batch request.",
)
@click.option("--api-url", default=None, help="Prediction API [default: CREDIT_API_URL].")
@click.option("--db-url", default=None, help="Feature store [default: FEATURE_STORE_URL].")
def simulate(
    days: int,
    customers: int,
    end: datetime | None,
    drift_from: str | None,
    drift_kind: str | None,
    seed_value: int,
    chunk_rows: int,
    api_url: str | None,
    db_url: str | None,
) -> None:
    """Simulate live days ending today through the running prediction API: each day's
    features are written and sent, its labels written the next simulated day; optionally
    drift from a chosen day on."""
    calendar = simulated_days(days, end.date() if end else datetime.now(UTC).date())
    if drift_kind is not None and drift_from is None:
        raise click.UsageError("--drift-kind needs --drift-from (the first drifted day)")
    start = drift_start(drift_from, calendar)
    drift = Drift(drift_kind or "income", start) if start is not None else None
    url = db_url or settings.feature_store_url()
    api = (api_url or settings.api_url()).rstrip("/")
    click.echo(
        f"simulating {customers} customers x {days} days ({calendar[0]} .. {calendar[-1]}), "
        f"seed {seed_value}, {drift.describe() if drift else 'no drift'}; API {api}, feature "
        f"store {redacted(url)}"
    )
    engine = None
    try:
        engine = init_schema(url)
        run_simulation(
            engine,
            api,
            customers=customers,
            days=days,
            end=calendar[-1],
            seed=seed_value,
            drift=drift,
            chunk_rows=chunk_rows,
            echo=click.echo,
        )
    except (FeatureStoreUnavailable, IngestError, SimulationError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    finally:
        if engine is not None:
            engine.dispose()
