"""The desired-model record and the replicas' reports, in the feature-store database.

Several replicas of the prediction service share one database but no disk and no process.
A reload received by any replica is written here (`credit_api_desired_model`); every
replica polls that row and swaps to what it names, and reports what it serves in
`credit_api_replicas` (its heartbeat). A deploy reads the reports to wait until every live
replica serves the new model.

Times are the database's own clock (read in the same statement's connection), so replicas on
hosts whose clocks disagree still agree on how old a heartbeat is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, Engine

from credit_platform.core.db import create_tables, is_mariadb
from credit_platform.core.schema import (
    MODEL_TAG_LENGTH,
    credit_api_desired_model,
    credit_api_replicas,
)

# The service whose replicas follow the record (the key of its one row).
PREDICTION_SERVICE = "credit_score_service"
# A replica is live while its last heartbeat is younger than this many of its own poll
# intervals (a replica busy loading a model still heartbeats from another thread).
LIVE_POLL_INTERVALS = 5
# Rows of replicas silent this long are deleted (a replica killed without its shutdown).
FORGET_REPLICA_SECONDS = 24 * 3600
PROBLEM_LENGTH = 1000


@dataclass(frozen=True)
class DesiredModel:
    """What every replica must serve."""

    model_tag: str
    challenger: dict[str, Any] | None  # {"tag", "role", "share"}; None: no challenger
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class ReplicaState:
    """What one replica reports about itself."""

    replica_id: str
    hostname: str
    bento_tag: str | None
    model_tag: str  # the model every worker of the replica serves
    challenger: dict[str, Any] | None
    desired_tag: str | None  # the record's model as the replica last read it
    problem: str | None  # why it does not serve the record (None: it does, or is on its way)
    poll_seconds: float
    stale_seconds: float


@dataclass(frozen=True)
class ReplicaReport:
    """A replica's last report, with the age of its heartbeat by the database's clock."""

    state: ReplicaState
    started_at: datetime
    heartbeat_age_seconds: float

    @property
    def live(self) -> bool:
        return self.heartbeat_age_seconds <= LIVE_POLL_INTERVALS * self.state.poll_seconds

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "replica": state.replica_id,
            "hostname": state.hostname,
            "model_tag": state.model_tag,
            "challenger": state.challenger,
            "bento_tag": state.bento_tag,
            "problem": state.problem,
            "live": self.live,
            "heartbeat_age_seconds": round(self.heartbeat_age_seconds, 1),
        }


def database_now(connection: Connection) -> datetime:
    """The database's clock, naive, to microseconds on MariaDB and milliseconds on SQLite."""
    if is_mariadb(connection.dialect.name):
        return connection.execute(text("SELECT NOW(6)")).scalar_one()
    value = connection.execute(text("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    return datetime.fromisoformat(value)


def create_record_tables(engine: Engine) -> None:
    """Create the two tables when missing (a store made before they existed): the store is
    migrated to the newest revision, as `credit-platform init` does."""
    create_tables(engine)


def _upsert(connection: Connection, table, row: Mapping[str, Any], update: list[str]) -> None:
    """Insert `row`, or update the `update` columns of the row with its key (nothing when
    `update` is empty)."""
    if is_mariadb(connection.dialect.name):
        statement = mysql.insert(table).values(**row)
        if update:
            statement = statement.on_duplicate_key_update(
                {name: statement.inserted[name] for name in update}
            )
        else:
            statement = statement.prefix_with("IGNORE")
    else:
        statement = sqlite.insert(table).values(**row)
        keys = [column.name for column in table.primary_key]
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=keys, set_={name: statement.excluded[name] for name in update}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
    connection.execute(statement)


def _desired_row(connection: Connection, model_tag: str, by: str, challenger=None) -> dict:
    return {
        "service": PREDICTION_SERVICE,
        "model_tag": model_tag[:MODEL_TAG_LENGTH],
        "challenger": challenger,
        "updated_by": by,
        "updated_at": database_now(connection),
    }


def read_desired(engine: Engine) -> DesiredModel | None:
    """The record, or None before any replica or reload wrote one."""
    with engine.connect() as connection:
        row = connection.execute(
            select(credit_api_desired_model).where(
                credit_api_desired_model.c.service == PREDICTION_SERVICE
            )
        ).first()
    if row is None:
        return None
    return DesiredModel(row.model_tag, row.challenger, row.updated_by, row.updated_at)


def publish_model(engine: Engine, model_tag: str, by: str) -> None:
    """Make `model_tag` the model every replica serves (its challenger, if any, stays)."""
    with engine.begin() as connection:
        row = _desired_row(connection, model_tag, by)
        _upsert(
            connection, credit_api_desired_model, row, ["model_tag", "updated_by", "updated_at"]
        )


def publish_model_if_absent(engine: Engine, model_tag: str, by: str) -> None:
    """The first replica's model becomes the record; an existing record is left alone."""
    with engine.begin() as connection:
        _upsert(connection, credit_api_desired_model, _desired_row(connection, model_tag, by), [])


def publish_challenger(
    engine: Engine, challenger: dict[str, Any] | None, champion_tag: str, by: str
) -> None:
    """Make `challenger` (None: none) every replica's shadow or canary. The champion is
    written only when there is no record yet: a replica behind on it must not set it back."""
    with engine.begin() as connection:
        row = _desired_row(connection, champion_tag, by, challenger)
        _upsert(
            connection, credit_api_desired_model, row, ["challenger", "updated_by", "updated_at"]
        )


def heartbeat(engine: Engine, state: ReplicaState) -> None:
    """Write the replica's report with the database's time (its start time only once)."""
    with engine.begin() as connection:
        now = database_now(connection)
        row = {
            "replica_id": state.replica_id,
            "hostname": state.hostname,
            "bento_tag": state.bento_tag,
            "model_tag": state.model_tag,
            "challenger": state.challenger,
            "desired_tag": state.desired_tag,
            "problem": state.problem[:PROBLEM_LENGTH] if state.problem else None,
            "poll_seconds": state.poll_seconds,
            "stale_seconds": state.stale_seconds,
            "started_at": now,
            "heartbeat_at": now,
        }
        _upsert(connection, credit_api_replicas, row, [k for k in row if k != "started_at"])


def replicas(engine: Engine) -> list[ReplicaReport]:
    """Every reported replica (live or not), oldest start first."""
    table = credit_api_replicas
    with engine.connect() as connection:
        now = database_now(connection)
        rows = connection.execute(
            select(table).order_by(table.c.started_at, table.c.replica_id)
        ).all()
    return [
        ReplicaReport(
            ReplicaState(
                replica_id=row.replica_id,
                hostname=row.hostname,
                bento_tag=row.bento_tag,
                model_tag=row.model_tag,
                challenger=row.challenger,
                desired_tag=row.desired_tag,
                problem=row.problem,
                poll_seconds=row.poll_seconds,
                stale_seconds=row.stale_seconds,
            ),
            started_at=row.started_at,
            heartbeat_age_seconds=(now - row.heartbeat_at).total_seconds(),
        )
        for row in rows
    ]


def forget_replica(engine: Engine, replica_id: str) -> None:
    """Remove a stopping replica's row, so no deploy waits for it."""
    with engine.begin() as connection:
        connection.execute(
            delete(credit_api_replicas).where(credit_api_replicas.c.replica_id == replica_id)
        )


def forget_silent_replicas(engine: Engine, older_than_seconds: float = FORGET_REPLICA_SECONDS):
    """Remove the rows of replicas that stopped without saying so, long ago."""
    with engine.begin() as connection:
        cutoff = database_now(connection) - timedelta(seconds=older_than_seconds)
        connection.execute(
            delete(credit_api_replicas).where(credit_api_replicas.c.heartbeat_at < cutoff)
        )


class ReplicasBehind(RuntimeError):
    """Live replicas still serve another model when the wait ends."""

    def __init__(self, message: str, reports: list[ReplicaReport]) -> None:
        super().__init__(message)
        self.reports = reports


def wait_for_replicas(
    engine: Engine, model_tag: str, timeout_seconds: float, interval: float = 0.25
) -> list[ReplicaReport]:
    """Wait until every live replica reports `model_tag`; returns every replica's report.
    Raises ReplicasBehind naming each live replica that does not, with its reason."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        reports = replicas(engine)
        behind = [r for r in reports if r.live and r.state.model_tag != model_tag]
        if not behind:
            return reports
        if time.monotonic() > deadline:
            named = "; ".join(
                f"{r.state.replica_id} serves {r.state.model_tag}"
                + (f" ({r.state.problem})" if r.state.problem else "")
                for r in behind
            )
            raise ReplicasBehind(
                f"after {timeout_seconds:.0f}s, {len(behind)} of "
                f"{sum(r.live for r in reports)} live replicas do not serve {model_tag}: {named}",
                reports,
            )
        time.sleep(interval)
